"""AudioService messages ⇄ the JSON the audio worker takes and returns. The only audio code that
touches `*_pb2`; request fields are validated here so errors name proto fields."""

from __future__ import annotations

import base64

from jobmesh.audio.v1 import audio_service_pb2 as pb

from shared.errors import InvalidArgument
from shared.jobs.convert import artifact_pb
from shared.storage.artifacts import ArtifactRef

TAG_TASK = "jobmesh.audio.v1.tag"
TAG_BATCH_TASK = "jobmesh.audio.v1.tag_batch"  # coalesced sync calls and batch-job lines
VAD_TASK = "jobmesh.audio.v1.detect_speech"
VAD_BATCH_TASK = "jobmesh.audio.v1.detect_speech_batch"
ASR_TASK = "jobmesh.audio.v1.transcribe"
ASR_BATCH_TASK = "jobmesh.audio.v1.transcribe_batch"
TTS_TASK = "jobmesh.audio.v1.synthesize"
TTS_BATCH_TASK = "jobmesh.audio.v1.synthesize_batch"
DEFAULT_TAGGER = "yamnet"
MAX_TEXT_CHARS = 5000
MAX_TOP_K = 50


def source_of(request, prefix: str = "") -> tuple[str, bytes | ArtifactRef]:
    """("audio", bytes) or ("audio_ref", ArtifactRef); raises naming the missing field."""
    which = request.WhichOneof("source")
    if which is None:
        raise InvalidArgument.for_field(f"{prefix}audio", "is required (or audio_ref)")
    if which == "audio":
        if not request.audio:
            raise InvalidArgument.for_field(f"{prefix}audio", "is empty")
        return "audio", request.audio
    ref = request.audio_ref
    if not ref.bucket or not ref.key:
        raise InvalidArgument.for_field(f"{prefix}audio_ref", "needs bucket and key")
    return "audio_ref", ArtifactRef(ref.bucket, ref.key, ref.sha256, ref.size, ref.content_type)


def tag_options(request: pb.TagRequest, prefix: str = "") -> dict:
    k = request.top_k or 5
    if not 1 <= k <= MAX_TOP_K:
        raise InvalidArgument.for_field(f"{prefix}top_k", f"must be within 1..{MAX_TOP_K}")
    model = request.model or DEFAULT_TAGGER
    if not model.replace("-", "").replace("_", "").isalnum() or len(model) > 64:
        raise InvalidArgument.for_field(f"{prefix}model", "must be a registry model name")
    return {"top_k": k, "segments": bool(request.segments), "model": model}


def vad_options(request: pb.DetectSpeechRequest, prefix: str = "") -> dict:
    t = request.threshold or 0.5
    if not 0.0 < t < 1.0:
        raise InvalidArgument.for_field(f"{prefix}threshold", "must be within (0, 1)")
    speech, silence = request.min_speech_ms or 250, request.min_silence_ms or 100
    for name, v in (("min_speech_ms", speech), ("min_silence_ms", silence)):
        if not 0 < v <= 60_000:
            raise InvalidArgument.for_field(f"{prefix}{name}", "must be within 1..60000")
    return {"threshold": t, "min_speech_ms": speech, "min_silence_ms": silence}


def asr_options(request: pb.TranscribeRequest, prefix: str = "") -> dict:
    beam = request.beam_size or 1
    if not 1 <= beam <= 5:
        raise InvalidArgument.for_field(f"{prefix}beam_size", "must be within 1..5")
    language = request.language or "en"
    if language != "en":
        raise InvalidArgument.for_field(f"{prefix}language",
                                        "must be `en`: the shipped model is English-only")
    return {"vad": not request.disable_vad, "beam_size": beam, "language": language}


def tts_request(request: pb.SynthesizeRequest, prefix: str = "") -> dict:
    text = request.text.strip()
    if not text:
        raise InvalidArgument.for_field(f"{prefix}text", "is empty")
    if len(request.text) > MAX_TEXT_CHARS:
        raise InvalidArgument.for_field(f"{prefix}text", f"is {len(request.text)} characters; "
                                        f"the limit is {MAX_TEXT_CHARS}",
                                        reason="INPUT_TOO_LARGE")
    scale = request.length_scale
    if scale and not 0.25 <= scale <= 4.0:
        raise InvalidArgument.for_field(f"{prefix}length_scale", "must be within 0.25..4")
    return {"text": request.text, "length_scale": scale or None}


def worker_request(data: bytes | None, ref: ArtifactRef | None, options: dict,
                   field: str = "") -> dict:
    """`field`: the request field an input staged in S3 came from (`audio`), so the worker's
    errors name it rather than `audio_ref`."""
    req: dict = {"options": options}
    if data is not None:
        req["audio_b64"] = base64.b64encode(data).decode()
    else:
        req["audio_ref"] = ref.to_dict()
        if field:
            req["staged_as"] = field
    return req


def _info(d: dict) -> pb.AudioInfo:
    return pb.AudioInfo(sample_rate=int(d.get("sample_rate", 0)), channels=int(d.get(
        "channels", 0)), duration_seconds=float(d.get("seconds", 0.0)),
        format=str(d.get("format", "")))


def _scores(rows: list) -> list[pb.ClassScore]:
    return [pb.ClassScore(label=r["label"], index=int(r["index"]), score=float(r["score"]))
            for r in rows]


def tag_response(result: dict) -> pb.TagResponse:
    return pb.TagResponse(
        top=_scores(result.get("top", [])),
        segments=[pb.TagSegment(start_seconds=s["start"], end_seconds=s["end"],
                                top=_scores(s["top"])) for s in result.get("segments", [])],
        info=_info(result.get("info", {})), model_version=result.get("model_version", ""))


def vad_response(result: dict) -> pb.DetectSpeechResponse:
    segs = [pb.SpeechSegment(start_seconds=a, end_seconds=b)
            for a, b in result.get("segments", [])]
    return pb.DetectSpeechResponse(
        segments=segs, speech_seconds=sum(s.end_seconds - s.start_seconds for s in segs),
        info=_info(result.get("info", {})), model_version=result.get("model_version", ""))


def asr_response(result: dict) -> pb.TranscribeResponse:
    return pb.TranscribeResponse(
        text=result.get("text", ""),
        segments=[pb.TranscriptSegment(
            start_seconds=s["start"], end_seconds=s["end"], text=s["text"],
            words=[pb.Word(word=w["word"], start_seconds=w["start"], end_seconds=w["end"],
                           probability=w.get("probability", 0.0)) for w in s.get("words", [])])
            for s in result.get("segments", [])],
        info=_info(result.get("info", {})), model_version=result.get("model_version", ""))


def tts_response(result: dict) -> pb.SynthesizeResponse:
    resp = pb.SynthesizeResponse(sample_rate=int(result.get("sample_rate", 0)),
                                 duration_seconds=float(result.get("seconds", 0.0)),
                                 model_version=result.get("model_version", ""))
    if "audio_b64" in result:
        resp.audio = base64.b64decode(result["audio_b64"])
    elif "audio_ref" in result:
        resp.audio_ref.CopyFrom(artifact_pb(result["audio_ref"]))
    return resp


def upload_response(ref: ArtifactRef, url: str, expire_epoch: float) -> pb.CreateUploadResponse:
    from shared.jobs.convert import ts

    return pb.CreateUploadResponse(upload_url=url, ref=artifact_pb(ref.to_dict()),
                                   expire_time=ts(expire_epoch))
