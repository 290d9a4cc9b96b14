"""Decoding (soundfile/libsndfile) and resampling of real and generated recordings."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import workers.audio.resample as resample_mod
from workers.audio.decode import AudioError, AudioLimits, decode, iter_blocks, probe
from workers.audio.resample import Resampler, resample

ALSA = Path("/usr/share/sounds/alsa")
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")


def sound(path: Path) -> bytes:
    if not path.is_file():
        pytest.skip(f"{path} is absent: apt-get install alsa-utils sound-theme-freedesktop")
    return path.read_bytes()


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(
        np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def rms_db(x: np.ndarray, amp: float = 0.5) -> float:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return 20 * math.log10(rms / (amp / math.sqrt(2)))


# ---- formats -------------------------------------------------------------------------------


def test_real_wav_and_ogg_headers_and_lengths():
    wav = sound(ALSA / "Front_Center.wav")
    info = probe(wav)
    assert (info.sample_rate, info.channels, info.format, info.codec) == (48000, 1, "wav",
                                                                          "pcm_16")
    assert info.frames == 68545 and info.seconds == pytest.approx(1.428, abs=1e-3)
    assert len(decode(wav, 16000)) == math.ceil(68545 / 3)

    ogg = sound(FREEDESKTOP / "phone-incoming-call.oga")
    info = probe(ogg)
    assert (info.sample_rate, info.channels, info.format, info.codec) == (44100, 2, "ogg",
                                                                          "vorbis")
    out = decode(ogg, 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == math.ceil(info.frames * 16000 / 44100)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None),
                                         ("OGG", "VORBIS"), ("OGG", "OPUS")])
def test_generated_formats_decode_to_the_same_tone(fmt, subtype):
    rate = 48000 if subtype == "OPUS" else 16000  # Opus encodes at 48 kHz only
    data = encode(sine(1000, rate, 1.0), rate, fmt, subtype)
    info = probe(data)
    assert info.format == fmt.lower() and info.sample_rate == rate
    out = decode(data, 16000)
    assert len(out) == pytest.approx(16000, abs=400)  # lossy codecs may pad a little
    assert peak_hz(out[1000:-1000], 16000) == pytest.approx(1000, abs=5)
    assert rms_db(out[2000:-2000]) == pytest.approx(0.0, abs=0.5)


def test_mp3_round_trip():
    # soundfile 0.14's wheels bundle libsndfile 1.2.2 with mpg123/LAME: MP3 reads and writes.
    data = encode(sine(1000, 44100, 1.0), 44100, "MP3")
    info = probe(data)
    assert (info.format, info.codec, info.sample_rate) == ("mp3", "mpeg_layer_iii", 44100)
    out = decode(data, 16000)
    assert len(out) == pytest.approx(16000, abs=1200)  # encoder delay and frame padding
    assert peak_hz(out[2000:-2000], 16000) == pytest.approx(1000, abs=5)


def test_stereo_is_mixed_to_mono():
    left, right = sine(1000, 16000, 0.5), sine(1000, 16000, 0.5, amp=0.1)
    out = decode(encode(np.stack([left, right], axis=1), 16000, "WAV", "FLOAT"), 16000)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)
    opposite = encode(np.stack([left, -left], axis=1), 16000, "WAV", "FLOAT")
    assert np.abs(decode(opposite, 16000)).max() < 1e-6


# ---- resampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0, 6000.0])
def test_44k1_to_16k_keeps_frequency_and_level(freq):
    out = decode(encode(sine(freq, 44100, 2.0), 44100, "WAV", "FLOAT"), 16000)
    assert len(out) == 32000
    inner = out[1000:-1000]
    assert peak_hz(inner, 16000) == pytest.approx(freq, abs=1.0)
    expected = sine(freq, 16000, 2.0)[1000:-1000]
    assert np.abs(inner - expected).max() < 1e-3  # same phase too: no delay
    assert rms_db(inner) == pytest.approx(0.0, abs=0.1)


def test_tones_above_the_new_nyquist_are_removed():
    for freq in (8500.0, 9000.0, 15000.0):  # would alias to 7.5, 7, 1 kHz
        out = resample(sine(freq, 44100, 1.0), 44100, 16000)[500:-500]
        assert rms_db(out) < -65


def test_block_boundaries_leave_no_trace():
    data = encode(sine(997, 44100, 3.0), 44100, "WAV", "FLOAT")
    blocks = list(iter_blocks(data, 16000, block_seconds=0.25))
    assert [len(b) for b in blocks[:-1]] == [4000] * (len(blocks) - 1)
    joined = np.concatenate(blocks)
    np.testing.assert_allclose(joined, decode(data, 16000), atol=1e-6)
    # Continuity across every block edge: the tone is reproduced everywhere, edges included.
    expected = sine(997, 16000, 3.0)
    assert np.abs(joined[500:-500] - expected[500:-500]).max() < 1e-3


@pytest.mark.parametrize("fmt, subtype", [("WAV", "FLOAT"), ("FLAC", "PCM_24"),
                                           ("OGG", "VORBIS")])
def test_a_stretch_decodes_as_that_part_of_the_whole(fmt, subtype):
    """start_s/end_s (a chunk of a long file): seeking formats and dropping ones give the
    whole file's samples for that stretch, edges aside (resampled on their own)."""
    rng = np.random.default_rng(4)
    tone = sine(997, 44100, 4.0, amp=0.3) + 0.01 * rng.standard_normal(4 * 44100).astype(
        np.float32)
    data = encode(tone, 44100, fmt, subtype)
    whole = decode(data, 16000)
    part = np.concatenate(list(iter_blocks(data, 16000, 0.5, start_s=1.25, end_s=3.0)))
    assert len(part) == pytest.approx(1.75 * 16000, abs=2)
    tol = 1e-5 if fmt != "OGG" else 1e-3
    np.testing.assert_allclose(part[200:-200], whole[20000 + 200:48000 - 200], atol=tol)
    assert sum(len(b) for b in iter_blocks(data, 16000, start_s=5.0)) == 0  # past the end


@pytest.mark.parametrize("source", [8000, 11025, 22050, 44100, 48000, 96000, 384000, 44099])
def test_streaming_resampler_matches_one_shot(source):
    rng = np.random.default_rng(source)
    x = (rng.standard_normal(source // 2 + 7) * 0.1).astype(np.float32)
    whole = resample(x, source, 16000)
    r = Resampler(source, 16000)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, source // 10))
        parts.append(r.push(x[i:i + n]))
        i += n
    parts.append(r.finish())
    streamed = np.concatenate(parts)
    assert len(whole) == len(streamed) == math.ceil(len(x) * 16000 / source)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_matrix_and_gather_paths_agree(monkeypatch):
    x = sine(1234, 44100, 0.5)
    fast = resample(x, 44100, 16000)
    monkeypatch.setattr(resample_mod, "_MAX_MATRIX", 0)  # force per-sample gathering
    assert Resampler(44100, 16000)._matrix is None
    np.testing.assert_allclose(resample(x, 44100, 16000), fast, atol=1e-6)


def test_odd_rate_and_upsampling():
    for source in (44099, 8000):
        out = resample(sine(1000, source, 1.0), source, 16000)
        assert len(out) == 16000
        np.testing.assert_allclose(out[500:-500], sine(1000, 16000, 1.0)[500:-500], atol=1e-3)


def test_same_rate_passes_through():
    x = sine(1000, 16000, 0.3)
    np.testing.assert_array_equal(decode(encode(x, 16000, "WAV", "FLOAT"), 16000), x)


# ---- bad input and limits ------------------------------------------------------------------


def refused(data: bytes, limits: AudioLimits = AudioLimits()) -> AudioError:
    with pytest.raises(AudioError) as err:
        iter_blocks(data, 16000, limits=limits)  # raises before the first block
    assert err.value.field == "audio"
    assert str(err.value) == f"audio: {err.value.problem}"
    return err.value


def test_empty_and_corrupt_bytes():
    assert refused(b"").problem == "is empty"
    rng = np.random.default_rng(0)
    for data in (b"not audio at all" * 50, rng.integers(0, 256, 20000, np.uint8).tobytes()):
        err = refused(data)
        assert err.reason == "UNDECODABLE_INPUT" and "not decodable audio" in err.problem


def test_zero_length_and_truncated():
    err = refused(encode(np.zeros(0, np.float32), 16000, "WAV"))
    assert "no audio" in err.problem and err.reason == "INVALID_ARGUMENT"
    ogg = sound(FREEDESKTOP / "phone-incoming-call.oga")
    # libsndfile takes an Ogg file's length from its last page: a cut file decodes what it
    # holds, or has no length at all when no audio page survived.
    assert 0 < len(decode(ogg[: len(ogg) // 2], 16000)) < len(decode(ogg, 16000))
    assert "no audio" in refused(ogg[: len(ogg) * 3 // 10]).problem
    wav = encode(sine(440, 16000, 1.0), 16000, "WAV", "PCM_16")
    assert len(decode(wav[:1044], 16000)) == 500  # a cut WAV decodes what is there


def test_unsupported_format():
    err = refused(encode(sine(440, 16000, 0.5), 16000, "AU"))
    assert err.reason == "UNDECODABLE_INPUT" and "AU audio" in err.problem


def test_sample_rate_limits():
    low = refused(encode(sine(440, 2000, 0.5, amp=0.1), 2000, "WAV"))
    assert "sample rate of 2000 Hz" in low.problem and low.reason == "INVALID_ARGUMENT"
    high = refused(encode(sine(440, 44100, 0.2), 44100, "WAV"), AudioLimits(max_rate=22050))
    assert "44100 Hz" in high.problem


def test_channel_limit():
    data = encode(np.zeros((1000, 10), np.float32), 16000, "WAV")
    assert "10 channels" in refused(data).problem


def test_duration_limit_from_header():
    data = encode(sine(440, 8000, 2.0), 8000, "WAV")
    err = refused(data, AudioLimits(max_seconds=1.5))
    assert err.reason == "INPUT_TOO_LARGE" and err.problem == "is 2.0 s long; the limit is 1.5 s"
    assert len(decode(data, 16000, AudioLimits(max_seconds=2.0))) == 32000


def test_duration_limit_while_decoding(monkeypatch):
    # A header can understate the length (MP3 without a Xing header is an estimate): the
    # decoded frames are counted too.
    import workers.audio.decode as decode_mod

    data = encode(sine(440, 8000, 3.0), 8000, "WAV")
    real_probe = decode_mod.probe
    monkeypatch.setattr(decode_mod, "probe", lambda d, limits: real_probe(d, AudioLimits()))
    blocks = decode_mod.iter_blocks(data, 16000, 1.0, AudioLimits(max_seconds=2.0))
    with pytest.raises(AudioError) as err:
        list(blocks)
    assert err.value.reason == "INPUT_TOO_LARGE"


def test_long_file_is_decoded_in_bounded_memory():
    import tracemalloc

    minutes = 20
    data = encode(np.tile(sine(500, 8000, 1.0, amp=0.1), 60 * minutes), 8000, "WAV", "PCM_16")
    tracemalloc.start()
    try:
        total = sum(len(b) for b in iter_blocks(data, 16000, block_seconds=30.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 16000 * 60 * minutes
    # Whole, the output alone would be 77 MB of float32; a few blocks and reads are in flight.
    assert peak < 20e6, f"peak {peak / 1e6:.0f} MB"  # measured: 12 MB for 5 or 20 minutes
