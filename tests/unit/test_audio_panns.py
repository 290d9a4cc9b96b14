"""PANNs tagging: the 32 kHz log-mel front end against its formulas (and librosa when present),
against a PyTorch front end written as torchlibrosa's, and the tagger on CNN14-shaped stand-in
ONNX files (seeded random weights, reduced widths: see tests/fixtures/cnn14.py) in both input
forms."""

from __future__ import annotations

import numpy as np
import pytest

from workers.audio import panns
from workers.audio.streaming import TagAccumulator
from workers.audio.taggers import load_tagger

torch = pytest.importorskip("torch")
cnn14 = pytest.importorskip("tests.fixtures.cnn14")


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * panns.SAMPLE_RATE)) / panns.SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * 700 * t) * (t % 1.0 < 0.5)
            + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


# ---- front end ---------------------------------------------------------------------------------


def test_slaney_mel_scale():
    assert panns.hz_to_mel(1000.0) == pytest.approx(15.0)
    assert panns.hz_to_mel(500.0) == pytest.approx(7.5)  # linear below 1 kHz: 200/3 Hz per mel
    assert panns.hz_to_mel(6400.0) == pytest.approx(42.0)  # 27 mels per factor 6.4 above
    hz = np.array([50.0, 999.0, 1000.0, 3000.0, 14000.0])
    np.testing.assert_allclose(panns.mel_to_hz(panns.hz_to_mel(hz)), hz, rtol=1e-12)


def test_filterbank_matches_the_formula_bin_by_bin():
    """Each band: a triangle on the Hz axis from edge i to i+2 peaking at i+1, scaled by
    2 / (f[i+2] - f[i]) (Slaney's unit area), edges equally spaced in Slaney mels."""
    w = panns.mel_matrix()
    assert w.shape == (513, 64)
    lo, hi = panns.hz_to_mel(50.0), panns.hz_to_mel(14000.0)
    edges = [float(panns.mel_to_hz(lo + (hi - lo) * i / 65)) for i in range(66)]
    for band in (0, 1, 20, 40, 63):
        f0, f1, f2 = edges[band:band + 3]
        for b in range(513):
            f = b * 16000.0 / 512
            tri = max(0.0, min((f - f0) / (f1 - f0), (f2 - f) / (f2 - f1)))
            assert w[b, band] == pytest.approx(tri * 2.0 / (f2 - f0), abs=1e-9)
    assert not w[:2].any() and not w[449:].any()  # nothing below 50 Hz or above 14 kHz


def test_filterbank_matches_librosa_when_installed():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    np.testing.assert_allclose(panns.mel_matrix(), ref, atol=1e-8)


def test_log_mel_matches_a_torchlibrosa_style_front_end():
    wave = _signal(2.0)
    ours = panns.log_mel(wave)
    assert ours.shape == (1 + len(wave) // panns.HOP, 64) == (201, 64)
    with torch.no_grad():
        theirs = cnn14.LogMel()(torch.tensor(wave[None])).numpy()[0, 0]
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert panns.log_mel(np.zeros(4000, np.float32)).min() == pytest.approx(-100.0)  # amin


# ---- the tagger on stand-in models -------------------------------------------------------------


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn14")
    labels = cnn14.labels_csv(d / "labels.csv")
    return {form: load_tagger(cnn14.export(d / f"{form}.onnx", waveform=form == "waveform"),
                              labels) for form in ("waveform", "logmel")} | {"dir": d}


def test_both_input_forms_give_the_same_scores(standins):
    wave, logmel = standins["waveform"], standins["logmel"]
    assert wave.waveform_input and not logmel.waveform_input
    assert (wave.rate, wave.patch_samples, wave.hop_samples) == (32000, 64000, 32000)
    starts, scores = wave.scores(_signal(5.0))
    # 5 s in 2 s windows every 1 s, the last zero-padded: starts 0, 1, 2, 3.
    np.testing.assert_allclose(starts, [0.0, 1.0, 2.0, 3.0])
    assert scores.shape == (4, 527) and ((scores > 0) & (scores < 1)).all()
    np.testing.assert_allclose(logmel.scores(_signal(5.0))[1], scores, atol=1e-3)
    assert np.abs(scores[0] - wave.scores(_signal(2.0, seed=9) * 0.01)[1][0]).max() > 0.01
    assert wave.labels[526] == "Test class 526"


def test_short_clip_gives_one_window_and_streaming_equals_whole(standins):
    t = standins["waveform"]
    starts, scores = t.scores(_signal(0.3))
    assert starts.tolist() == [0.0] and scores.shape == (1, 527)
    wave = _signal(6.3, seed=2)
    acc = TagAccumulator(t, panns.SAMPLE_RATE)
    for k in range(0, len(wave), 23_456):
        acc.add(wave[k:k + 23_456])
    got_starts, got = acc.finish()
    want_starts, want = t.scores(wave)
    np.testing.assert_allclose(got_starts, want_starts)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="32000 Hz"):
        TagAccumulator(t, 16000)


def test_models_that_are_no_panns_tagger_are_refused(standins, tmp_path):
    model = standins["dir"] / "waveform.onnx"
    with pytest.raises(ValueError, match="527 outputs but 521 labels"):
        load_tagger(model, cnn14.labels_csv(tmp_path / "l.csv", classes=521))
    with pytest.raises(FileNotFoundError):
        load_tagger(model, tmp_path / "missing.csv")
    onnx = pytest.importorskip("onnx")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 32, 32])])
    path = tmp_path / "image.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              str(path))
    with pytest.raises(ValueError, match="neither a waveform"):
        load_tagger(path, standins["dir"] / "labels.csv")
