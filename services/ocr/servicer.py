"""OcrService: thin. Validate, dispatch through the job queue, convert back."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from services.ocr import convert
from services.ocr.images import inspect_input
from shared.errors import Cancelled, DeadlineExceeded, InvalidArgument, NotFound, from_dict
from shared.jobs.convert import job_to_pb, register_result
from shared.jobs.records import ARTIFACT_EXPIRY_KEY, JobRecord, State
from shared.server.interceptors import current_principal
from shared.storage.artifacts import ArtifactRef, owned_by, tenant_key

DOMAIN = "ocr"
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp",
                "application/octet-stream")

register_result(convert.RECOGNIZE_TASK, convert.response_from_result)
register_result(convert.RECOGNIZE_BATCH_TASK, convert.response_from_result)


class OcrServicer(ocr_service_pb2_grpc.OcrServiceServicer):
    def __init__(self, gw):
        self.gw = gw
        self.settings = gw.settings

    async def _checked_ref(self, ref: ArtifactRef, tenant: str, field: str) -> ArtifactRef:
        """The caller may only point at its own objects; anything else is NOT_FOUND (no hint
        that another tenant's object exists)."""
        if ref.bucket != self.settings.artifacts_bucket or not owned_by(tenant, ref.key):
            raise NotFound(f"{field}: object not found", metadata={"field": field})
        stat = await asyncio.to_thread(self.gw.artifacts.stat, ref.bucket, ref.key)
        if stat.size > self.settings.max_upload_bytes:
            raise InvalidArgument.for_field(field, f"is {stat.size} bytes; the limit is "
                                            f"{self.settings.max_upload_bytes}",
                                            reason="INPUT_TOO_LARGE")
        return ArtifactRef(ref.bucket, ref.key, ref.sha256 or stat.sha256, stat.size,
                           stat.content_type)

    async def _worker_request(self, request, tenant: str, store_result: bool) -> dict:
        options = convert.options_to_dict(request.options)
        kind, source = convert.source_of(request)
        if kind == "image":
            inspect_input(source, self.settings.max_image_pixels, self.settings.max_pages,
                          "image", self.settings.pdf_dpi)
            return convert.worker_request(source, None, options, store_result)
        ref = await self._checked_ref(source, tenant, "image_ref")
        return convert.worker_request(None, ref, options, store_result)

    async def Recognize(self, request, context):
        p = current_principal()
        req = await self._worker_request(request, p.tenant, store_result=False)
        await self.gw.dispatcher.require_consumers(DOMAIN)
        if self.gw.coalescer is not None and self.gw.coalescer.enabled:
            job = await self.gw.coalescer.submit(tenant=p.tenant, domain=DOMAIN,
                                                 task=convert.RECOGNIZE_BATCH_TASK, request=req)
        else:
            job, _ = await self.gw.dispatcher.submit(tenant=p.tenant, domain=DOMAIN,
                                                     task=convert.RECOGNIZE_TASK, request=req)
        remaining = context.time_remaining()
        budget = self.settings.sync_timeout_s if remaining is None else \
            min(self.settings.sync_timeout_s, max(0.0, remaining - 0.05))
        try:
            done = await self.gw.store.wait(job.id, p.tenant, time.monotonic() + budget)
        except asyncio.CancelledError:
            await self.gw.store.cancel(job.id, p.tenant)  # the client went away: stop the work
            raise
        return self._sync_result(done)

    def _sync_result(self, job: JobRecord) -> pb.RecognizeResponse:
        if not job.done:
            raise DeadlineExceeded(f"job {job.id} did not finish in time; it keeps running "
                                   f"as {job.name}", metadata={"job": job.name})
        if job.state is State.SUCCEEDED:
            return convert.response_from_result(job.result or {})
        if job.state is State.CANCELLED:
            raise Cancelled(f"job {job.id} was cancelled")
        raise from_dict(job.error or {"message": "job failed"})

    async def SubmitRecognize(self, request, context):
        p = current_principal()
        if len(request.request_id) > 128:
            raise InvalidArgument.for_field("request_id", "is longer than 128 characters")
        req = await self._worker_request(request, p.tenant, store_result=True)

        async def keep_input(job: JobRecord, r: dict) -> dict:
            # Inline inputs of async jobs are kept in S3 under the job (not in the queue), so
            # a job survives a broker restart with its input and expires with it.
            if "image_b64" in r:
                data = base64.b64decode(r.pop("image_b64"))
                key = tenant_key(p.tenant, "jobs", job.id, "input")
                ref = await asyncio.to_thread(self.gw.artifacts.put_bytes,
                                              self.settings.artifacts_bucket, key, data)
                await self.gw.redis.zadd(ARTIFACT_EXPIRY_KEY,
                                         {f"{ref.bucket}/{ref.key}": job.expire_time})
                r["image_ref"] = ref.to_dict()
            return r

        job, _ = await self.gw.dispatcher.submit(
            tenant=p.tenant, domain=DOMAIN, task=convert.RECOGNIZE_TASK, request=req,
            request_id=request.request_id, prepare=keep_input)
        return pb.SubmitRecognizeResponse(job=job_to_pb(job))

    async def CreateUpload(self, request, context):
        p = current_principal()
        if request.content_type not in UPLOAD_TYPES:
            raise InvalidArgument.for_field("content_type", f"must be one of {UPLOAD_TYPES}")
        if not 0 < request.size <= self.settings.max_upload_bytes:
            raise InvalidArgument.for_field(
                "size", f"must be within 1..{self.settings.max_upload_bytes} bytes",
                reason="INPUT_TOO_LARGE" if request.size > 0 else "INVALID_ARGUMENT")
        key = tenant_key(p.tenant, "uploads", uuid.uuid4().hex)
        bucket = self.settings.artifacts_bucket
        expiry = self.settings.presign_expiry_s
        url = self.gw.artifacts.presign_put(bucket, key, expiry)
        await self.gw.redis.zadd(ARTIFACT_EXPIRY_KEY,
                                 {f"{bucket}/{key}": time.time() + self.settings.retention_s})
        ref = ArtifactRef(bucket, key, "", request.size, request.content_type)
        return convert.upload_response(ref, url, time.time() + expiry)
