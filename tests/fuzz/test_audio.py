"""Audio inputs: `services.audio.inspect.inspect_audio` (gateway header check) refuses with
InvalidArgument only; `workers.audio.decode.probe`/`decode` refuse with AudioError only, and
what they accept decodes to finite float32 mono samples."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from services.audio.inspect import AudioLimits as GatewayLimits
from services.audio.inspect import inspect_audio
from shared.errors import InvalidArgument
from tests.fuzz.strategies import mutated
from tests.fuzz.tally import tried
from workers.audio.decode import AudioError, AudioLimits, decode, probe

GATEWAY = GatewayLimits(max_seconds=5.0, min_rate=4000, max_rate=96000)
WORKER = AudioLimits(max_seconds=5.0, min_rate=4000, max_rate=96000)
TARGET_RATE = 16000


def _encode(rate: int, channels: int, fmt: str, subtype: str | None = None,
            seconds: float = 0.05, samples: np.ndarray | None = None) -> bytes:
    if samples is None:
        t = np.arange(int(rate * seconds)) / rate
        samples = np.stack([0.3 * np.sin(2 * np.pi * (440 + 110 * c) * t)
                            for c in range(channels)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


SEEDS = [_encode(8000, 1, "WAV", "PCM_16"), _encode(16000, 2, "WAV", "PCM_24"),
         _encode(8000, 1, "WAV", "FLOAT"), _encode(8000, 1, "FLAC"),
         _encode(22050, 2, "FLAC", "PCM_16"), _encode(8000, 1, "OGG", "VORBIS", seconds=0.2)]

# Found by this suite: a well-formed float WAV carrying NaN/inf samples.
FLOAT_WAV_NAN = _encode(8000, 1, "WAV", "FLOAT",
                        samples=np.array([0.0, np.nan, np.inf, -np.inf] * 64, np.float32))


def check_inspect(data: bytes) -> None:
    try:
        seconds = inspect_audio(data, GATEWAY)
    except InvalidArgument as exc:
        assert exc.field_violations and exc.field_violations[0][0] == "audio"
        return
    assert 0 < seconds <= GATEWAY.max_seconds


def check_decode(data: bytes, require_finite: bool = True) -> None:
    try:
        info = probe(data, WORKER)
    except AudioError:
        return
    assert 1 <= info.channels <= WORKER.max_channels and info.frames > 0
    assert WORKER.min_rate <= info.sample_rate <= WORKER.max_rate
    try:
        samples = decode(data, TARGET_RATE, WORKER)
    except AudioError:
        return
    assert samples.dtype == np.float32 and samples.ndim == 1 and len(samples) > 0
    # Float codecs can carry NaN/inf as data: test_float_wav_with_nan_is_refused covers them.
    if require_finite or info.codec not in ("float", "double"):
        assert np.isfinite(samples).all(), "decoded samples contain NaN or inf"


@given(st.binary(max_size=1024))
def test_inspect_arbitrary_bytes(data):
    tried("audio inspect_audio (bytes)")
    check_inspect(data)


@given(mutated(SEEDS))
def test_inspect_mutated_files(data):
    tried("audio inspect_audio (mutated WAV/FLAC/OGG)")
    check_inspect(data)


@given(st.binary(max_size=1024))
def test_decode_arbitrary_bytes(data):
    tried("audio probe/decode (bytes)")
    check_decode(data)


@given(mutated(SEEDS))
def test_decode_mutated_files(data):
    tried("audio probe/decode (mutated WAV/FLAC/OGG)")
    check_decode(data, require_finite=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_float_wav_with_nan_is_refused():
    check_decode(FLOAT_WAV_NAN)


@pytest.mark.parametrize("seed", SEEDS)
def test_seeds_are_accepted(seed):
    assert inspect_audio(seed, GATEWAY) > 0
    assert np.isfinite(decode(seed, TARGET_RATE, WORKER)).all()
