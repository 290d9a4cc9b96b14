"""The audio worker's Celery app and tasks (thin: resolve the served models, decode in blocks,
run the tagger, the VAD, Whisper or the voice, record results). A SubmitTranscribe job longer
than JOBMESH_AUDIO_CHUNK_SECONDS fans out, one task per chunk (`long_transcribe`).

Input is decoded and resampled to the model's rate (16 kHz; 32 kHz for a PANNs tagger) block
by block (`decode.iter_blocks`), so a long file never sits decoded whole in memory: the tagger
keeps only the samples its next window needs, the VAD only its recurrent state and one
probability per 32 ms."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import time

import numpy as np
from celery import signals

from services.audio import convert as audio_convert
from shared import metrics
from shared.config import Settings
from shared.errors import InvalidArgument, JobmeshError
from shared.jobs.celery_app import make_celery
from shared.jobs.worker_kit import JobContext, LineContext, WorkerKit
from shared.models.serving import ServedModels
from shared.storage.artifacts import ArtifactRef, tenant_key
from workers.audio import tts as tts_mod
from workers.audio.asr import Transcriber
from workers.audio.decode import AudioError, AudioInfo, AudioLimits, iter_blocks, probe
from workers.audio.long_transcribe import ChunkedTranscription
from workers.audio.metered import MeteredSession, MeteredWhisper
from workers.audio.models import ASR_NAME, LABELS_FILE, VAD_NAME, VOICE_CONFIG, VOICE_NAME
from workers.audio.streaming import TagAccumulator, vad_segments
from workers.audio.taggers import Tagger, load_tagger
from workers.audio.vad import SileroVad

log = logging.getLogger(__name__)

settings = Settings()
app = make_celery("jobmesh-audio-worker", settings)
kit = WorkerKit(app, "audio", settings)
RATE = 16_000
BLOCK_SECONDS = 30.0
LIMITS = AudioLimits(max_seconds=settings.audio_max_seconds, min_rate=settings.audio_min_rate,
                     max_rate=settings.audio_max_rate)
_models: ServedModels | None = None
_taggers: dict[str, tuple[object, Tagger]] = {}
_vad: tuple[object, SileroVad] | None = None
_asr: tuple[str, Transcriber] | None = None
_voice: tuple[object, tts_mod.Synthesizer] | None = None


def models() -> ServedModels:
    global _models
    if _models is None:
        _models = ServedModels.from_settings(settings)
    return _models


def tagger(name: str) -> tuple[Tagger, str]:
    """The tagger a registry name serves now (rebuilt when its serving pointer moves): YAMNet
    or a PANNs model, told by the graph's input (`workers.audio.taggers`)."""
    try:
        runner = models().get(name)
    except JobmeshError as exc:
        if exc.reason == "NOT_FOUND":
            raise InvalidArgument.for_field("model", f"no model {name!r} in the registry",
                                            reason="NOT_FOUND") from exc
        raise
    cached = _taggers.get(name)
    if cached is None or cached[0] is not runner:
        try:
            made = load_tagger(runner.path, runner.path.parent / LABELS_FILE,
                               session=MeteredSession(runner.session, runner.name, "tag_window"))
        except (OSError, ValueError) as exc:  # e.g. `model=silero-vad`: no class map
            raise InvalidArgument.for_field("model", f"{runner.name} is not a sound tagger "
                                            f"({exc})") from exc
        _taggers[name] = (runner, made)
    return _taggers[name][1], runner.name


def vad() -> tuple[SileroVad, str]:
    global _vad
    runner = models().get(VAD_NAME)
    if _vad is None or _vad[0] is not runner:
        _vad = (runner, SileroVad(runner.path, session=MeteredSession(runner.session,
                                                                      runner.name, "vad")))
    return _vad[1], runner.name


def transcriber() -> tuple[Transcriber, str]:
    """Whisper (CTranslate2, int8) for the version the registry serves now."""
    global _asr
    label, folder = models().folder(ASR_NAME)
    if _asr is None or _asr[0] != label:
        threads = int(os.environ.get("JOBMESH_ORT_THREADS", "1"))
        t = Transcriber(folder, threads=threads)
        t.model = MeteredWhisper(t.model, label)
        _asr = (label, t)
    return _asr[1], label


def voice() -> tuple[tts_mod.Synthesizer, str]:
    global _voice
    runner = models().get(VOICE_NAME)
    if _voice is None or _voice[0] is not runner:
        _voice = (runner, tts_mod.Synthesizer(
            runner.path, runner.path.parent / VOICE_CONFIG,
            session=MeteredSession(runner.session, runner.name, "piper")))
    return _voice[1], runner.name


chunked = ChunkedTranscription(kit, LIMITS, transcriber=transcriber, vad=vad)


@signals.worker_process_init.connect
def _warm_up(**_) -> None:
    try:
        t, _ = tagger(audio_convert.DEFAULT_TAGGER)
        t.scores(np.zeros(RATE, np.float32))
        v, _ = vad()
        v.segments(np.zeros(RATE, np.float32))
    except Exception as exc:  # the first job reports the real error
        log.warning("warm-up failed", extra={"error": str(exc), "pid": os.getpid()})


def _input(ctx: JobContext, request: dict) -> tuple[bytes, str]:
    if "audio_b64" in request:
        return base64.b64decode(request["audio_b64"]), "audio"
    if "audio_ref" in request:  # by the caller's reference, or staged by the gateway
        ref = ArtifactRef.from_dict(request["audio_ref"])
        return (ctx.artifacts.get_bytes(ref, max_bytes=settings.max_upload_bytes),
                request.get("staged_as", "audio_ref"))
    raise InvalidArgument.for_field("audio", "is required (or audio_ref)")


def _probe(data: bytes, field: str) -> tuple[AudioInfo, dict]:
    """The header's facts, and the info dict results carry."""
    try:
        info = probe(data, LIMITS)
    except AudioError as exc:
        raise InvalidArgument.for_field(field, exc.problem, reason=exc.reason) from exc
    return info, {"sample_rate": info.sample_rate, "channels": info.channels,
                  "seconds": info.seconds, "format": info.format.upper()}


def _blocks(ctx: JobContext, request: dict, rate: int = RATE,
            source: tuple[bytes, str] | None = None):
    """(info dict, mono blocks at `rate`); progress is seconds decoded of the total.
    `source`: the input's (bytes, field) when already read."""
    data, field = source or _input(ctx, request)
    info, meta = _probe(data, field)

    def gen():
        done = 0.0
        try:
            for block in iter_blocks(data, rate, BLOCK_SECONDS, LIMITS):
                ctx.check_cancelled()
                yield block
                done += len(block) / rate
                ctx.progress(int(done), int(info.seconds + 0.999), "seconds of audio")
        except AudioError as exc:
            raise InvalidArgument.for_field(field, exc.problem, reason=exc.reason) from exc

    return meta, gen()


def _metered(stage: str):
    """Records a request's compute time (decode included) under the model that ran, as
    `compute_duration_seconds{model, stage}` with the method as the stage (`tag`,
    `transcribe`, ...); each model call is recorded too, under its own stage (`tag_window`,
    `vad`, `whisper`, `piper`: `workers.audio.metered`)."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(ctx: JobContext, request: dict, *args) -> dict:
            t0 = time.perf_counter()
            out = fn(ctx, request, *args)
            if isinstance(out, dict):  # not a job handed on to chunk tasks (DEFERRED)
                metrics.COMPUTE_DURATION.labels(model=out.get("model_version", stage),
                                                stage=stage).observe(time.perf_counter() - t0)
            return out
        return run

    return wrap


@_metered("tag")
def tag_one(ctx: JobContext, request: dict) -> dict:
    opts = request.get("options", {})
    t, version = tagger(opts.get("model", audio_convert.DEFAULT_TAGGER))
    meta, blocks = _blocks(ctx, request, t.rate)
    acc = TagAccumulator(t)
    for block in blocks:
        acc.add(block)
    starts, scores = acc.finish()
    k = int(opts.get("top_k", 5))
    mean = scores.mean(axis=0) if len(scores) else np.zeros(len(t.labels), np.float32)
    result = {"top": _top(mean, t.labels, k), "info": meta, "model_version": version}
    if opts.get("segments"):
        result["segments"] = [{"start": float(s), "end": float(s + t.patch_s),
                               "top": _top(row, t.labels, min(k, 3))}
                              for s, row in zip(starts, scores, strict=True)]
    return result


@_metered("detect_speech")
def detect_speech_one(ctx: JobContext, request: dict) -> dict:
    opts = request.get("options", {})
    v, version = vad()
    meta, blocks = _blocks(ctx, request)
    segments = vad_segments(v, blocks, RATE, threshold=float(opts.get("threshold", 0.5)),
                            min_speech_ms=int(opts.get("min_speech_ms", 250)),
                            min_silence_ms=int(opts.get("min_silence_ms", 100)))
    return {"segments": [[round(a, 3), round(b, 3)] for a, b in segments], "info": meta,
            "model_version": version}


@_metered("transcribe")
def transcribe_one(ctx: JobContext, request: dict,
                   source: tuple[bytes, str] | None = None) -> dict:
    """VAD first (streamed), then Whisper over the speech only: silence costs nothing and gets
    no invented words. Whisper needs the samples in memory: sync calls and batch lines hold
    the whole file (bounded by the input limit; an hour at 16 kHz is 230 MB), a SubmitTranscribe
    job only one chunk (`transcribe_job`)."""
    opts = request.get("options", {})
    t, version = transcriber()
    meta, blocks = _blocks(ctx, request, source=source)
    wave = np.concatenate(list(blocks)) if meta["seconds"] else np.zeros(0, np.float32)
    segments = None
    if opts.get("vad", True):
        v, _ = vad()
        segments = vad_segments(v, [wave], RATE, threshold=0.5, min_speech_ms=250,
                                min_silence_ms=100)
    ctx.check_cancelled()
    try:
        out = t.transcribe(wave, segments, language=opts.get("language", "en"),
                           beam_size=int(opts.get("beam_size", 1)))
    except AudioError as exc:
        raise InvalidArgument.for_field(exc.field, exc.problem, reason=exc.reason) from exc
    return {**out, "info": meta, "model_version": version}


def transcribe_job(ctx: JobContext, request: dict):
    """SubmitTranscribe: a file up to JOBMESH_AUDIO_CHUNK_SECONDS runs here; a longer one runs
    as one task per chunk cut in silence (`long_transcribe`), and this returns DEFERRED."""
    data, field = _input(ctx, request)
    info, meta = _probe(data, field)
    if info.seconds <= settings.audio_chunk_seconds:
        return transcribe_one(ctx, request, (data, field))
    return chunked.start(ctx, request, data, field, info, meta)


@_metered("synthesize")
def synthesize_one(ctx: JobContext, request: dict) -> dict:
    s, version = voice()
    try:
        samples = s.synthesize(request["text"], length_scale=request.get("length_scale"))
    except AudioError as exc:
        raise InvalidArgument.for_field(exc.field, exc.problem, reason=exc.reason) from exc
    data = tts_mod.to_wav(samples, s.sample_rate)
    out = {"sample_rate": s.sample_rate, "seconds": len(samples) / s.sample_rate,
           "model_version": version}
    if len(data) <= settings.audio_inline_output_bytes:  # else stored, returned by reference
        out["audio_b64"] = base64.b64encode(data).decode()
    elif isinstance(ctx, LineContext):  # a CreateBatch line: beside the batch's files
        out["audio_ref"] = _line_artifact(ctx, request, data).to_dict()
    else:
        out["audio_ref"] = ctx.put_artifact("speech.wav", data, "audio/wav").to_dict()
    return out


def _line_artifact(ctx: LineContext, request: dict, data: bytes) -> ArtifactRef:
    """A batch line's large WAV under the batch job (`.../jobs/<id>/lines/speech-<hash>.wav`,
    removed with the job), named by the request so a rerun chunk overwrites its own files."""
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:24]
    key = tenant_key(ctx.job.tenant, "jobs", ctx.job.id, "lines", f"speech-{digest}.wav")
    ref = ctx.artifacts.put_bytes(settings.artifacts_bucket, key, data, "audio/wav")
    ctx.store.track_artifact_expiry(ref.bucket, ref.key, ctx.job.expire_time)
    return ref


def _top(row: np.ndarray, labels: list[str], k: int) -> list[dict]:
    idx = np.argsort(-row)[:k]
    return [{"label": labels[i], "index": int(i), "score": float(row[i])} for i in idx]


def _each(fn):
    """A batch function running `fn` per request: YAMNet and the VAD take batch 1, so a batch
    here saves dispatch round trips, not model calls; one bad input fails only its own job."""

    def run(ctxs: list[JobContext], requests: list[dict]) -> list:
        out = []
        for ctx, request in zip(ctxs, requests, strict=True):
            try:
                out.append(fn(ctx, request))
            except JobmeshError as exc:
                out.append(exc)
        return out

    return run


# Each method: a single-job task (Submit* jobs) and a batch task (coalesced sync calls and
# CreateBatch lines, whose output lines are the method's response as proto-JSON).
# A SubmitTranscribe job may fan out; sync calls and batch lines run whole.
for _job, _one, _task, _batch_task, _response in (
        (tag_one, tag_one, audio_convert.TAG_TASK, audio_convert.TAG_BATCH_TASK,
         audio_convert.tag_response),
        (detect_speech_one, detect_speech_one, audio_convert.VAD_TASK,
         audio_convert.VAD_BATCH_TASK, audio_convert.vad_response),
        (transcribe_job, transcribe_one, audio_convert.ASR_TASK, audio_convert.ASR_BATCH_TASK,
         audio_convert.asr_response),
        (synthesize_one, synthesize_one, audio_convert.TTS_TASK, audio_convert.TTS_BATCH_TASK,
         audio_convert.tts_response)):
    kit.task(_task)(_job)
    kit.batch_task(_batch_task, response=_response)(_each(_one))


if settings.diagnostics:
    from workers import diag

    diag.register(kit)
