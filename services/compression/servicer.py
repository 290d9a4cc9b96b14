"""CompressionService: thin. Check the caller and the model, queue the job, report recipes."""

from __future__ import annotations

import asyncio
import json

from jobmesh.compression.v1 import compression_service_pb2 as pb
from jobmesh.compression.v1 import compression_service_pb2_grpc

from services.compression import convert
from shared.errors import NotFound
from shared.jobs.convert import job_to_pb, register_result
from shared.server.interceptors import current_principal, require_admin

DOMAIN = "compression"
CAPABILITIES_KEY = "jobmesh:capabilities:compression"  # workers write their ORT providers here

register_result(convert.COMPRESS_TASK, convert.result_from_dict)


class CompressionServicer(compression_service_pb2_grpc.CompressionServiceServicer):
    def __init__(self, gw):
        self.gw = gw

    async def SubmitCompress(self, request, context):
        p = require_admin()
        req = convert.submit_request(request)
        await asyncio.to_thread(self._check_model, req["model"], req["version"])
        job, _ = await self.gw.dispatcher.submit(
            tenant=p.tenant, domain=DOMAIN, task=convert.COMPRESS_TASK, request=req,
            request_id=request.request_id)
        return pb.SubmitCompressResponse(job=job_to_pb(job))

    def _check_model(self, name: str, version: str) -> None:
        """NOT_FOUND now rather than a failed job later."""
        registry = self.gw.registry
        if version:
            try:
                registry.manifest(name, version)
            except NotFound as exc:
                raise NotFound(f"model {name}@{version} not found",
                               metadata={"model": name, "version": version}) from exc
        else:
            registry.serving_version(name)

    async def ListRecipes(self, request, context):
        current_principal()
        providers: set[str] = set()
        for raw in (await self.gw.redis.hgetall(CAPABILITIES_KEY)).values():
            providers.update(json.loads(raw))
        recipes = []
        for name, description in convert.RECIPES.items():
            available, reason = True, ""
            if name == "tensorrt" and "TensorrtExecutionProvider" not in providers:
                available = False
                reason = ("no compression worker has ONNX Runtime's TensorRT execution provider "
                          f"(workers report: {', '.join(sorted(providers)) or 'none live'})")
            recipes.append(pb.RecipeInfo(name=name, description=description,
                                         available=available, reason=reason))
        return pb.ListRecipesResponse(recipes=recipes)
