"""`BatchServicer`: BatchService on every gateway, for the batchable methods its own domain
registered (`shared.batch.methods`).

CreateBatch reads the manifest, checks every line the way the unary call would (proto-JSON into
the request message, then the domain's own validation), and refuses the whole manifest with one
field violation per bad line before anything is queued. A valid manifest becomes a Job of kind
BATCH: its lines are written to S3 as chunk inputs under the job (not into the queue: a broker
restart loses no input, and inputs expire with the job), and one task per chunk goes to the
domain's queue at the batch priority, below interactive traffic (kombu's Redis transport keeps a
list per priority step and workers read the higher ones first)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from google.protobuf import json_format
from jobmesh.jobs.v1 import batch_service_pb2 as pb
from jobmesh.jobs.v1 import batch_service_pb2_grpc

from shared import tracing
from shared.batch import files, manifest, methods
from shared.batch.runner import CHUNK_TASK
from shared.errors import (
    FailedPrecondition,
    InvalidArgument,
    JobmeshError,
    NotFound,
    Unavailable,
)
from shared.jobs import records as r
from shared.jobs.convert import artifact_pb, job_id_from_name, job_to_pb, ts
from shared.jobs.records import BatchInfo
from shared.server.interceptors import current_principal
from shared.storage.artifacts import ArtifactRef, check_key, owned_by, tenant_key

MAX_VIOLATIONS = 100  # field violations in one refusal (the message gives the total)


class BatchServicer(batch_service_pb2_grpc.BatchServiceServicer):
    def __init__(self, gw):
        self.gw = gw
        self.settings = gw.settings

    # -- CreateBatch -----------------------------------------------------------------------
    async def CreateBatch(self, request, context):
        p = current_principal()
        if len(request.request_id) > 128:
            raise InvalidArgument.for_field("request_id", "is longer than 128 characters")
        method = self._method(request.service, request.method)
        window = self._window(request)
        if request.request_id:  # a repeat returns the first batch without re-reading anything
            first = await self.gw.redis.get(r.idempotency_key(p.tenant, request.request_id))
            job = await self.gw.store.get(r._s(first), p.tenant) if first else None
            if job is not None:
                return pb.CreateBatchResponse(job=job_to_pb(job))
        data, source, input_ref = await self._manifest(request, p.tenant)
        try:
            lines, errors = manifest.parse(data, max_lines=self.settings.batch_max_lines,
                                           max_bytes=self.settings.batch_max_bytes)
        except manifest.ManifestError as exc:
            raise InvalidArgument.for_field(source, str(exc), reason="INVALID_MANIFEST") from None
        requests, more = await self._prepare(method, lines, p.tenant)
        errors = sorted(errors + more, key=lambda e: e.number)
        if errors:
            raise InvalidArgument(
                f"{source}: {manifest.describe(errors)}", reason="INVALID_MANIFEST",
                field_violations=[(source, str(e)) for e in errors[:MAX_VIOLATIONS]],
                metadata={"bad_lines": str(len(errors)),
                          "lines": ",".join(str(e.number) for e in errors[:MAX_VIOLATIONS])})
        return pb.CreateBatchResponse(job=job_to_pb(await self._start(
            p.tenant, request.request_id, method, lines, requests, window, input_ref, data)))

    def _method(self, service: str, name: str) -> methods.BatchMethod:
        if service not in methods.KNOWN:
            raise InvalidArgument.for_field("service", f"must be one of {sorted(methods.KNOWN)}")
        if name not in methods.KNOWN[service]:
            raise InvalidArgument.for_field(
                "method", f"{service} batches support {list(methods.KNOWN[service])}")
        found = methods.lookup(service, name)
        if found is None:
            raise FailedPrecondition(
                f"service {service!r} is served by its own gateway; send CreateBatch there "
                f"(JOBMESH_ENDPOINT_{service.upper()})", reason="WRONG_GATEWAY",
                metadata={"service": service, "gateway": self.gw.domain})
        return found

    def _window(self, request) -> float:
        if not request.HasField("completion_window"):
            return float(self.settings.batch_window_s)
        s = request.completion_window.ToTimedelta().total_seconds()
        if not 0 < s <= self.settings.retention_s:
            raise InvalidArgument.for_field(
                "completion_window", f"must be within 1 s..{self.settings.retention_s} s "
                                     "(the job retention period)")
        return s

    async def _manifest(self, request, tenant: str) -> tuple[bytes, str, dict | None]:
        """(bytes, the field they came from, the uploaded ref or None for inline)."""
        which = request.WhichOneof("manifest")
        if which is None:
            raise InvalidArgument.for_field("input_file", "is required (or inline_manifest)")
        if which == "inline_manifest":
            return request.inline_manifest, "inline_manifest", None
        ref = request.input_file
        check_key(ref.key, "input_file.key")
        if ref.bucket != self.settings.artifacts_bucket or not owned_by(tenant, ref.key):
            raise NotFound("input_file: object not found", metadata={"field": "input_file"})
        stat = await asyncio.to_thread(self.gw.artifacts.stat, ref.bucket, ref.key)
        if stat.size > self.settings.batch_max_bytes:
            raise InvalidArgument.for_field(
                "input_file", f"is {stat.size} bytes; the limit is "
                              f"{self.settings.batch_max_bytes}", reason="INPUT_TOO_LARGE")
        full = ArtifactRef(ref.bucket, ref.key, ref.sha256 or stat.sha256, stat.size,
                           files.JSONL)
        data = await asyncio.to_thread(self.gw.artifacts.get_bytes, full,
                                       self.settings.batch_max_bytes)
        return data, "input_file", full.to_dict()

    async def _prepare(self, method: methods.BatchMethod, lines: list[manifest.Line],
                       tenant: str) -> tuple[list[dict], list[manifest.LineError]]:
        """Each line's worker request, exactly as the unary call would build it."""
        out: list[dict] = []
        errors: list[manifest.LineError] = []
        for line in lines:
            try:
                msg = json_format.ParseDict(line.body, method.request_type())
            except json_format.ParseError as exc:
                errors.append(manifest.LineError(line.number, f"body: {exc}"))
                continue
            try:
                out.append(await method.prepare(self.gw, msg, tenant))
            except JobmeshError as exc:
                errors.append(manifest.LineError(line.number, f"body.{exc.message}"))
        return out, errors

    async def _start(self, tenant: str, request_id: str, method: methods.BatchMethod,
                     lines: list[manifest.Line], requests: list[dict], window: float,
                     input_ref: dict | None, data: bytes):
        size = self.settings.batch_chunk_lines
        chunks = [list(range(k, min(k + size, len(lines)))) for k in range(0, len(lines), size)]
        queue = await self.gw.dispatcher.route(method.service)
        deadline = time.time() + window
        info = BatchInfo({"service": method.service, "method": method.method,
                          "task": method.task, "deadline": deadline, "chunks": len(chunks),
                          "chunk_lines": size}, total=len(lines))
        store = self.gw.store
        job, created = await store.create(tenant=tenant, domain=method.service,
                                          method=method.job_method, queue=queue,
                                          request_id=request_id, kind="BATCH", batch=info)
        if not created:
            return job
        bucket = self.settings.artifacts_bucket
        written: dict[str, float] = {}  # S3 objects expire with the job (janitor)
        try:
            if input_ref is None:  # keep an inline manifest with the job, as uploads are
                ref = await asyncio.to_thread(self.gw.artifacts.put_bytes, bucket,
                                              files.manifest(tenant, job.id), data, files.JSONL)
                input_ref = ref.to_dict()
                written[f"{bucket}/{ref.key}"] = job.expire_time
            info.meta["input_file"] = input_ref
            for k, idx in enumerate(chunks):
                body = json.dumps([{"line": lines[i].number, "custom_id": lines[i].custom_id,
                                    "request": requests[i]} for i in idx]).encode()
                key = files.chunk_input(tenant, job.id, k)
                await asyncio.to_thread(self.gw.artifacts.put_bytes, bucket, key, body,
                                        "application/json")
                written[f"{bucket}/{key}"] = job.expire_time
            await self.gw.redis.zadd(r.ARTIFACT_EXPIRY_KEY, written)
            await self.gw.redis.hset(r.job_key(job.id), mapping={
                "batch": json.dumps(info.meta), "batch_phase": "IN_PROGRESS",
                "progress_total": len(lines), "progress_message": "in progress"})
            current = await store.get(job.id, tenant)
            if current is not None and current.done:  # cancelled while its chunks were written
                await self.gw.redis.hset(r.job_key(job.id), "batch_phase", "DONE")
            await self.gw.redis.zadd(r.BATCH_DEADLINES_KEY, {job.id: deadline})
            for k in range(len(chunks)):
                await asyncio.to_thread(
                    self.gw.dispatcher.celery.send_task, CHUNK_TASK,
                    args=[{"job_id": job.id, "chunk": k}], queue=queue,
                    priority=self.settings.batch_priority, headers=tracing.inject())
            await store.dispatched([job.id])
        except JobmeshError as exc:
            await store.fail(job.id, exc.to_dict())
            raise
        except Exception as exc:
            err = Unavailable(f"could not queue the batch: {exc.__class__.__name__}",
                              retry_after_s=1.0)
            await store.fail(job.id, err.to_dict())
            raise err from exc
        return await store.require(job.id, tenant)

    # -- uploads and results ----------------------------------------------------------------
    async def CreateManifestUpload(self, request, context):
        p = current_principal()
        limit = self.settings.batch_max_bytes
        if not 0 < request.size <= limit:
            raise InvalidArgument.for_field(
                "size", f"must be within 1..{limit} bytes",
                reason="INPUT_TOO_LARGE" if request.size > 0 else "INVALID_ARGUMENT")
        bucket, expiry = self.settings.artifacts_bucket, self.settings.presign_expiry_s
        key = tenant_key(p.tenant, "uploads", uuid.uuid4().hex + ".jsonl")
        url = self.gw.artifacts.presign_put(bucket, key, expiry)
        await self.gw.redis.zadd(r.ARTIFACT_EXPIRY_KEY,
                                 {f"{bucket}/{key}": time.time() + self.settings.retention_s})
        return pb.CreateManifestUploadResponse(
            upload_url=url, ref=artifact_pb(ArtifactRef(bucket, key, "", request.size,
                                                        files.JSONL).to_dict()),
            expire_time=ts(time.time() + expiry))

    async def GetBatchResults(self, request, context):
        p = current_principal()
        job = await self.gw.store.require(job_id_from_name(request.name), p.tenant)
        if job.batch is None:
            raise NotFound(f"job {job.id} is not a batch", metadata={"job": job.id})
        resp = pb.GetBatchResultsResponse(job=job_to_pb(job))
        expiry = self.settings.presign_expiry_s
        for name, attr in (("output_file", "output_url"), ("error_file", "error_url")):
            ref = job.batch.meta.get(name)
            if ref:
                setattr(resp, attr, self.gw.artifacts.presign_get(ref["bucket"], ref["key"],
                                                                  expiry))
        if resp.output_url or resp.error_url:
            resp.expire_time.CopyFrom(ts(time.time() + expiry))
        return resp
