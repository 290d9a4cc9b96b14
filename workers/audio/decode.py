"""Encoded audio bytes -> float32 mono samples at a model's rate, in bounded blocks.

libsndfile, through soundfile 0.14 (its wheels bundle libsndfile 1.2.2 built with mpg123 and
LAME), reads WAV (and RF64/W64), AIFF, FLAC, Ogg Vorbis/Opus and MP3 from memory. ``probe`` reads
the header only; ``iter_blocks`` decodes a bounded number of frames at a time, mixes them to mono
and resamples them (``workers.audio.resample``), so memory stays bounded by the block size
whatever the file's length, rate or channel count: an hour of audio is never decoded whole.

Errors are ``AudioError``s naming the request field and the problem, ready to become
INVALID_ARGUMENT with a field violation at the edge.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from workers.audio.resample import Resampler

# libsndfile knows ~25 formats; we open the common ones only (smaller attack surface).
FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC", "OGG", "MP3"})
_FORMATS_TEXT = "WAV, AIFF, FLAC, Ogg Vorbis/Opus or MP3"
_READ_SAMPLES = 1 << 18  # samples (frames x channels) per read: 1 MB of float32
_SEEKABLE = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC"})  # sample-exact seeks


class AudioError(ValueError):
    """Audio input we refuse.

    ``field`` is the request field ("audio" for the input itself); ``problem`` completes a
    sentence that starts with the field name ("is empty"); ``reason`` is the ErrorReason name:
    UNDECODABLE_INPUT (unreadable or unsupported), INPUT_TOO_LARGE (over the length limit) or
    INVALID_ARGUMENT (empty, zero length, rate or channels out of range).
    """

    def __init__(self, problem: str, reason: str = "INVALID_ARGUMENT", field: str = "audio"):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.reason = reason


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = 4 * 3600
    min_rate: int = 4000
    max_rate: int = 384000
    max_channels: int = 8  # bounds per-read memory and rejects odd multichannel files


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int  # from the header; MP3 without a Xing/LAME header gives an estimate
    seconds: float
    format: str  # "wav", "flac", "ogg", "mp3", ... (libsndfile's major format, lower case)
    codec: str  # "pcm_16", "vorbis", "opus", "mpeg_layer_iii", ... (libsndfile's subtype)


def probe(data: bytes, limits: AudioLimits = AudioLimits()) -> AudioInfo:
    """Reads the header only and checks it against ``limits``; raises AudioError."""
    with _open(data) as f:
        info = AudioInfo(sample_rate=int(f.samplerate), channels=int(f.channels),
                         frames=int(f.frames), seconds=f.frames / f.samplerate,
                         format=str(f.format).lower(), codec=str(f.subtype).lower())
    if info.format.upper() not in FORMATS:
        raise AudioError(f"is {info.format.upper()} audio; accepted: {_FORMATS_TEXT}",
                         reason="UNDECODABLE_INPUT")
    if not 1 <= info.channels <= limits.max_channels:
        raise AudioError(f"has {info.channels} channels; at most {limits.max_channels}")
    if not limits.min_rate <= info.sample_rate <= limits.max_rate:
        raise AudioError(f"has a sample rate of {info.sample_rate} Hz; accepted: "
                         f"{limits.min_rate}..{limits.max_rate} Hz")
    if info.frames <= 0:
        raise AudioError("has no audio (zero length, or a truncated file)")
    if info.seconds > limits.max_seconds:
        raise AudioError(f"is {info.seconds:.1f} s long; the limit is {limits.max_seconds:g} s",
                         reason="INPUT_TOO_LARGE")
    return info


def iter_blocks(data: bytes, target_rate: int, block_seconds: float = 30.0,
                limits: AudioLimits = AudioLimits(), *, start_s: float = 0.0,
                end_s: float | None = None) -> Iterator[np.ndarray]:
    """Float32 mono blocks at ``target_rate``: each ``block_seconds`` long except the last.

    The header is checked before this returns (so bad input raises here, not at the first
    ``next``); decoding errors and files whose decoded length exceeds the limit (a header can
    lie) raise AudioError while iterating. Together the blocks hold
    ``ceil(decoded_frames * target_rate / sample_rate)`` samples.

    ``start_s``/``end_s`` decode only that stretch (a chunk of a long file): PCM and FLAC
    files seek to it; other formats are decoded from the start and the frames before it
    dropped before resampling. The stretch is resampled on its own (its edges see silence
    outside it), so cut it where the signal is quiet.
    """
    if block_seconds <= 0:
        raise ValueError("block_seconds must be positive")
    info = probe(data, limits)
    first = max(0, round(start_s * info.sample_rate))
    last = None if end_s is None else round(end_s * info.sample_rate)
    return _blocks(data, info, int(target_rate), max(1, round(block_seconds * target_rate)),
                   limits, (first, last))


def decode(data: bytes, target_rate: int, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """The whole file as one float32 mono array at ``target_rate`` (for short clips)."""
    return np.concatenate(list(iter_blocks(data, target_rate, limits=limits)))


def _blocks(data: bytes, info: AudioInfo, target_rate: int, block_len: int,
            limits: AudioLimits, span: tuple[int, int | None] = (0, None)
            ) -> Iterator[np.ndarray]:
    resampler = Resampler(info.sample_rate, target_rate)
    max_frames = int(limits.max_seconds * info.sample_rate)
    read_frames = max(1024, _READ_SAMPLES // info.channels)
    first, last = span
    pending: list[np.ndarray] = []
    pending_len = 0
    decoded = 0
    with _open(data) as f:
        if first and info.format.upper() in _SEEKABLE and f.seekable():
            decoded = f.seek(min(first, info.frames))  # past the end is an error
        while last is None or decoded < last:
            try:
                frames = f.read(read_frames, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError, ValueError) as exc:
                raise AudioError(f"is corrupt: decoding failed after {decoded} frames ({exc})",
                                 reason="UNDECODABLE_INPUT") from exc
            if len(frames) == 0:
                break
            at = decoded
            decoded += len(frames)
            if decoded > max_frames:
                raise AudioError(f"is longer than the limit of {limits.max_seconds:g} s",
                                 reason="INPUT_TOO_LARGE")
            frames = frames[max(0, first - at):len(frames) if last is None else last - at]
            if len(frames) == 0:
                continue
            if not np.isfinite(frames).all():  # float files can hold NaN/inf (tests/fuzz)
                raise AudioError(f"has NaN or infinite samples (in frames {at}..{decoded})",
                                 reason="UNDECODABLE_INPUT")
            mono = frames[:, 0] if info.channels == 1 else frames.mean(axis=1)
            out = resampler.push(mono)
            pending.append(out)
            pending_len += len(out)
            if pending_len >= block_len:
                joined = np.concatenate(pending)
                whole = len(joined) - len(joined) % block_len
                for start in range(0, whole, block_len):
                    yield joined[start:start + block_len]
                pending, pending_len = [joined[whole:]], len(joined) - whole
    if decoded == 0:
        raise AudioError("has no audio (zero length, or a truncated file)")
    pending.append(resampler.finish())
    rest = np.concatenate(pending)
    for start in range(0, len(rest), block_len):  # finish() can complete one more block
        yield rest[start:start + block_len]


def _open(data: bytes) -> sf.SoundFile:
    if not data:
        raise AudioError("is empty")
    try:
        return sf.SoundFile(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"is not decodable audio ({_FORMATS_TEXT})",
                         reason="UNDECODABLE_INPUT") from exc
