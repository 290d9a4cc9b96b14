"""OcrService: thin. Validate, dispatch through the job queue, convert back."""

from __future__ import annotations

import base64

from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from services.ocr import convert
from services.ocr.images import inspect_input
from shared.batch import methods as batch_methods
from shared.errors import InvalidArgument
from shared.jobs.convert import job_to_pb, register_result
from shared.jobs.records import JobRecord
from shared.server.inputs import checked_ref, create_upload, keep_input
from shared.server.interceptors import current_principal
from shared.server.sync_call import call_sync

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

    async def _worker_request(self, request, tenant: str, store_result: bool) -> dict:
        options = convert.options_to_dict(request.options)
        kind, source = convert.source_of(request)
        if kind == "image":
            inspect_input(source, self.settings.max_image_pixels, self.settings.max_pages,
                          "image", self.settings.pdf_dpi)
            return convert.worker_request(source, None, options, store_result)
        ref = await checked_ref(self.gw, source, tenant, "image_ref")
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

        async def keep_inline(job: JobRecord, r: dict) -> dict:
            if "image_b64" in r:
                r["image_ref"] = await keep_input(self.gw, p.tenant, job,
                                                  base64.b64decode(r.pop("image_b64")))
            return r

        job, _ = await self.gw.dispatcher.submit(
            tenant=p.tenant, domain=DOMAIN, task=convert.RECOGNIZE_TASK, request=req,
            request_id=request.request_id, prepare=keep_inline)
        return pb.SubmitRecognizeResponse(job=job_to_pb(job))

    async def CreateUpload(self, request, context):
        p = current_principal()
        ref, url, expires = await create_upload(self.gw, p.tenant, request.content_type,
                                                request.size, UPLOAD_TYPES)
        return convert.upload_response(ref, url, expires)
