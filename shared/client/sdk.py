"""`Client`: a small synchronous SDK over the mesh's gRPC contracts.

Every call carries `authorization: Bearer <key>` (when a key is configured) and a deadline
(`timeout_s`, default 60 s, overridable per call; `watch_job` is unbounded unless given one).
A failed call raises `JobmeshClientError`. Domain calls go to `endpoint_for(<domain>)`; jobs and
models to `endpoint_for("jobs")` / `endpoint_for("models")`, which fall back to the default
endpoint (every gateway serves JobService and ModelService).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc
from google.protobuf import descriptor_pool, message, message_factory
from jobmesh.audio.v1 import audio_service_pb2 as audio_pb
from jobmesh.audio.v1 import audio_service_pb2_grpc
from jobmesh.jobs.v1 import (
    batch_service_pb2,
    batch_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)
from jobmesh.models.v1 import model_service_pb2, model_service_pb2_grpc
from jobmesh.ocr.v1 import ocr_service_pb2, ocr_service_pb2_grpc
from jobmesh.textgen.v1 import textgen_service_pb2 as textgen_pb
from jobmesh.textgen.v1 import textgen_service_pb2_grpc

from shared.client.channel import TrackedChannel
from shared.client.errors import JobmeshClientError
from shared.client.settings import ClientSettings

DEFAULT_TIMEOUT_S = 60.0
INLINE_LIMIT = 4 * 1024 * 1024  # manifests above this go through a presigned upload
WAIT_MARGIN_S = 10.0  # the WaitJob deadline exceeds the wait itself, so the server answers first
TERMINAL = (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)


def job_state(value: int | str) -> int:
    """A `JobState` from its number or name (`running`, `RUNNING`, `JOB_STATE_RUNNING`);
    raises ValueError for anything else."""
    if isinstance(value, int):
        job_pb2.JobState.Name(value)  # raises ValueError for an unknown number
        return value
    name = value.strip().upper()
    try:
        return job_pb2.JobState.Value(name if name.startswith("JOB_STATE_") else
                                      f"JOB_STATE_{name}")
    except ValueError:
        names = ", ".join(n.removeprefix("JOB_STATE_") for n in job_pb2.JobState.keys()[1:])
        raise ValueError(f"unknown job state {value!r} (one of {names})") from None


def job_response(job: job_pb2.Job) -> message.Message | None:
    """The job's unpacked `result.response` (e.g. an OCR RecognizeResponse), or None when the
    job has none or its type is unknown to this client."""
    if not job.HasField("result") or not job.result.HasField("response"):
        return None
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(job.result.response.TypeName())
    except KeyError:
        return None
    out = message_factory.GetMessageClass(desc)()
    job.result.response.Unpack(out)
    return out


class Client:
    """Holds one channel per endpoint; use as a context manager or call `close()`."""

    def __init__(self, settings: ClientSettings | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        self.settings = settings if settings is not None else ClientSettings.resolve()
        self.timeout_s = timeout_s
        key = self.settings.api_key
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self._channels: dict[str, TrackedChannel] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def _channel(self, domain: str) -> TrackedChannel:
        target = self.settings.endpoint_for(domain)
        if target not in self._channels:
            self._channels[target] = TrackedChannel(target)
        return self._channels[target]

    def _call(self, domain: str, stub: Callable, method: str, request: message.Message,
              timeout_s: float | None = None):
        ch = self._channel(domain)
        fn = getattr(stub(ch.channel), method)
        try:
            return fn(request, metadata=self._metadata,
                      timeout=self.timeout_s if timeout_s is None else timeout_s)
        except grpc.RpcError as err:
            raise JobmeshClientError.from_rpc_error(
                err, endpoint=ch.target, connected=ch.ever_connected) from None

    # Text generation

    @staticmethod
    def _generation(prompt: str | None, messages: list[dict] | None, params: dict,
                    cls=textgen_pb.GenerateRequest):
        """A Generate(Stream)Request from a prompt or chat messages and parameter keywords
        (max_new_tokens, temperature, top_p, top_k, seed, stop, speculation)."""
        req = cls(parameters=_params(**params))
        if messages is not None:
            req.conversation.messages.extend(textgen_pb.ChatMessage(**m) for m in messages)
        else:
            req.prompt = prompt or ""
        return req

    def textgen_generate(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                         timeout_s: float | None = None, **params
                         ) -> textgen_pb.GenerateResponse:
        """Generates a completion (waits for it)."""
        return self._call("textgen", textgen_service_pb2_grpc.TextGenerationServiceStub,
                          "Generate", self._generation(prompt, messages, params), timeout_s)

    def textgen_stream(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                       timeout_s: float | None = None, **params
                       ) -> Iterator[textgen_pb.GenerateStreamResponse]:
        """Token deltas as they are decoded, then one message with `final` set. Closing the
        iterator cancels the stream (and the server stops decoding)."""
        ch = self._channel("textgen")
        call = textgen_service_pb2_grpc.TextGenerationServiceStub(ch.channel).GenerateStream(
            self._generation(prompt, messages, params, textgen_pb.GenerateStreamRequest),
            metadata=self._metadata, timeout=self.timeout_s if timeout_s is None else timeout_s)
        try:
            yield from call
        except grpc.RpcError as err:
            raise JobmeshClientError.from_rpc_error(
                err, endpoint=ch.target, connected=ch.ever_connected) from None

    # OCR

    def ocr_recognize(self, image: bytes, classify_angle: bool = False,
                      min_confidence: float = 0.0, *, long_lines: bool = True,
                      timeout_s: float | None = None) -> ocr_service_pb2.RecognizeResponse:
        """Recognizes one encoded image and waits for the text (min_confidence 0 = default;
        long_lines=False turns tiled detection and windowed recognition off)."""
        options = ocr_service_pb2.RecognizeOptions(classify_angle=classify_angle,
                                                   min_confidence=min_confidence,
                                                   disable_long_lines=not long_lines)
        req = ocr_service_pb2.RecognizeRequest(image=image, options=options)
        return self._call("ocr", ocr_service_pb2_grpc.OcrServiceStub, "Recognize", req, timeout_s)

    def ocr_submit(self, image: bytes, request_id: str = "", classify_angle: bool = False,
                   min_confidence: float = 0.0, *, long_lines: bool = True,
                   timeout_s: float | None = None) -> job_pb2.Job:
        """Queues recognition as a job; a repeated `request_id` returns the first job."""
        req = ocr_service_pb2.SubmitRecognizeRequest(
            request_id=request_id, image=image, options=ocr_service_pb2.RecognizeOptions(
                classify_angle=classify_angle, min_confidence=min_confidence,
                disable_long_lines=not long_lines))
        return self._call("ocr", ocr_service_pb2_grpc.OcrServiceStub, "SubmitRecognize", req,
                          timeout_s).job

    def upload(self, service: str, data: bytes, content_type: str = "application/octet-stream",
               *, timeout_s: float | None = None):
        """Uploads an input too large to send inline to `service` (`ocr` or `audio`:
        CreateUpload, then a PUT to the presigned URL); returns the ArtifactRef to pass as
        `image_ref` / `audio_ref`."""
        stub, pb = {"ocr": (ocr_service_pb2_grpc.OcrServiceStub, ocr_service_pb2),
                    "audio": (audio_service_pb2_grpc.AudioServiceStub, audio_pb)}[service]
        resp = self._call(service, stub, "CreateUpload",
                          pb.CreateUploadRequest(content_type=content_type, size=len(data)),
                          timeout_s)
        http_put(resp.upload_url, data, content_type, timeout_s or self.timeout_s)
        return resp.ref

    # Audio

    def audio_tag(self, audio: bytes, *, top_k: int = 0, segments: bool = False,
                  model: str = "", timeout_s: float | None = None) -> audio_pb.TagResponse:
        """Tags the sounds of one encoded file (top_k 0 = the server's default, 5)."""
        req = audio_pb.TagRequest(audio=audio, top_k=top_k, segments=segments, model=model)
        return self._call("audio", audio_service_pb2_grpc.AudioServiceStub, "Tag", req,
                          timeout_s)

    def audio_detect_speech(self, audio: bytes, *, threshold: float = 0.0,
                            min_speech_ms: int = 0, min_silence_ms: int = 0,
                            timeout_s: float | None = None) -> audio_pb.DetectSpeechResponse:
        """Speech segments of one encoded file (zero values = the server's defaults)."""
        req = audio_pb.DetectSpeechRequest(audio=audio, threshold=threshold,
                                           min_speech_ms=min_speech_ms,
                                           min_silence_ms=min_silence_ms)
        return self._call("audio", audio_service_pb2_grpc.AudioServiceStub, "DetectSpeech",
                          req, timeout_s)

    def audio_transcribe(self, audio: bytes, *, vad: bool = True, beam_size: int = 0,
                         timeout_s: float | None = None) -> audio_pb.TranscribeResponse:
        """English speech to text with word times (VAD pre-segmentation unless vad=False)."""
        req = audio_pb.TranscribeRequest(audio=audio, disable_vad=not vad, beam_size=beam_size)
        return self._call("audio", audio_service_pb2_grpc.AudioServiceStub, "Transcribe", req,
                          timeout_s)

    def audio_synthesize(self, text: str, *, length_scale: float = 0.0,
                         timeout_s: float | None = None) -> audio_pb.SynthesizeResponse:
        """English text to a WAV file (`audio` bytes, or `audio_ref` when over 4 MiB)."""
        req = audio_pb.SynthesizeRequest(text=text, length_scale=length_scale)
        return self._call("audio", audio_service_pb2_grpc.AudioServiceStub, "Synthesize", req,
                          timeout_s)

    # Batches (each service's gateway serves the batches of its methods)

    def create_batch(self, service: str, method: str, manifest: bytes, *, request_id: str = "",
                     completion_window_s: float | None = None, inline_limit: int = INLINE_LIMIT,
                     timeout_s: float | None = None) -> job_pb2.Job:
        """Creates a batch from JSONL `manifest` bytes (`{"custom_id", "body"}` per line): sent
        inline when small, else uploaded through a presigned URL first. A manifest with bad
        lines raises INVALID_ARGUMENT with one field violation per line (`line N: ...`)."""
        stub = batch_service_pb2_grpc.BatchServiceStub
        req = batch_service_pb2.CreateBatchRequest(request_id=request_id, service=service,
                                                   method=method)
        if completion_window_s is not None:
            req.completion_window.FromNanoseconds(int(completion_window_s * 1e9))
        if len(manifest) <= inline_limit:
            req.inline_manifest = manifest
        else:
            up = self._call(service, stub, "CreateManifestUpload",
                            batch_service_pb2.CreateManifestUploadRequest(size=len(manifest)),
                            timeout_s)
            http_put(up.upload_url, manifest, "application/jsonl", timeout_s or self.timeout_s)
            req.input_file.CopyFrom(up.ref)
        return self._call(service, stub, "CreateBatch", req, timeout_s).job

    def batch_results(self, name: str, service: str = "jobs", *, timeout_s: float | None = None
                      ) -> tuple[job_pb2.Job, list[dict], list[dict]]:
        """(job, output lines, error lines) of a batch, downloaded through presigned URLs;
        both lists are empty until the batch's phase is DONE. Any gateway answers."""
        import json

        resp = self._call(service, batch_service_pb2_grpc.BatchServiceStub, "GetBatchResults",
                          batch_service_pb2.GetBatchResultsRequest(name=name), timeout_s)
        out = []
        for url in (resp.output_url, resp.error_url):
            data = http_get(url, timeout_s or self.timeout_s) if url else b""
            out.append([json.loads(x) for x in data.decode().splitlines() if x.strip()])
        return resp.job, out[0], out[1]

    # Jobs

    def _jobs(self, method: str, request: message.Message, timeout_s: float | None = None):
        return self._call("jobs", job_service_pb2_grpc.JobServiceStub, method, request, timeout_s)

    def get_job(self, name: str, *, timeout_s: float | None = None) -> job_pb2.Job:
        return self._jobs("GetJob", job_service_pb2.GetJobRequest(name=name), timeout_s).job

    def list_jobs(self, states: Iterable[int | str] | None = None, domain: str = "",
                  page_size: int = 0, *, timeout_s: float | None = None
                  ) -> Iterator[job_pb2.Job]:
        """The caller's jobs, newest first, across all pages (`page_size` per call)."""
        req = job_service_pb2.ListJobsRequest(
            page_size=page_size, domain=domain, states=[job_state(s) for s in states or ()])
        while True:
            resp = self._jobs("ListJobs", req, timeout_s)
            yield from resp.jobs
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    def cancel_job(self, name: str, *, timeout_s: float | None = None) -> job_pb2.Job:
        return self._jobs("CancelJob", job_service_pb2.CancelJobRequest(name=name), timeout_s).job

    def wait_job(self, name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> job_pb2.Job:
        """Blocks until the job is done or `timeout_s` passes; returns the job either way
        (check `job.done`)."""
        req = job_service_pb2.WaitJobRequest(name=name)
        req.timeout.FromNanoseconds(int(timeout_s * 1e9))
        return self._jobs("WaitJob", req, timeout_s + WAIT_MARGIN_S).job

    def watch_job(self, name: str, *, timeout_s: float | None = None
                  ) -> Iterator[job_service_pb2.WatchJobResponse]:
        """Events until the job is done: first a SNAPSHOT, then state and progress changes.
        Unbounded unless `timeout_s` is given; closing the iterator cancels the stream."""
        ch = self._channel("jobs")
        call = job_service_pb2_grpc.JobServiceStub(ch.channel).WatchJob(
            job_service_pb2.WatchJobRequest(name=name), metadata=self._metadata,
            timeout=timeout_s)
        try:
            yield from call
        except grpc.RpcError as err:
            raise JobmeshClientError.from_rpc_error(
                err, endpoint=ch.target, connected=ch.ever_connected) from None
        finally:
            call.cancel()

    def delete_job(self, name: str, *, timeout_s: float | None = None) -> None:
        self._jobs("DeleteJob", job_service_pb2.DeleteJobRequest(name=name), timeout_s)

    # Models

    def list_models(self, page_size: int = 0, *, timeout_s: float | None = None
                    ) -> Iterator[model_service_pb2.Model]:
        """Every registered model, across all pages."""
        req = model_service_pb2.ListModelsRequest(page_size=page_size)
        while True:
            resp = self._call("models", model_service_pb2_grpc.ModelServiceStub, "ListModels",
                              req, timeout_s)
            yield from resp.models
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    def get_model(self, name: str, *, timeout_s: float | None = None
                  ) -> model_service_pb2.Model:
        return self._call("models", model_service_pb2_grpc.ModelServiceStub, "GetModel",
                          model_service_pb2.GetModelRequest(name=name), timeout_s).model


def http_put(url: str, data: bytes, content_type: str, timeout_s: float) -> None:
    import urllib.request

    req = urllib.request.Request(url, data=data, method="PUT",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except OSError as exc:
        raise JobmeshClientError(grpc.StatusCode.UNAVAILABLE, f"upload failed: {exc}",
                                 reason="UPLOAD_FAILED") from None


def http_get(url: str, timeout_s: float) -> bytes:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.read()
    except OSError as exc:
        raise JobmeshClientError(grpc.StatusCode.UNAVAILABLE, f"download failed: {exc}",
                                 reason="DOWNLOAD_FAILED") from None


_SPECULATION = {"off": textgen_pb.SPECULATION_OFF, "auto": textgen_pb.SPECULATION_AUTO,
                "token_recycling": textgen_pb.SPECULATION_TOKEN_RECYCLING,
                "prompt_lookup": textgen_pb.SPECULATION_PROMPT_LOOKUP}


def _params(max_new_tokens: int = 0, temperature: float = 0.0, top_p: float = 0.0,
            top_k: int = 0, seed: int | None = None, stop: list[str] | None = None,
            speculation: str = "auto") -> textgen_pb.GenerationParameters:
    p = textgen_pb.GenerationParameters(max_new_tokens=max_new_tokens, temperature=temperature,
                                        top_p=top_p, top_k=top_k, stop=stop or [],
                                        speculation=_SPECULATION[speculation])
    if seed is not None:
        p.seed = seed
    return p
