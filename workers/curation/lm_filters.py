"""Filters that score documents with the reference LM: perplexity bounds and the zero-shot
machine-text detector. Both score a batch of documents at once (`decide_batch`), so the LM
runs over windows of many documents together."""

from __future__ import annotations

import functools
import math
from pathlib import Path

from workers.curation.detect import statistic
from workers.curation.documents import Document
from workers.curation.filters import Decision
from workers.curation.lm_scores import LmScorer
from workers.curation.steps import LlmDetectStep, LmPerplexityStep, StepSpec


@functools.cache
def reference_scorer(folder: Path, max_tokens: int) -> LmScorer:
    """One scorer per process, model version and length: the session is ~650 MB."""
    return LmScorer(folder / "model.onnx", folder / "tokenizer.json", max_tokens=max_tokens)


class LmPerplexityFilter:
    name = "lm_perplexity"

    def __init__(self, spec: LmPerplexityStep, folder: Path):
        self.spec, self.scorer = spec, reference_scorer(folder, spec.max_tokens)

    def decide(self, doc: Document) -> Decision:
        return self.decide_batch([doc])[0]

    def decide_batch(self, docs: list[Document]) -> list[Decision]:
        out = []
        for s in self.scorer.score([d.text for d in docs]):
            if not math.isfinite(s.perplexity):
                out.append(Decision(False, "lm_perplexity:too_short"))
            elif s.perplexity > self.spec.max_perplexity:
                out.append(Decision(False, "lm_perplexity:too_high", score=s.perplexity))
            elif s.perplexity < self.spec.min_perplexity:
                out.append(Decision(False, "lm_perplexity:too_low", score=s.perplexity))
            else:
                out.append(Decision(True, score=s.perplexity))
        return out


class LlmDetectFilter:
    name = "llm_detect"

    def __init__(self, spec: LlmDetectStep, folder: Path):
        self.spec, self.scorer = spec, reference_scorer(folder, spec.max_tokens)

    def decide(self, doc: Document) -> Decision:
        return self.decide_batch([doc])[0]

    def decide_batch(self, docs: list[Document]) -> list[Decision]:
        # A text too short to score (NaN statistic) is not flagged: no evidence either way.
        stats = [statistic(s) for s in self.scorer.score([d.text for d in docs])]
        return [Decision(False, "llm_detect:machine_generated", score=t)
                if t < self.spec.threshold else Decision(True, score=t) for t in stats]


def build_lm_filter(spec: StepSpec, folder: Path):
    if isinstance(spec, LmPerplexityStep):
        return LmPerplexityFilter(spec, folder)
    if isinstance(spec, LlmDetectStep):
        return LlmDetectFilter(spec, folder)
    raise ValueError(f"{spec.step} is not an LM step")
