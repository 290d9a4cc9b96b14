"""Model families: how a model of each kind is calibrated and judged.

A compressed version is only worth serving if it is measured against its parent on the same
inputs in the same run. Each family supplies calibration feeds (static quantization, Wanda),
probe feeds (latency), and an evaluation with one lower-is-better metric:

- `ocr-recognizer` (ppocr-rec): CER on real text lines rendered with Debian fonts;
- `language-model` (a folder with tokenizer.json + generation.json): perplexity on held-out
  real text (Debian licence texts), windows disjoint from the calibration text;
- `embedding-model` (a folder with embedding.json: all-MiniLM-L6-v2): 1 − cosine agreement
  of the sentence embeddings with the parent's on held-out real text;
- `generic`: 1 − cosine agreement of the outputs with the parent's on seeded random inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.compression.recipes import latency_ms

Calibration = list[dict[str, np.ndarray]]

OCR_RECOGNIZERS = ("ppocr-rec",)
# MatMuls of the LM's MLP blocks (gate/up/down projections in the legacy exporter's names):
# the layers 2:4 papers prune first; attention projections are more sensitive.
LM_MLP = r"mlp"


@dataclass
class Evaluation:
    metric: str
    parent: float
    new: float
    parent_latency_ms: float
    latency_ms: float
    details: dict = field(default_factory=dict)


class Family:
    name = "generic"
    metric = "cosine_distance"
    default_include = r".*"
    default_samples = 8
    default_calibration = 8

    def __init__(self, folder: Path, model: Path, inputs: list[dict]):
        self.folder, self.model, self.inputs = folder, model, inputs

    def calibration(self, count: int) -> Calibration:
        return self._random_feeds(count, seed=1)

    def probe(self) -> Calibration:
        return self._random_feeds(2, seed=2)

    def _random_feeds(self, count: int, seed: int) -> Calibration:
        rng = np.random.default_rng(seed)
        feeds = []
        for _ in range(count):
            feed = {}
            for spec in self.inputs:
                if spec["dtype"] != "tensor(float)":
                    raise ValueError(f"input {spec['name']} is {spec['dtype']}: the generic "
                                     "family only feeds float inputs")
                dims = spec["shape"]
                shape = [(1 if n == 0 else 64) if d < 0 else d for n, d in enumerate(dims)]
                feed[spec["name"]] = rng.standard_normal(shape).astype(np.float32)
            feeds.append(feed)
        return feeds

    def compare(self, new_model: Path, samples: int) -> Evaluation:
        import onnxruntime as ort

        feeds = self._random_feeds(samples, seed=3)
        so = ort.SessionOptions()
        parent = ort.InferenceSession(str(self.model), so, providers=["CPUExecutionProvider"])
        new = ort.InferenceSession(str(new_model), so, providers=["CPUExecutionProvider"])
        cosines = []
        for feed in feeds:
            a = np.concatenate([o.ravel() for o in parent.run(None, feed)]).astype(np.float64)
            b = np.concatenate([o.ravel() for o in new.run(None, feed)]).astype(np.float64)
            denom = np.linalg.norm(a) * np.linalg.norm(b)
            cosines.append(float(a @ b / denom) if denom > 0 else float(np.allclose(a, b)))
        parent_ms, new_ms = _latencies(self.model, new_model, feeds[:4])
        return Evaluation(self.metric, 0.0, 1.0 - float(np.mean(cosines)), parent_ms, new_ms,
                          {"probes": len(feeds)})


class OcrRecognizer(Family):
    name = "ocr-recognizer"
    metric = "cer"
    default_samples = 96
    default_calibration = 32

    def _samples(self, count: int, seed: int):
        from workers.compression.evaluate import render_lines, text_lines

        return render_lines(text_lines(count, seed=seed), seed=seed)

    def calibration(self, count: int) -> Calibration:
        from workers.compression.evaluate import recognizer_feeds

        # Seed 1: other lines than the evaluation's (seed 0). One common width (zero padding,
        # as serving pads): histogram calibrators (percentile, entropy) stack every batch's
        # activations and need equal shapes.
        feeds = recognizer_feeds(self._samples(count, seed=1))
        width = max(f["x"].shape[3] for f in feeds)
        return [{"x": np.pad(f["x"], ((0, 0), (0, 0), (0, 0), (0, width - f["x"].shape[3])))}
                for f in feeds]

    def probe(self) -> Calibration:
        from workers.compression.evaluate import recognizer_feeds

        return recognizer_feeds(self._samples(16, seed=2))

    def compare(self, new_model: Path, samples: int) -> Evaluation:
        from workers.compression.evaluate import evaluate_recognizer

        lines = self._samples(samples, seed=0)
        # Interleaved so a busy neighbour slows both alike.
        parent = evaluate_recognizer(self.model, lines)
        new = evaluate_recognizer(new_model, lines)
        parent_again = evaluate_recognizer(self.model, lines)
        parent_ms = min(parent.latency_ms, parent_again.latency_ms)
        return Evaluation(self.metric, parent.cer, new.cer, parent_ms, new.latency_ms,
                          {"lines": new.lines, "chars": new.chars})


class LanguageModel(Family):
    name = "language-model"
    metric = "perplexity"
    default_include = LM_MLP
    default_samples = 8  # token windows of 128
    default_calibration = 4

    def _texts(self) -> tuple[str, str]:
        """(calibration text, evaluation text) from disjoint sets of licence texts, so a recipe
        is never judged on the text it calibrated on."""
        from workers.compression.evaluate import calibration_text, held_out_text

        return calibration_text(), held_out_text(max_chars=60_000)

    def calibration(self, count: int) -> Calibration:
        from workers.compression.evaluate import calibration_feeds

        return calibration_feeds(self.folder / "tokenizer.json", self._texts()[0], window=64,
                                 count=count)

    def probe(self) -> Calibration:
        return self.calibration(2)

    def compare(self, new_model: Path, samples: int) -> Evaluation:
        from workers.compression.evaluate import evaluate_lm

        text, tok = self._texts()[1], self.folder / "tokenizer.json"
        parent = evaluate_lm(self.model, tok, text, window=128, max_windows=samples)
        new = evaluate_lm(new_model, tok, text, window=128, max_windows=samples)
        return Evaluation(self.metric, parent.perplexity, new.perplexity, parent.latency_ms,
                          new.latency_ms, {"tokens": new.tokens})


class EmbeddingModel(Family):
    name = "embedding-model"
    metric = "cosine_distance"
    default_samples = 64  # texts
    default_calibration = 16

    def _feeds(self, count: int, seed: int, batch: int = 8) -> Calibration:
        """Token feeds for `count` real text snippets, all padded to one width (histogram
        calibrators need equal shapes)."""
        from workers.compression.evaluate import text_lines
        from workers.curation.embeddings import Embedder

        ids = Embedder(self.folder).token_ids(text_lines(count, seed=seed, min_chars=40,
                                                         max_chars=200))
        width = max(len(i) for i in ids)
        feeds = []
        for start in range(0, len(ids), batch):
            rows = ids[start:start + batch]
            input_ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for r, row in enumerate(rows):
                input_ids[r, :len(row)], mask[r, :len(row)] = row, 1
            feeds.append({"input_ids": input_ids, "attention_mask": mask})
        return feeds

    def calibration(self, count: int) -> Calibration:
        return self._feeds(count, seed=1)

    def probe(self) -> Calibration:
        return self._feeds(16, seed=2)

    def compare(self, new_model: Path, samples: int) -> Evaluation:
        import onnxruntime as ort

        feeds = self._feeds(samples, seed=3)
        sessions = [ort.InferenceSession(str(m), providers=["CPUExecutionProvider"])
                    for m in (self.model, new_model)]
        cosines = []
        for feed in feeds:
            a, b = (s.run(["sentence_embedding"], feed)[0].astype(np.float64) for s in sessions)
            cosines += list(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1)
                                                     * np.linalg.norm(b, axis=1)))
        parent_ms, new_ms = _latencies(self.model, new_model, feeds[:4])
        return Evaluation(self.metric, 0.0, 1.0 - float(np.mean(cosines)), parent_ms, new_ms,
                          {"texts": samples, "min_cosine": round(float(np.min(cosines)), 6)})


def family_of(name: str, folder: Path, model: Path, inputs: list[dict]) -> Family:
    if name in OCR_RECOGNIZERS:
        return OcrRecognizer(folder, model, inputs)
    if (folder / "embedding.json").exists():
        return EmbeddingModel(folder, model, inputs)
    if (folder / "tokenizer.json").exists() and (folder / "generation.json").exists():
        return LanguageModel(folder, model, inputs)
    return Family(folder, model, inputs)


def _latencies(parent: Path, new: Path, feeds: Calibration) -> tuple[float, float]:
    """Median latencies, parent and new interleaved twice, best of each (noise only adds)."""
    p1, n1 = latency_ms(parent, feeds), latency_ms(new, feeds)
    p2, n2 = latency_ms(parent, feeds), latency_ms(new, feeds)
    return min(p1, p2), min(n1, n2)
