"""`AsyncClient`: the SDK for asyncio programs (many calls in flight from one event loop).

Same settings, auth, deadlines, retry policy and errors as the sync `Client`, and the same
requests (`shared.client.calls`); every call is a coroutine, streams are async iterators.

    async with AsyncClient(ClientSettings.resolve()) as c:
        texts = await asyncio.gather(*(c.ocr_recognize(png) for png in pages))
        async for event in c.textgen_stream("def fib(n):", max_new_tokens=32):
            ...
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
from jobmesh.jobs.v1 import job_pb2, job_service_pb2

from shared.client import calls
from shared.client.channel import aio_channel
from shared.client.errors import JobmeshClientError
from shared.client.sdk import (
    DEFAULT_TIMEOUT_S,
    INLINE_LIMIT,
    WAIT_MARGIN_S,
    http_get,
    http_put,
    job_state,
)
from shared.client.settings import ClientSettings


class AsyncClient:
    def __init__(self, settings: ClientSettings | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        self.settings = settings if settings is not None else ClientSettings.resolve()
        self.timeout_s = timeout_s
        key = self.settings.api_key
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    def _channel(self, domain: str) -> tuple[str, grpc.aio.Channel]:
        target = self.settings.endpoint_for(domain)
        if target not in self._channels:
            self._channels[target] = aio_channel(target, self.settings)
        return target, self._channels[target]

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    async def run(self, call: calls.Call, timeout_s: float | None = None):
        """Sends one unary `Call` and returns its response; raises JobmeshClientError."""
        target, ch = self._channel(call.domain)
        fn = getattr(call.stub(ch), call.method)
        try:
            return await fn(call.request, metadata=self._metadata,
                            timeout=self._timeout(timeout_s))
        except grpc.RpcError as err:
            raise JobmeshClientError.from_rpc_error(err, endpoint=target) from None

    async def _stream(self, call: calls.Call, timeout_s: float | None) -> AsyncIterator:
        target, ch = self._channel(call.domain)
        stream = getattr(call.stub(ch), call.method)(call.request, metadata=self._metadata,
                                                     timeout=timeout_s)
        try:
            async for item in stream:
                yield item
        except grpc.RpcError as err:
            raise JobmeshClientError.from_rpc_error(err, endpoint=target) from None
        finally:
            stream.cancel()

    # Domains

    async def ocr_recognize(self, image: bytes, classify_angle: bool = False,
                            min_confidence: float = 0.0, *, long_lines: bool = True,
                            timeout_s: float | None = None):
        return await self.run(calls.ocr_recognize(image, classify_angle, min_confidence,
                                                  long_lines), timeout_s)

    async def ocr_submit(self, image: bytes, request_id: str = "", *,
                         timeout_s: float | None = None) -> job_pb2.Job:
        return (await self.run(calls.ocr_submit(image, request_id), timeout_s)).job

    async def textgen_generate(self, prompt: str | None = None, *,
                               messages: list[dict] | None = None,
                               timeout_s: float | None = None, **params):
        return await self.run(calls.textgen_generate(prompt, messages, params), timeout_s)

    def textgen_stream(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                       timeout_s: float | None = None, **params) -> AsyncIterator:
        """Token deltas, then one message with `final` set; leaving the loop cancels the
        stream (and the server stops decoding)."""
        return self._stream(calls.textgen_stream(prompt, messages, params),
                            self._timeout(timeout_s))

    async def audio_tag(self, audio: bytes, *, top_k: int = 0, segments: bool = False,
                        model: str = "", timeout_s: float | None = None):
        return await self.run(calls.audio_tag(audio, top_k, segments, model), timeout_s)

    async def audio_detect_speech(self, audio: bytes, *, threshold: float = 0.0,
                                  min_speech_ms: int = 0, min_silence_ms: int = 0,
                                  timeout_s: float | None = None):
        return await self.run(calls.audio_detect_speech(audio, threshold, min_speech_ms,
                                                        min_silence_ms), timeout_s)

    async def audio_transcribe(self, audio: bytes, *, vad: bool = True,
                               timeout_s: float | None = None):
        return await self.run(calls.audio_transcribe(audio, vad), timeout_s)

    async def audio_synthesize(self, text: str, *, timeout_s: float | None = None):
        return await self.run(calls.audio_synthesize(text), timeout_s)

    # Jobs and batches

    async def get_job(self, name: str, *, timeout_s: float | None = None) -> job_pb2.Job:
        return (await self.run(calls.jobs("GetJob", job_service_pb2.GetJobRequest(name=name)),
                               timeout_s)).job

    async def cancel_job(self, name: str, *, timeout_s: float | None = None) -> job_pb2.Job:
        return (await self.run(calls.jobs("CancelJob",
                                          job_service_pb2.CancelJobRequest(name=name)),
                               timeout_s)).job

    async def wait_job(self, name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> job_pb2.Job:
        """The job once done, or as it is when `timeout_s` passes (check `job.done`)."""
        return (await self.run(calls.wait_job(name, timeout_s),
                               timeout_s + WAIT_MARGIN_S)).job

    def watch_job(self, name: str, *, timeout_s: float | None = None) -> AsyncIterator:
        """Events until the job is done (SNAPSHOT first); unbounded unless `timeout_s`."""
        return self._stream(calls.jobs("WatchJob", job_service_pb2.WatchJobRequest(name=name)),
                            timeout_s)

    async def list_jobs(self, states=None, domain: str = "", page_size: int = 0, *,
                        timeout_s: float | None = None) -> AsyncIterator[job_pb2.Job]:
        """The caller's jobs, newest first, across all pages (`page_size` per call)."""
        req = job_service_pb2.ListJobsRequest(
            page_size=page_size, domain=domain, states=[job_state(s) for s in states or ()])
        while True:
            resp = await self.run(calls.jobs("ListJobs", req), timeout_s)
            for job in resp.jobs:
                yield job
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    async def delete_job(self, name: str, *, timeout_s: float | None = None) -> None:
        await self.run(calls.jobs("DeleteJob", job_service_pb2.DeleteJobRequest(name=name)),
                       timeout_s)

    # Artifacts: the presigned PUT/GET runs in a thread so the event loop keeps serving.

    async def upload(self, service: str, data: bytes,
                     content_type: str = "application/octet-stream", *,
                     timeout_s: float | None = None):
        """Uploads an input too large to send inline to `service` (`ocr` or `audio`);
        returns the ArtifactRef to pass as `image_ref` / `audio_ref`."""
        resp = await self.run(calls.create_upload(service, content_type, len(data)), timeout_s)
        await asyncio.to_thread(http_put, resp.upload_url, data, content_type,
                                self._timeout(timeout_s))
        return resp.ref

    async def create_batch(self, service: str, method: str, manifest: bytes, *,
                           request_id: str = "", completion_window_s: float | None = None,
                           inline_limit: int = INLINE_LIMIT,
                           timeout_s: float | None = None) -> job_pb2.Job:
        """A batch from JSONL `manifest` bytes: sent inline when small, else uploaded through
        a presigned URL first (as the sync client's `create_batch`)."""
        call = calls.create_batch(service, method, request_id, completion_window_s)
        if len(manifest) <= inline_limit:
            call.request.inline_manifest = manifest
        else:
            up = await self.run(calls.manifest_upload(service, len(manifest)), timeout_s)
            await asyncio.to_thread(http_put, up.upload_url, manifest, "application/jsonl",
                                    self._timeout(timeout_s))
            call.request.input_file.CopyFrom(up.ref)
        return (await self.run(call, timeout_s)).job

    async def batch_results(self, name: str, service: str = "jobs", *,
                            timeout_s: float | None = None
                            ) -> tuple[job_pb2.Job, list[dict], list[dict]]:
        """(job, output lines, error lines) of a batch; both lists are empty until the
        batch's phase is DONE."""
        resp = await self.run(calls.batch_results(service, name), timeout_s)
        out = []
        for url in (resp.output_url, resp.error_url):
            data = (await asyncio.to_thread(http_get, url, self._timeout(timeout_s))
                    if url else b"")
            out.append([json.loads(x) for x in data.decode().splitlines() if x.strip()])
        return resp.job, out[0], out[1]
