"""CurationService: thin. Resolve the shards, check the pipeline, queue the job; score a few
texts synchronously; serve reports."""

from __future__ import annotations

import asyncio
import time

from jobmesh.curation.v1 import curation_service_pb2 as pb
from jobmesh.curation.v1 import curation_service_pb2_grpc

from services.curation import convert
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.jobs.convert import artifact_pb, job_to_pb, register_result, ts
from shared.jobs.records import State
from shared.server.inputs import checked_ref
from shared.server.interceptors import current_principal, require_admin
from shared.server.sync_call import call_sync
from shared.storage.artifacts import ArtifactRef

DOMAIN = "curation"

register_result(convert.CURATE_TASK, convert.summary_pb)
register_result(convert.SCORE_TASK, convert.scores_pb)
register_result(convert.FINETUNE_TASK, convert.finetune_result_pb)


class CurationServicer(curation_service_pb2_grpc.CurationServiceServicer):
    def __init__(self, gw):
        self.gw = gw

    async def SubmitCurate(self, request, context):
        p = current_principal()
        if len(request.request_id) > 128:
            raise InvalidArgument.for_field("request_id", "is longer than 128 characters")
        pipeline = convert.pipeline_to_list(request.pipeline)
        convert.check_pipeline(pipeline)
        await asyncio.to_thread(self._check_models, pipeline)
        text_field, id_field = convert.fields(request)
        base = convert.data_prefix(p.tenant)
        output = base + convert.check_path(request.output_prefix, "output_prefix", folder=True)
        shards = await self._shards(request, p.tenant, base)
        if request.input_prefix and output.startswith(
                base + convert.check_path(request.input_prefix, "input_prefix", folder=True)):
            raise InvalidArgument.for_field("output_prefix", "is inside the input prefix: "
                                            "outputs would be read as inputs on a rerun")
        for s in shards:
            if s["key"].startswith(output):
                raise InvalidArgument.for_field(
                    "output_prefix", f"contains the input shard {s['name']}: outputs would "
                    "be read as inputs on a rerun")
        req = {"shards": shards, "output_prefix": output, "pipeline": pipeline,
               "text_field": text_field, "id_field": id_field}
        job, _ = await self.gw.dispatcher.submit(
            tenant=p.tenant, domain=DOMAIN, task=convert.CURATE_TASK, request=req,
            request_id=request.request_id)
        return pb.SubmitCurateResponse(job=job_to_pb(job))

    def _check_models(self, pipeline: list[dict]) -> None:
        """NOT_FOUND naming the parameter now, rather than a failed job later, for a step's
        registry model (color_filter's prior and conditional models) that does not exist; for
        a step that always runs one model (embed_dedup, domain_cluster), naming the step."""
        registry = self.gw.registry
        for n, entry in enumerate(pipeline):
            refs = [(f"pipeline[{n}].{param}", entry.get(param) or convert.REFERENCE_LM)
                    for param in convert.MODEL_PARAMS.get(entry["step"], ())]
            if entry["step"] in convert.STEP_MODELS:
                refs.append((f"pipeline[{n}].step", convert.STEP_MODELS[entry["step"]]))
            for field, ref in refs:
                name, _, version = ref.partition("@")
                try:
                    registry.manifest(name, version or registry.serving_version(name))
                except NotFound as exc:
                    raise NotFound(f"{field}: model {ref} not found",
                                   metadata={"field": field}) from exc

    async def _shards(self, request, tenant: str, base: str) -> list[dict]:
        if bool(request.input_prefix) == bool(request.inputs):
            raise InvalidArgument.for_field("input_prefix", "set input_prefix or inputs "
                                            "(one of them)")
        if request.input_prefix:
            prefix = base + convert.check_path(request.input_prefix, "input_prefix",
                                               folder=True)
            keys = await asyncio.to_thread(self.gw.artifacts.list_keys,
                                           self.gw.settings.artifacts_bucket, prefix)
            keys = sorted(k for k in keys if k.endswith(convert.SHARD_SUFFIXES))
            if not keys:
                raise InvalidArgument.for_field(
                    "input_prefix", f"no shards ({', '.join(convert.SHARD_SUFFIXES)}) under "
                    f"{request.input_prefix!r}")
            named = [(k, convert.shard_name(k, prefix)) for k in keys]
        else:
            named = []
            for n, ref in enumerate(request.inputs):
                field = f"inputs[{n}]"
                if not ref.key.endswith(convert.SHARD_SUFFIXES):
                    raise InvalidArgument.for_field(
                        field, f"must end in one of {', '.join(convert.SHARD_SUFFIXES)}")
                checked = await checked_ref(self.gw, ArtifactRef(ref.bucket, ref.key),
                                            tenant, field)
                named.append((checked.key, convert.shard_name(checked.key, base)))
        if len(named) > convert.MAX_SHARDS:
            raise InvalidArgument.for_field("inputs", f"more than {convert.MAX_SHARDS} shards")
        names = [n for _, n in named]
        if len(set(names)) != len(names):
            raise InvalidArgument.for_field("inputs", "two shards have the same name")
        return [{"key": k, "name": n} for k, n in named]

    async def GetReport(self, request, context):
        p = current_principal()
        job = await self.gw.store.require(request.name.removeprefix("jobs/"), p.tenant)
        if job.method != convert.CURATE_TASK:
            raise InvalidArgument.for_field("name", f"{request.name} is not a curation job")
        if job.state is not State.SUCCEEDED:
            raise FailedPrecondition(f"{request.name} is {job.state.value}: a report exists "
                                     "once it SUCCEEDED", metadata={"state": job.state.value})
        refs = {ArtifactRef.from_dict(a).key.rsplit("/", 1)[-1]: a for a in job.artifacts}
        html = refs.get("report.html", {})
        url = await asyncio.to_thread(self.gw.artifacts.presign_get, html.get("bucket", ""),
                                      html.get("key", ""), self.gw.settings.presign_expiry_s)
        return pb.GetReportResponse(summary=convert.summary_pb(job.result or {}),
                                    report_json=artifact_pb(refs.get("report.json", {})),
                                    report_html=artifact_pb(html), report_html_url=url)

    async def ScoreTexts(self, request, context):
        p = current_principal()
        result = await call_sync(self.gw, context, tenant=p.tenant, domain=DOMAIN,
                                 task=convert.SCORE_TASK, batch_task=None,
                                 request=convert.score_request(request))
        return convert.scores_pb(result)

    async def ListSteps(self, request, context):
        current_principal()
        return convert.steps_pb()

    async def CreateShardUpload(self, request, context):
        p = current_principal()
        path = convert.check_path(request.path, "path", folder=False)
        if not path.endswith(convert.SHARD_SUFFIXES):
            raise InvalidArgument.for_field(
                "path", f"must end in one of {', '.join(convert.SHARD_SUFFIXES)}")
        settings = self.gw.settings
        if not 0 < request.size <= settings.max_upload_bytes:
            raise InvalidArgument.for_field(
                "size", f"must be within 1..{settings.max_upload_bytes} bytes",
                reason="INPUT_TOO_LARGE" if request.size > 0 else "INVALID_ARGUMENT")
        key = convert.data_prefix(p.tenant) + path
        bucket, expiry = settings.artifacts_bucket, settings.presign_expiry_s
        # Datasets are the tenant's to keep: unlike job inputs, data-space objects do not
        # expire.
        url = await asyncio.to_thread(self.gw.artifacts.presign_put, bucket, key, expiry)
        return pb.CreateShardUploadResponse(
            ref=artifact_pb({"bucket": bucket, "key": key, "size": request.size}),
            upload_url=url, expire_time=ts(time.time() + expiry))

    async def SubmitFineTune(self, request, context):
        p = require_admin()  # it writes the model registry
        if len(request.request_id) > 128:
            raise InvalidArgument.for_field("request_id", "is longer than 128 characters")
        req = convert.finetune_request(request)
        if request.HasField("target"):
            t = request.target
            if not t.key.endswith(convert.SHARD_SUFFIXES):
                raise InvalidArgument.for_field(
                    "target", f"must end in one of {', '.join(convert.SHARD_SUFFIXES)}")
            ref = await checked_ref(self.gw, ArtifactRef(t.bucket, t.key, t.sha256), p.tenant,
                                    "target")
            req["target"] = {"bucket": ref.bucket, "key": ref.key, "sha256": ref.sha256}
        job, _ = await self.gw.dispatcher.submit(
            tenant=p.tenant, domain=DOMAIN, task=convert.FINETUNE_TASK, request=req,
            request_id=request.request_id)
        return pb.SubmitFineTuneResponse(job=job_to_pb(job))
