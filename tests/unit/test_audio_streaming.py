"""Block-by-block tagging and VAD give what whole-signal calls give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.audio import yamnet
from workers.audio.streaming import TagAccumulator, vad_segments
from workers.audio.vad import SileroVad, model_file

CLIP = Path("/usr/share/sounds/alsa/Front_Center.wav")


@pytest.fixture(scope="module")
def tagger():
    onnx, labels = yamnet.model_files()
    return yamnet.YamnetTagger(onnx, yamnet.load_labels(labels))


def _signal(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(
        np.float32)


@pytest.mark.parametrize("seconds, block", [(0.3, 1000), (0.96, 15600), (5.0, 7680),
                                             (7.3, 12345), (7.3, 100_000)])
def test_streamed_tags_equal_whole_signal_tags(tagger, seconds, block):
    wave = _signal(seconds)
    acc = TagAccumulator(tagger)
    for k in range(0, len(wave), block):
        acc.add(wave[k:k + block])
    starts, scores = acc.finish()
    want_starts, want = tagger.scores(wave)
    np.testing.assert_allclose(starts, want_starts)
    np.testing.assert_allclose(scores, want, atol=1e-6)


def test_streamed_vad_equals_whole_signal_vad():
    if not CLIP.exists():
        pytest.skip("alsa-utils' Front_Center.wav is not installed")
    from workers.audio.decode import decode

    wave = decode(CLIP.read_bytes(), 16000)
    vad = SileroVad(model_file())
    blocks = [wave[k:k + 3001] for k in range(0, len(wave), 3001)]
    got = vad_segments(vad, blocks, 16000, threshold=0.5, min_speech_ms=250,
                       min_silence_ms=100)
    assert got == vad.segments(wave) and len(got) >= 1
