"""`ModelServicer`: read-only ModelService over the registry (models are global)."""

from __future__ import annotations

import asyncio

from jobmesh.models.v1 import model_service_pb2 as pb
from jobmesh.models.v1 import model_service_pb2_grpc

from shared.errors import InvalidArgument, NotFound
from shared.jobs.convert import ts
from shared.models.registry import Manifest, check_name
from shared.server.interceptors import current_principal


def _version_pb(m: Manifest) -> pb.ModelVersion:
    return pb.ModelVersion(
        version=m.version, runtime=m.runtime,
        files=[pb.ModelFile(path=f.path, sha256=f.sha256, size=f.size) for f in m.files],
        inputs=[pb.TensorSpec(**t) for t in m.inputs],
        outputs=[pb.TensorSpec(**t) for t in m.outputs],
        provenance=pb.Provenance(
            package=m.provenance.get("package", ""),
            package_version=m.provenance.get("package_version", ""),
            source=m.provenance.get("source", ""),
            parent_version=m.provenance.get("parent_version", "")),
        create_time=ts(m.create_time))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, gw):
        self.registry = gw.registry

    def _model(self, name: str) -> pb.Model:
        versions = self.registry.versions(name)
        if not versions:
            raise NotFound(f"model {name} not found", metadata={"model": name})
        try:
            serving = self.registry.serving_version(name)
        except NotFound:
            serving = ""
        return pb.Model(name=name, serving_version=serving,
                        versions=[_version_pb(m) for m in versions])

    async def ListModels(self, request, context):
        current_principal()
        if request.page_size < 0:
            raise InvalidArgument.for_field("page_size", "must not be negative")
        names = await asyncio.to_thread(self.registry.names)
        start = int(request.page_token) if request.page_token.isdigit() else 0
        size = request.page_size or 100
        page = names[start:start + size]
        models = [await asyncio.to_thread(self._model, n) for n in page]
        token = str(start + size) if start + size < len(names) else ""
        return pb.ListModelsResponse(models=models, next_page_token=token)

    async def GetModel(self, request, context):
        current_principal()
        name = check_name("name", request.name.removeprefix("models/"))
        return pb.GetModelResponse(model=await asyncio.to_thread(self._model, name))
