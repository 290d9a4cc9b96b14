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
from shared.batch import methods as batch_methods
from shared.errors import InvalidArgument, NotFound
from shared.jobs.convert import job_to_pb, register_result
from shared.jobs.records import ARTIFACT_EXPIRY_KEY, JobRecord
from shared.server.interceptors import current_principal
from shared.server.sync_call import call_sync
from shared.storage.artifacts import ArtifactRef, owned_by, tenant_key

DOMAIN = "ocr"
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp",
                "application/octet-stream")

register_result(convert.RECOGNIZE_TASK, convert.response_from_result)
register_result(convert.RECOGNIZE_BATCH_TASK, convert.response_from_result)


async def _batch_line(gw, request: pb.RecognizeRequest, tenant: str) -> dict:
    """A batch line's worker request: what Recognize would send (same checks, same errors)."""
    return await OcrServicer(gw)._worker_request(request, tenant, store_result=False)


batch_methods.register(batch_methods.BatchMethod(
    "ocr", "Recognize", pb.RecognizeRequest, convert.RECOGNIZE_BATCH_TASK, _batch_line))


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
        result = await call_sync(self.gw, context, tenant=p.tenant, domain=DOMAIN,
                                 task=convert.RECOGNIZE_TASK,
                                 batch_task=convert.RECOGNIZE_BATCH_TASK, request=req)
        return convert.response_from_result(result)

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
