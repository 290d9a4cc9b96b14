"""Evaluation for compressed models: scoring arithmetic, the real PP-OCR recognizer on rendered
lines, the real SmolLM2 export on held-out text, and the report's serialisation."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from workers.compression.evaluate import (
    calibration_feeds,
    calibration_text,
    character_error_rate,
    edit_distance,
    evaluate_lm,
    evaluate_recognizer,
    held_out_text,
    recognizer_feeds,
    render_lines,
    text_lines,
)
from workers.compression.evaluate.texts import CALIBRATION, HELD_OUT
from workers.compression.report import CompressionReport
from workers.textgen.export import default_export_dir, is_valid

REC_MODEL = (Path(importlib.util.find_spec("rapidocr").submodule_search_locations[0])
             / "models" / "PP-OCRv6_rec_small.onnx")


@pytest.fixture(scope="module")
def lm_folder() -> Path:
    folder = default_export_dir()
    if not is_valid(folder):
        pytest.skip(f"no SmolLM2 export in {folder} (python -m workers.textgen.export)")
    return folder


# -- scoring --------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "hyp", "expected"), [
    ("", "", 0), ("abc", "abc", 0), ("abc", "", 3), ("", "ab", 2),
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("abc", "acb", 2),
])
def test_edit_distance(ref, hyp, expected):
    assert edit_distance(ref, hyp) == expected
    assert edit_distance(hyp, ref) == expected


def test_cer_is_pooled_over_lines_and_ignores_spacing():
    # 1 edit in 4 chars + 0 edits in 6 chars = 1 / 10, not the mean of 0.25 and 0.
    assert character_error_rate(["abcd", "efghij"], ["abxd", " efghij  "]) == pytest.approx(0.1)
    assert character_error_rate(["a  b"], ["a b"]) == 0.0
    assert character_error_rate(["ab"], ["abcdef"]) == 2.0  # insertions can exceed 1
    with pytest.raises(ValueError):
        character_error_rate(["", " "], ["x", "y"])
    with pytest.raises(ValueError):
        character_error_rate(["a"], [])


# -- texts ----------------------------------------------------------------------------------


def test_texts_are_deterministic_clean_and_disjoint():
    text = held_out_text(5000)
    assert text == held_out_text(5000) and len(text) <= 5000 and len(text) > 4000
    assert len({held_out_text(2000, seed=s) for s in range(5)}) > 1  # seed orders documents
    assert all(32 <= ord(ch) < 127 for ch in text.replace("\n", ""))
    assert "  " not in text and "\n\n\n" not in text
    assert not set(HELD_OUT) & set(CALIBRATION)
    assert held_out_text(10**6)[:300] not in calibration_text(10**6)

    lines = text_lines(50, seed=3, min_chars=12, max_chars=48)
    assert lines == text_lines(50, seed=3) and len(lines) == 50
    assert all(12 <= len(line) <= 48 and line == " ".join(line.split()) for line in lines)
    assert all(all(32 <= ord(ch) < 127 for ch in line) for line in lines)


# -- OCR ------------------------------------------------------------------------------------


def test_rendered_lines_read_back_with_the_real_recognizer():
    texts = text_lines(24, seed=0)
    samples = render_lines(texts, seed=0)
    assert [s.text for s in samples] == texts
    # Line i depends on (seed, i, text) only, not on how many lines were asked for.
    assert np.array_equal(render_lines(texts[:6], seed=0)[5].image, samples[5].image)
    assert not np.array_equal(render_lines(texts[:6], seed=1)[5].image, samples[5].image)
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        assert s.image.shape[1] > s.image.shape[0]  # a line, cropped tightly

    result = evaluate_recognizer(REC_MODEL, samples, batch_size=8, repeats=1)
    print(f"\nPP-OCRv6 rec: CER {result.cer:.4f} on {result.lines} lines / {result.chars} chars, "
          f"median batch {result.latency_ms:.1f} ms")
    assert result.lines == 24 and result.chars == sum(len(s.text) for s in samples)
    assert result.cer < 0.05
    assert result.latency_ms > 0


def test_recognizer_feeds_are_width_bucketed_batches():
    samples = render_lines(text_lines(20, seed=1), seed=1)
    feeds = recognizer_feeds(samples, batch_size=8)
    assert [f["x"].shape[0] for f in feeds] == [8, 8, 4]
    widths = [f["x"].shape[3] for f in feeds]
    assert widths == sorted(widths) and widths[0] >= 320
    for f in feeds:
        assert f["x"].dtype == np.float32 and f["x"].shape[1:3] == (3, 48)
        assert f["x"].min() >= -1.0 and f["x"].max() <= 1.0


def test_recognizer_without_charset_metadata_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(REC_MODEL))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ValueError, match="character"):
        evaluate_recognizer(bare, render_lines(["no charset here"]))


# -- LM -------------------------------------------------------------------------------------


def test_perplexity_of_the_real_export(lm_folder):
    result = evaluate_lm(lm_folder / "model.onnx", lm_folder / "tokenizer.json", held_out_text(),
                         window=64, max_windows=2)
    print(f"\nSmolLM2-135M: perplexity {result.perplexity:.2f} over {result.tokens} tokens, "
          f"median window {result.latency_ms:.1f} ms")
    assert result.tokens == 2 * 63
    assert math.isfinite(result.perplexity) and 5 < result.perplexity < 100


def test_calibration_feeds_run_through_the_model(lm_folder):
    import onnxruntime as ort

    feeds = calibration_feeds(lm_folder / "tokenizer.json", calibration_text(), window=16,
                              count=3)
    session = ort.InferenceSession(str(lm_folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == set(feeds[0])
    assert len(feeds) == 3
    for feed in feeds:
        logits = session.run(["logits"], feed)[0]
        assert logits.shape == (1, 16, 49152) and np.isfinite(logits).all()


# -- report ---------------------------------------------------------------------------------


def _report(**overrides) -> CompressionReport:
    values = dict(model="smollm2-135m-instruct", parent_version="v2", version="v2-int8",
                  recipe="int8-dynamic", params={"per_channel": True, "skip": ["lm_head"]},
                  notes=["CPU, 2 threads", "lm_head kept in fp32"], size_bytes=160 * 2**20,
                  parent_size_bytes=640 * 2**20, metric="perplexity", parent_metric=32.0,
                  metric_value=33.5, latency_ms=60.0, parent_latency_ms=120.0)
    values.update(overrides)
    return CompressionReport(**values)


def test_report_round_trips_and_derives_ratios():
    report = _report()
    assert report.size_ratio == 4.0
    assert report.latency_ratio == 0.5
    assert report.metric_delta == pytest.approx(1.5)
    raw = report.to_json()
    assert json.loads(raw)["derived"] == {"size_ratio": 4.0, "latency_ratio": 0.5,
                                          "metric_delta": 1.5}
    assert CompressionReport.from_json(raw) == report
    assert CompressionReport.from_json(raw.decode()) == report

    md = report.to_markdown()
    assert "4.00x smaller" in md and "0.50x" in md and "+1.5 (worse)" in md
    assert "`int8-dynamic`" in md and "`per_channel=True`" in md
    assert "- lm_head kept in fp32" in md


def test_report_edge_cases():
    cosine = _report(metric="cosine", parent_metric=1.0, metric_value=0.99)
    assert "(worse)" in cosine.to_markdown()  # higher cosine is better
    empty = _report(parent_latency_ms=0.0)
    assert math.isnan(empty.latency_ratio)
    assert json.loads(empty.to_json())["derived"]["latency_ratio"] is None
    with pytest.raises(ValueError):
        _report(metric="bleu")
