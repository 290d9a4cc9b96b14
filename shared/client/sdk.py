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
from jobmesh.jobs.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)
from jobmesh.models.v1 import model_service_pb2, model_service_pb2_grpc
from jobmesh.ocr.v1 import ocr_service_pb2
from jobmesh.textgen.v1 import textgen_service_pb2 as textgen_pb

from shared.client import calls
from shared.client.channel import TrackedChannel, channel_credentials
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
            self._channels[target] = TrackedChannel(target, channel_credentials(self.settings))
        return self._channels[target]

    def run(self, call: calls.Call, timeout_s: float | None = None):
        """Sends one unary `Call` (see `shared.client.calls`) and returns its response."""
        return self._call(call.domain, call.stub, call.method, call.request, timeout_s)

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

    def textgen_generate(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                         timeout_s: float | None = None, **params
                         ) -> textgen_pb.GenerateResponse:
        """Generates a completion (waits for it)."""
        return self.run(calls.textgen_generate(prompt, messages, params), timeout_s)

    def textgen_stream(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                       timeout_s: float | None = None, **params
                       ) -> Iterator[textgen_pb.GenerateStreamResponse]:
        """Token deltas as they are decoded, then one message with `final` set. Closing the
        iterator cancels the stream (and the server stops decoding)."""
        spec = calls.textgen_stream(prompt, messages, params)
        ch = self._channel(spec.domain)
        call = spec.stub(ch.channel).GenerateStream(
            spec.request, metadata=self._metadata,
            timeout=self.timeout_s if timeout_s is None else timeout_s)
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
        return self.run(calls.ocr_recognize(image, classify_angle, min_confidence, long_lines),
                        timeout_s)

    def ocr_submit(self, image: bytes, request_id: str = "", classify_angle: bool = False,
                   min_confidence: float = 0.0, *, long_lines: bool = True,
                   timeout_s: float | None = None) -> job_pb2.Job:
        """Queues recognition as a job; a repeated `request_id` returns the first job."""
        return self.run(calls.ocr_submit(image, request_id, classify_angle, min_confidence,
                                         long_lines), timeout_s).job

    def upload(self, service: str, data: bytes, content_type: str = "application/octet-stream",
               *, timeout_s: float | None = None):
        """Uploads an input too large to send inline to `service` (`ocr` or `audio`:
        CreateUpload, then a PUT to the presigned URL); returns the ArtifactRef to pass as
        `image_ref` / `audio_ref`."""
        resp = self.run(calls.create_upload(service, content_type, len(data)), timeout_s)
        http_put(resp.upload_url, data, content_type, timeout_s or self.timeout_s)
        return resp.ref

    # Curation

    def curation_upload(self, path: str, data: bytes, *, timeout_s: float | None = None):
        """Puts one shard at `data/<path>` in the caller's space (CreateShardUpload, then a
        PUT to the presigned URL); returns its ArtifactRef."""
        resp = self.run(calls.curation_upload(path, len(data)), timeout_s)
        http_put(resp.upload_url, data, "application/octet-stream",
                 timeout_s or self.timeout_s)
        return resp.ref

    def curation_submit(self, pipeline: list[dict], output_prefix: str, *,
                        input_prefix: str = "", text_field: str = "", id_field: str = "",
                        request_id: str = "", timeout_s: float | None = None):
        """Queues a curation job over the shards under `input_prefix`; returns the Job."""
        return self.run(calls.curation_submit(pipeline, output_prefix, input_prefix=input_prefix,
                                              text_field=text_field, id_field=id_field,
                                              request_id=request_id), timeout_s).job

    def curation_score(self, texts: list[str], *, timeout_s: float | None = None):
        return self.run(calls.curation_score(texts), timeout_s).scores

    def curation_report(self, name: str, *, timeout_s: float | None = None):
        return self.run(calls.curation_report(name), timeout_s)

    def curation_steps(self, *, timeout_s: float | None = None):
        return self.run(calls.curation_steps(), timeout_s).steps

    # Compression

    def compression_submit(self, model: str, recipe: str, *, timeout_s: float | None = None,
                           **options):
        """Queues a compression job (admin key); returns the Job. `options`: version, samples,
        calibration_samples, promote, max_metric_delta, max_latency_ratio, target_version,
        request_id, and the recipe's own (op_types, per_tensor, calibration, method, include,
        fp16; compeft: density, alphas, task_vector, validation_texts)."""
        recipe_keys = ("op_types", "per_tensor", "method", "include", "fp16", "calibration",
                       "density", "alphas", "task_vector", "validation_texts")
        spec = calls.compression_recipe(recipe, **{k: v for k, v in options.items()
                                                   if k in recipe_keys})
        rest = {k: v for k, v in options.items() if k not in recipe_keys}
        return self.run(calls.compression_submit(model, spec, **rest), timeout_s).job

    def compression_recipes(self, *, timeout_s: float | None = None):
        return self.run(calls.compression_recipes(), timeout_s).recipes

    # Audio

    def audio_tag(self, audio: bytes, *, top_k: int = 0, segments: bool = False,
                  model: str = "", timeout_s: float | None = None) -> audio_pb.TagResponse:
        """Tags the sounds of one encoded file (top_k 0 = the server's default, 5)."""
        return self.run(calls.audio_tag(audio, top_k, segments, model), timeout_s)

    def audio_detect_speech(self, audio: bytes, *, threshold: float = 0.0,
                            min_speech_ms: int = 0, min_silence_ms: int = 0,
                            timeout_s: float | None = None) -> audio_pb.DetectSpeechResponse:
        """Speech segments of one encoded file (zero values = the server's defaults)."""
        return self.run(calls.audio_detect_speech(audio, threshold, min_speech_ms,
                                                  min_silence_ms), timeout_s)

    def audio_transcribe(self, audio: bytes, *, vad: bool = True, beam_size: int = 0,
                         timeout_s: float | None = None) -> audio_pb.TranscribeResponse:
        """English speech to text with word times (VAD pre-segmentation unless vad=False)."""
        return self.run(calls.audio_transcribe(audio, vad, beam_size), timeout_s)

    def audio_synthesize(self, text: str, *, length_scale: float = 0.0,
                         timeout_s: float | None = None) -> audio_pb.SynthesizeResponse:
        """English text to a WAV file (`audio` bytes, or `audio_ref` when over 4 MiB)."""
        return self.run(calls.audio_synthesize(text, length_scale), timeout_s)

    # Batches (each service's gateway serves the batches of its methods)

    def create_batch(self, service: str, method: str, manifest: bytes, *, request_id: str = "",
                     completion_window_s: float | None = None, inline_limit: int = INLINE_LIMIT,
                     timeout_s: float | None = None) -> job_pb2.Job:
        """Creates a batch from JSONL `manifest` bytes (`{"custom_id", "body"}` per line): sent
        inline when small, else uploaded through a presigned URL first. A manifest with bad
        lines raises INVALID_ARGUMENT with one field violation per line (`line N: ...`)."""
        call = calls.create_batch(service, method, request_id, completion_window_s)
        if len(manifest) <= inline_limit:
            call.request.inline_manifest = manifest
        else:
            up = self.run(calls.manifest_upload(service, len(manifest)), timeout_s)
            http_put(up.upload_url, manifest, "application/jsonl", timeout_s or self.timeout_s)
            call.request.input_file.CopyFrom(up.ref)
        return self.run(call, timeout_s).job

    def batch_results(self, name: str, service: str = "jobs", *, timeout_s: float | None = None
                      ) -> tuple[job_pb2.Job, list[dict], list[dict]]:
        """(job, output lines, error lines) of a batch, downloaded through presigned URLs;
        both lists are empty until the batch's phase is DONE. Any gateway answers."""
        import json

        resp = self.run(calls.batch_results(service, name), timeout_s)
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
        return self.run(calls.wait_job(name, timeout_s), timeout_s + WAIT_MARGIN_S).job

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

    def promote_model(self, name: str, version: str, *, timeout_s: float | None = None
                      ) -> model_service_pb2.PromoteModelResponse:
        """Points `serving` at `version` (admin key); workers switch within their refresh."""
        return self._call("models", model_service_pb2_grpc.ModelServiceStub, "PromoteModel",
                          model_service_pb2.PromoteModelRequest(name=name, version=version),
                          timeout_s)

    def rollback_model(self, name: str, *, timeout_s: float | None = None
                       ) -> model_service_pb2.RollbackModelResponse:
        """Points `serving` back at the version served before the last promotion (admin)."""
        return self._call("models", model_service_pb2_grpc.ModelServiceStub, "RollbackModel",
                          model_service_pb2.RollbackModelRequest(name=name), timeout_s)

    def register_model(self, name: str, version: str, files: dict[str, bytes], *,
                       serve: bool = False, source: str = "", parent_version: str = "",
                       timeout_s: float | None = None) -> model_service_pb2.Model:
        """Uploads each file (path -> bytes) with a presigned URL, then registers the version
        (admin key)."""
        stub = model_service_pb2_grpc.ModelServiceStub
        entries = []
        for path, data in files.items():
            up = self._call("models", stub, "CreateModelUpload",
                            model_service_pb2.CreateModelUploadRequest(size=len(data)), timeout_s)
            http_put(up.upload_url, data, "application/octet-stream",
                     timeout_s or self.timeout_s)
            entries.append(model_service_pb2.RegisterFile(path=path, source=up.ref))
        req = model_service_pb2.RegisterModelRequest(
            name=name, version=version, files=entries, serve=serve,
            provenance=model_service_pb2.Provenance(source=source,
                                                    parent_version=parent_version))
        return self._call("models", stub, "RegisterModel", req, timeout_s).model


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
