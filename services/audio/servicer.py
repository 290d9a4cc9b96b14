"""AudioService: thin. Check the file's header, dispatch through the job queue, convert back."""

from __future__ import annotations

import base64

from jobmesh.audio.v1 import audio_service_pb2 as pb
from jobmesh.audio.v1 import audio_service_pb2_grpc

from services.audio import convert
from services.audio.inspect import AudioLimits, inspect_audio
from shared.batch import methods as batch_methods
from shared.errors import InvalidArgument
from shared.jobs.convert import job_to_pb, register_result
from shared.jobs.records import JobRecord
from shared.server.inputs import (
    checked_ref,
    create_upload,
    discard_staged,
    keep_input,
    stage_input,
)
from shared.server.interceptors import current_principal
from shared.server.sync_call import call_sync
from shared.storage.artifacts import ArtifactRef

DOMAIN = "audio"
UPLOAD_TYPES = ("audio/wav", "audio/x-wav", "audio/flac", "audio/ogg", "audio/mpeg",
                "application/octet-stream")

for _task in (convert.TAG_TASK, convert.TAG_BATCH_TASK):
    register_result(_task, convert.tag_response)
for _task in (convert.VAD_TASK, convert.VAD_BATCH_TASK):
    register_result(_task, convert.vad_response)
for _task in (convert.ASR_TASK, convert.ASR_BATCH_TASK):
    register_result(_task, convert.asr_response)
for _task in (convert.TTS_TASK, convert.TTS_BATCH_TASK):
    register_result(_task, convert.tts_response)


class AudioServicer(audio_service_pb2_grpc.AudioServiceServicer):
    def __init__(self, gw):
        self.gw = gw
        s = gw.settings
        self.limits = AudioLimits(s.audio_max_seconds, s.audio_min_rate, s.audio_max_rate)

    async def worker_request(self, request, options: dict, tenant: str,
                             prefix: str = "", stage: bool = False) -> dict:
        """Checks the source (inline: the header; by reference: ownership and size) and builds
        what the worker takes. `stage`: a large inline input goes to S3 for the call
        (`stage_input`; the caller discards it with `_discard`)."""
        kind, source = convert.source_of(request, prefix)
        if kind == "audio":
            inspect_audio(source, self.limits, f"{prefix}audio")
            staged = await stage_input(self.gw, tenant, source) if stage else None
            if staged is not None:
                return convert.worker_request(None, staged, options, field=f"{prefix}audio")
            return convert.worker_request(source, None, options)
        ref = await checked_ref(self.gw, source, tenant, f"{prefix}audio_ref")
        return convert.worker_request(None, ref, options)

    async def _sync(self, context, tenant: str, task: str, batch_task: str, req: dict) -> dict:
        return await call_sync(self.gw, context, tenant=tenant, domain=DOMAIN, task=task,
                               batch_task=batch_task, request=req)

    async def _submit(self, tenant: str, request_id: str, task: str, req: dict):
        if len(request_id) > 128:
            raise InvalidArgument.for_field("request_id", "is longer than 128 characters")

        async def keep_inline(job: JobRecord, r: dict) -> dict:
            if "audio_b64" in r:
                r["audio_ref"] = await keep_input(self.gw, tenant, job,
                                                  base64.b64decode(r.pop("audio_b64")))
            return r

        job, _ = await self.gw.dispatcher.submit(tenant=tenant, domain=DOMAIN, task=task,
                                                 request=req, request_id=request_id,
                                                 prepare=keep_inline)
        return job_to_pb(job)

    async def _call(self, request, context, options, task: str, batch_task: str, response):
        """A sync call on a file input: check, dispatch (coalesced), convert the result."""
        p = current_principal()
        req = await self.worker_request(request, options(request), p.tenant, stage=True)
        try:
            return response(await self._sync(context, p.tenant, task, batch_task, req))
        finally:
            if "staged_as" in req:
                await discard_staged(self.gw, ArtifactRef.from_dict(req["audio_ref"]))

    async def _job(self, request, options, task: str, response_type):
        """A Submit* call: the inner request checked as the sync call would, then a job."""
        p = current_principal()
        inner = request.request
        req = await self.worker_request(inner, options(inner, "request."), p.tenant,
                                        "request.")
        return response_type(job=await self._submit(p.tenant, request.request_id, task, req))

    async def Tag(self, request, context):
        return await self._call(request, context, convert.tag_options, convert.TAG_TASK,
                                convert.TAG_BATCH_TASK, convert.tag_response)

    async def SubmitTag(self, request, context):
        return await self._job(request, convert.tag_options, convert.TAG_TASK,
                               pb.SubmitTagResponse)

    async def DetectSpeech(self, request, context):
        return await self._call(request, context, convert.vad_options, convert.VAD_TASK,
                                convert.VAD_BATCH_TASK, convert.vad_response)

    async def SubmitDetectSpeech(self, request, context):
        return await self._job(request, convert.vad_options, convert.VAD_TASK,
                               pb.SubmitDetectSpeechResponse)

    async def Transcribe(self, request, context):
        return await self._call(request, context, convert.asr_options, convert.ASR_TASK,
                                convert.ASR_BATCH_TASK, convert.asr_response)

    async def SubmitTranscribe(self, request, context):
        return await self._job(request, convert.asr_options, convert.ASR_TASK,
                               pb.SubmitTranscribeResponse)

    async def Synthesize(self, request, context):
        p = current_principal()
        return convert.tts_response(await self._sync(context, p.tenant, convert.TTS_TASK,
                                                     convert.TTS_BATCH_TASK,
                                                     convert.tts_request(request)))

    async def CreateUpload(self, request, context):
        p = current_principal()
        ref, url, expires = await create_upload(self.gw, p.tenant, request.content_type,
                                                request.size, UPLOAD_TYPES)
        return convert.upload_response(ref, url, expires)


async def _tag_line(gw, request: pb.TagRequest, tenant: str) -> dict:
    return await AudioServicer(gw).worker_request(request, convert.tag_options(request), tenant)


async def _vad_line(gw, request: pb.DetectSpeechRequest, tenant: str) -> dict:
    return await AudioServicer(gw).worker_request(request, convert.vad_options(request), tenant)


async def _asr_line(gw, request: pb.TranscribeRequest, tenant: str) -> dict:
    return await AudioServicer(gw).worker_request(request, convert.asr_options(request), tenant)


async def _tts_line(gw, request: pb.SynthesizeRequest, tenant: str) -> dict:
    return convert.tts_request(request)


for _method, _request, _batch_task, _prepare in (
        ("Tag", pb.TagRequest, convert.TAG_BATCH_TASK, _tag_line),
        ("DetectSpeech", pb.DetectSpeechRequest, convert.VAD_BATCH_TASK, _vad_line),
        ("Transcribe", pb.TranscribeRequest, convert.ASR_BATCH_TASK, _asr_line),
        ("Synthesize", pb.SynthesizeRequest, convert.TTS_BATCH_TASK, _tts_line)):
    batch_methods.register(batch_methods.BatchMethod("audio", _method, _request, _batch_task,
                                                     _prepare))
