"""Cheap checks of an encoded audio file at the gateway: the header only (libsndfile through
soundfile), so garbage, empty files, absurd sample rates and files over the length limit are
refused before a job exists."""

from __future__ import annotations

import io
from dataclasses import dataclass

from shared.errors import InvalidArgument

FORMATS = "WAV, FLAC, Ogg Vorbis/Opus, MP3"


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float
    min_rate: int
    max_rate: int


def inspect_audio(data: bytes, limits: AudioLimits, field: str = "audio") -> float:
    """Checks the header; returns the duration in seconds. Raises InvalidArgument naming
    `field`."""
    import soundfile as sf

    if not data:
        raise InvalidArgument.for_field(field, "is empty")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InvalidArgument.for_field(field, f"is not decodable audio ({FORMATS})",
                                        reason="UNDECODABLE_INPUT") from exc
    if not limits.min_rate <= info.samplerate <= limits.max_rate:
        raise InvalidArgument.for_field(
            field, f"has a sample rate of {info.samplerate} Hz; accepted: "
                   f"{limits.min_rate}..{limits.max_rate} Hz")
    if info.frames <= 0:
        raise InvalidArgument.for_field(field, "has no audio (zero length)")
    if info.channels < 1 or info.channels > 8:
        raise InvalidArgument.for_field(field, f"has {info.channels} channels; at most 8")
    seconds = info.frames / info.samplerate
    if seconds > limits.max_seconds:
        raise InvalidArgument.for_field(
            field, f"is {seconds:.0f} s long; the limit is {limits.max_seconds:.0f} s",
            reason="INPUT_TOO_LARGE")
    return seconds
