"""`AsyncClient`: the SDK for asyncio programs (many calls in flight from one event loop).

Same settings, auth, deadlines, retry policy and errors as the sync `Client`, and the same
requests (`shared.client.calls`); every call is a coroutine, streams are async iterators.

    async with AsyncClient(ClientSettings.resolve()) as c:
        texts = await asyncio.gather(*(c.ocr_recognize(png) for png in pages))
        async for event in c.textgen_stream("def fib(n):", max_new_tokens=32):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from jobmesh.jobs.v1 import job_pb2, job_service_pb2

from shared.client import calls
from shared.client.channel import SERVICE_CONFIG, USER_AGENT
from shared.client.errors import JobmeshClientError
from shared.client.sdk import DEFAULT_TIMEOUT_S, WAIT_MARGIN_S
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
            self._channels[target] = grpc.aio.insecure_channel(target, options=[
                ("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG),
                ("grpc.primary_user_agent", USER_AGENT)])
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
                        timeout_s: float | None = None):
        return await self.run(calls.audio_tag(audio, top_k, segments), timeout_s)

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

    async def create_batch(self, service: str, method: str, manifest: bytes, *,
                           request_id: str = "", completion_window_s: float | None = None,
                           timeout_s: float | None = None) -> job_pb2.Job:
        """A batch from an inline JSONL manifest (for manifests over the message size limit,
        use the sync client's `create_batch`, which uploads them)."""
        call = calls.create_batch(service, method, request_id, completion_window_s)
        call.request.inline_manifest = manifest
        return (await self.run(call, timeout_s)).job
