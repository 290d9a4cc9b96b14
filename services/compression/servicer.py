"""CompressionService: thin. Check the caller and the model, queue the job, report recipes."""

from __future__ import annotations

import asyncio
import json

from jobmesh.compression.v1 import compression_service_pb2 as pb
from jobmesh.compression.v1 import compression_service_pb2_grpc

from services.compression import convert
from shared.errors import InvalidArgument, NotFound
from shared.jobs.convert import job_to_pb, register_result
from shared.server.inputs import checked_ref
from shared.server.interceptors import current_principal, require_admin
from shared.storage.artifacts import ArtifactRef

DOMAIN = "compression"
CAPABILITIES_KEY = "jobmesh:capabilities:compression"  # workers write their ORT providers here
ADAPTER_RUNTIME = "peft-lora"  # workers/compression/adapters.py (gateways never import workers)

register_result(convert.COMPRESS_TASK, convert.result_from_dict)


class CompressionServicer(compression_service_pb2_grpc.CompressionServiceServicer):
    def __init__(self, gw):
        self.gw = gw

    async def SubmitCompress(self, request, context):
        p = require_admin()
        req = convert.submit_request(request)
        runtime = await asyncio.to_thread(self._check_model, req["model"], req["version"])
        recipe = req["recipe"]
        if (runtime == ADAPTER_RUNTIME) != (recipe["name"] in convert.ADAPTER_RECIPES):
            raise InvalidArgument.for_field(
                "recipe", f"{recipe['name']} does not apply to {req['model']} (runtime "
                f"{runtime}): adapters take {', '.join(convert.ADAPTER_RECIPES)}, ONNX models "
                "the others")
        if "validation_ref" in recipe:
            field = "recipe.compeft.validation_ref"
            r = recipe["validation_ref"]
            ref = await checked_ref(self.gw, ArtifactRef(r["bucket"], r["key"], r["sha256"]),
                                    p.tenant, field)
            recipe["validation_ref"] = {"bucket": ref.bucket, "key": ref.key,
                                        "sha256": ref.sha256}
        job, _ = await self.gw.dispatcher.submit(
            tenant=p.tenant, domain=DOMAIN, task=convert.COMPRESS_TASK, request=req,
            request_id=request.request_id)
        return pb.SubmitCompressResponse(job=job_to_pb(job))

    def _check_model(self, name: str, version: str) -> str:
        """NOT_FOUND now rather than a failed job later; returns the version's runtime."""
        registry = self.gw.registry
        version = version or registry.serving_version(name)
        try:
            return registry.manifest(name, version).runtime
        except NotFound as exc:
            raise NotFound(f"model {name}@{version} not found",
                           metadata={"model": name, "version": version}) from exc

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
