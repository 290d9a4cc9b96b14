"""TextGenerationService: thin. Validate, dispatch through the job queue, stream or convert."""

from __future__ import annotations

import asyncio
import json
import time

from jobmesh.textgen.v1 import textgen_service_pb2 as pb
from jobmesh.textgen.v1 import textgen_service_pb2_grpc

from services.textgen import convert
from shared.batch import methods as batch_methods
from shared.errors import InvalidArgument
from shared.jobs.convert import job_to_pb, register_result
from shared.server.interceptors import current_principal
from shared.server.sync_call import budget_s, call_sync, outcome, submit_sync

DOMAIN = "textgen"

register_result(convert.GENERATE_TASK, convert.response_from_result)
register_result(convert.GENERATE_BATCH_TASK, convert.response_from_result)
register_result(convert.SUBMIT_TASK, convert.submit_summary)


async def _batch_line(gw, request: pb.GenerateRequest, tenant: str) -> dict:
    """A batch line's worker request: what Generate would send, without a deadline (a batch
    line has the batch's completion window instead)."""
    return convert.generate_request(request)


batch_methods.register(batch_methods.BatchMethod(
    "textgen", "Generate", pb.GenerateRequest, convert.GENERATE_BATCH_TASK, _batch_line))


class TextGenerationServicer(textgen_service_pb2_grpc.TextGenerationServiceServicer):
    def __init__(self, gw):
        self.gw = gw

    def _with_deadline(self, req: dict, context) -> dict:
        # The worker stops decoding when the caller can no longer use the answer.
        return {**req, "deadline": time.time() + budget_s(context,
                                                          self.gw.settings.sync_timeout_s)}

    async def Generate(self, request, context):
        p = current_principal()
        req = self._with_deadline(convert.generate_request(request), context)
        result = await call_sync(self.gw, context, tenant=p.tenant, domain=DOMAIN,
                                 task=convert.GENERATE_TASK,
                                 batch_task=convert.GENERATE_BATCH_TASK, request=req)
        return convert.response_from_result(result)

    async def GenerateStream(self, request, context):
        p = current_principal()
        req = {**self._with_deadline(convert.generate_request(request), context), "stream": True}
        store = self.gw.store
        # Not coalesced: a stream is its own task so its deltas flow as they are decoded.
        job = await submit_sync(self.gw, tenant=p.tenant, domain=DOMAIN,
                                task=convert.GENERATE_TASK, batch_task=None, request=req)
        deadline = time.monotonic() + budget_s(context, self.gw.settings.sync_timeout_s)
        after = "0-0"  # the stream holds every delta since the job was created
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await store.cancel(job.id, p.tenant)
                    outcome(await store.require(job.id, p.tenant))  # raises DeadlineExceeded
                after, entries = await store.entries(job.id, after,
                                                     int(min(remaining, 2.0) * 1000) or 1)
                for e in entries:
                    if e.get("type") == "delta":
                        yield convert.delta(e.get("text", ""),
                                            json.loads(e.get("token_ids", "[]")))
                current = await store.require(job.id, p.tenant)
                if current.done:
                    yield convert.final(outcome(current))
                    return
        except asyncio.CancelledError:
            await store.cancel(job.id, p.tenant)  # the client left: stop the decoding
            raise

    async def SubmitGenerate(self, request, context):
        p = current_principal()
        if len(request.request_id) > 128:
            raise InvalidArgument.for_field("request_id", "is longer than 128 characters")
        req = convert.submit_request(request)
        job, _ = await self.gw.dispatcher.submit(
            tenant=p.tenant, domain=DOMAIN, task=convert.SUBMIT_TASK, request=req,
            request_id=request.request_id)
        return pb.SubmitGenerateResponse(job=job_to_pb(job))
