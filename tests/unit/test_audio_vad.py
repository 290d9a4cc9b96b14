"""Silero VAD through onnxruntime: probabilities per stream, segments, real voice clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.audio import vad as vad_mod
from workers.audio.decode import decode
from workers.audio.vad import WINDOW, SileroVad, model_file, speech_segments

ALSA = Path("/usr/share/sounds/alsa")
VOICES = ["Front_Center.wav", "Front_Left.wav", "Rear_Right.wav", "Side_Left.wav"]


def clip(path: Path) -> np.ndarray:
    if not path.is_file():
        pytest.skip(f"{path} is absent: apt-get install alsa-utils")
    return decode(path.read_bytes(), 16000)


@pytest.fixture(scope="module")
def vad():
    return SileroVad(model_file())


def test_model_file_is_in_the_package():
    path = model_file()
    assert path.name == "silero_vad.onnx" and "silero_vad" in str(path)


@pytest.mark.parametrize("name", VOICES)
def test_voice_clips_have_speech(vad, name):
    wave = clip(ALSA / name)  # ~1.4 s: two words, e.g. "Front Center"
    segments = vad.segments(wave)
    assert segments
    assert all(0 <= s < e <= len(wave) / 16000 for s, e in segments)
    assert sum(e - s for s, e in segments) > 0.6


def test_front_center_boundaries(vad):
    segments = vad.segments(clip(ALSA / "Front_Center.wav"))
    # "Front" and "Center" with a pause between; the recording starts almost at once.
    assert len(segments) == 2
    (s1, e1), (s2, e2) = segments
    assert s1 < 0.15 and 0.4 < e1 < s2 < 0.9 and e2 > 1.3


def test_no_speech_in_tone_silence_or_noise(vad):
    t = np.arange(16000 * 3) / 16000
    assert vad.segments((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)) == []
    assert vad.segments(np.zeros(16000 * 2, np.float32)) == []
    assert vad.segments(clip(ALSA / "Noise.wav")) == []


def test_streaming_in_odd_chunks_gives_the_same_probabilities(vad):
    wave = clip(ALSA / "Front_Left.wav")
    whole, end = vad.probs(wave, vad.new_state(), final=True)
    assert len(whole) == -(-len(wave) // WINDOW) and end.pending.size == 0
    rng = np.random.default_rng(0)
    state, parts, i = vad.new_state(), [], 0
    while i < len(wave):
        n = int(rng.integers(1, 3000))
        probs, state = vad.probs(wave[i:i + n], state, final=i + n >= len(wave))
        parts.append(probs)
        i += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert state.windows == len(whole)


def test_state_is_not_changed_in_place(vad):
    wave = clip(ALSA / "Front_Center.wav")
    state = vad.new_state()
    first, after = vad.probs(wave[:8000], state)
    again, _ = vad.probs(wave[:8000], state)
    np.testing.assert_array_equal(first, again)
    assert not state.rnn.any() and after.rnn.any()
    assert len(first) == 15 and after.pending.size == 8000 - 15 * WINDOW


def test_streams_are_independent(vad):
    speech, quiet = clip(ALSA / "Front_Center.wav"), np.zeros(16000, np.float32)
    a, b = vad.new_state(), vad.new_state()
    pa, a = vad.probs(speech[:16000], a)
    pb, b = vad.probs(quiet, b)
    np.testing.assert_array_equal(pa, vad.probs(speech[:16000], vad.new_state())[0])
    assert pb.max() < 0.1


# ---- hysteresis ----------------------------------------------------------------------------


def windows(*runs: tuple[float, int]) -> np.ndarray:
    return np.concatenate([np.full(n, p) for p, n in runs])


def flat(segments) -> list[float]:
    return [t for segment in segments for t in segment]


def test_segment_rules():
    w = WINDOW / 16000  # 32 ms
    total = 100 * WINDOW
    # One 640 ms stretch, padded by 30 ms each side.
    got = speech_segments(windows((0.1, 10), (0.9, 20), (0.1, 70)), total)
    assert flat(got) == pytest.approx([10 * w - 0.03, 30 * w + 0.03])
    # 160 ms of speech is under min_speech_ms: dropped.
    assert speech_segments(windows((0.1, 10), (0.9, 5), (0.1, 85)), total) == []
    # Silence is timed from the start of its first window to the start of the current one
    # (as silero does), so 100 ms of min silence needs 5 low windows (160 ms) to split.
    assert len(speech_segments(windows((0.9, 20), (0.1, 4), (0.9, 20), (0.1, 56)), total)) == 1
    assert len(speech_segments(windows((0.9, 20), (0.1, 5), (0.9, 20), (0.1, 55)), total)) == 2
    # Between the exit threshold (0.35) and the threshold neither ends nor restarts speech.
    got = speech_segments(windows((0.9, 20), (0.4, 30), (0.1, 50)), total)
    assert flat(got) == pytest.approx([0.0, 50 * w + 0.03])
    # Speech running to the end ends at the last sample, unpadded past it.
    assert speech_segments(windows((0.1, 90), (0.9, 10)), total - 100)[-1][1] == pytest.approx(
        (total - 100) / 16000)


def test_padding_splits_short_gaps():
    w = WINDOW / 16000
    probs = windows((0.9, 20), (0.1, 5), (0.9, 20), (0.1, 55))
    got = speech_segments(probs, 100 * WINDOW, pad_ms=100)  # gap 160 ms < 2 x 100 ms
    assert flat(got) == pytest.approx([0.0, 22.5 * w, 22.5 * w, 45 * w + 0.1])


def test_parity_with_silero_get_speech_timestamps():
    pytest.importorskip("torch")  # silero_vad's helpers import torch
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(0, 200))
        probs = np.repeat(rng.random(n // 4 + 1), 4)[:n] if rng.random() < 0.7 else rng.random(n)
        total = max(0, n * WINDOW - int(rng.integers(0, WINDOW)))
        kw = {"threshold": float(rng.choice([0.3, 0.5, 0.7])),
              "min_speech_ms": int(rng.choice([0, 100, 250])),
              "min_silence_ms": int(rng.choice([0, 50, 100, 300])),
              "pad_ms": int(rng.choice([0, 30, 100]))}
        segments = speech_segments(probs, total, **kw)
        ours = [(round(s * 16000), round(e * 16000)) for s, e in segments]
        theirs = get_speech_timestamps_from_probs(
            list(probs), sampling_rate=16000, threshold=kw["threshold"],
            min_speech_duration_ms=kw["min_speech_ms"],
            min_silence_duration_ms=kw["min_silence_ms"], speech_pad_ms=kw["pad_ms"],
            audio_length_samples=total)
        assert ours == [(d["start"], d["end"]) for d in theirs], kw


def test_command_line(capsys):
    path = ALSA / "Front_Center.wav"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    assert vad_mod.main([str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and float(lines[0].split()[0]) < 0.15
    with pytest.raises(SystemExit) as done:
        vad_mod.main(["--help"])
    assert done.value.code == 0
