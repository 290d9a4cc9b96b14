"""`ModelServicer`: ModelService over the registry. Models are global: every key may read them;
registering files and moving the `serving` pointer (promote, rollback) need an admin key."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from jobmesh.models.v1 import model_service_pb2 as pb
from jobmesh.models.v1 import model_service_pb2_grpc

from shared.errors import InvalidArgument, NotFound
from shared.jobs.convert import artifact_pb, ts
from shared.models.registry import Manifest, check_name
from shared.server.inputs import checked_ref, create_upload
from shared.server.interceptors import current_principal, require_admin
from shared.storage.artifacts import ArtifactRef

log = logging.getLogger(__name__)

MODEL_FILE_TYPE = "application/octet-stream"
MAX_FILES = 32


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
            parent_version=m.provenance.get("parent_version", ""),
            base_model=m.provenance.get("base_model", "")),
        create_time=ts(m.create_time))


def _file_path(n: int, path: str) -> str:
    """A version-relative file path: no absolute paths, no `..`, no empty parts."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or \
            len(path) > 200:
        raise InvalidArgument.for_field(f"files[{n}].path",
                                        f"{path!r} must be a relative path without '..'")
    return path


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, gw):
        self.gw = gw
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
                        versions=[_version_pb(m) for m in versions],
                        serving_history=self.registry.serving_history(name))

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

    async def CreateModelUpload(self, request, context):
        p = require_admin()
        ref, url, expires = await create_upload(self.gw, p.tenant, MODEL_FILE_TYPE,
                                                request.size, (MODEL_FILE_TYPE,))
        return pb.CreateModelUploadResponse(ref=artifact_pb(ref.to_dict()), upload_url=url,
                                            expire_time=ts(expires))

    async def RegisterModel(self, request, context):
        p = require_admin()
        name = check_name("name", request.name)
        version = check_name("version", request.version)
        if not request.files:
            raise InvalidArgument.for_field("files", "needs at least one file")
        if len(request.files) > MAX_FILES:
            raise InvalidArgument.for_field("files", f"at most {MAX_FILES} files")
        sources: dict[str, ArtifactRef] = {}
        for n, f in enumerate(request.files):
            path = _file_path(n, f.path)
            if path in sources:
                raise InvalidArgument.for_field(f"files[{n}].path", f"{path!r} appears twice")
            if not f.source.bucket or not f.source.key:
                raise InvalidArgument.for_field(f"files[{n}].source", "needs bucket and key")
            ref = ArtifactRef(f.source.bucket, f.source.key, f.source.sha256)
            sources[path] = await checked_ref(self.gw, ref, p.tenant, f"files[{n}].source")
        provenance = {k: getattr(request.provenance, k) for k in
                      ("package", "package_version", "source", "parent_version", "base_model")
                      if getattr(request.provenance, k)}
        await asyncio.to_thread(self._register, name, version, sources, provenance,
                                request.serve)
        log.info("model registered", extra={"model": name, "version": version,
                                             "tenant": p.tenant})
        return pb.RegisterModelResponse(model=await asyncio.to_thread(self._model, name))

    def _register(self, name: str, version: str, sources: dict[str, ArtifactRef],
                  provenance: dict, serve: bool) -> None:
        # Through local files: the registry hashes what it stores, so the manifest's sha256
        # values are computed here, not taken from the caller.
        with tempfile.TemporaryDirectory(prefix="jobmesh-register-") as tmp:
            files = {}
            for path, ref in sources.items():
                local = Path(tmp) / path
                local.parent.mkdir(parents=True, exist_ok=True)
                self.gw.artifacts.get_file(ref.bucket, ref.key, str(local))
                files[path] = local
            runtime_inputs, runtime_outputs = _tensor_specs(files)
            self.registry.register(name, version, files, inputs=runtime_inputs,
                                   outputs=runtime_outputs, provenance=provenance)
        if serve:
            self.registry.promote(name, version)

    async def PromoteModel(self, request, context):
        p = require_admin()
        name = check_name("name", request.name)
        version = check_name("version", request.version)
        try:
            previous = await asyncio.to_thread(self.registry.promote, name, version)
        except NotFound as exc:
            raise NotFound(f"model {name}@{version} not found",
                           metadata={"model": name, "version": version}) from exc
        log.info("model promoted", extra={"model": name, "version": version,
                                           "previous": previous, "tenant": p.tenant})
        return pb.PromoteModelResponse(model=await asyncio.to_thread(self._model, name),
                                       previous_version=previous)

    async def RollbackModel(self, request, context):
        p = require_admin()
        name = check_name("name", request.name)
        previous, now = await asyncio.to_thread(self.registry.rollback, name)
        log.info("model rolled back", extra={"model": name, "from": previous, "to": now,
                                              "tenant": p.tenant})
        return pb.RollbackModelResponse(model=await asyncio.to_thread(self._model, name),
                                        previous_version=previous)


def _tensor_specs(files: dict[str, Path]) -> tuple[list[dict], list[dict]]:
    """Inputs/outputs of the first ONNX file, if any and loadable; [] otherwise (a model that
    is not one ONNX graph, e.g. a CTranslate2 folder, has none to record)."""
    onnx_files = [p for path, p in sorted(files.items()) if path.endswith(".onnx")]
    if not onnx_files:
        return [], []
    from shared.models.importer import tensor_specs

    try:
        return tensor_specs(onnx_files[0])
    except Exception as exc:
        raise InvalidArgument.for_field("files", f"{onnx_files[0].name} does not load in "
                                        f"ONNX Runtime: {exc}") from exc
