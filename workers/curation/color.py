"""CoLoR-Filter ("Conditional Loss Reduction", Brandfonbrener et al., 2024): which documents a
model fine-tuned on the target domain finds much easier than the model it started from.

score(doc) = mean NLL under the prior - mean NLL under the conditional model (nats per token,
the first `max_tokens` tokens, both through `lm_scores.LmScorer`). The prior is the base LM, the
conditional model the same LM after fine-tuning on a small target sample (workers/curation/
finetune.py), so the difference is what the target sample taught the model about a document.

Like dedup it runs in two passes: per shard, each kept document's score (`color_scores`);
then one global pass (`select`) over all shards' scores that draws the cut, so a top fraction is
a fraction of the whole corpus, not of each shard. A document with under 2 tokens has no score
(NaN) and is never kept. Every scored document carries its score in its metadata
(`color_score`, rounded to 6 decimals; null when NaN), kept or removed.
"""

from __future__ import annotations

import math
from pathlib import Path

from workers.curation.documents import Document
from workers.curation.lm_filters import reference_scorer
from workers.curation.steps import ColorFilterStep

REASON = "below_cut"  # removed as "color_filter:below_cut:<score>"
METADATA_KEY = "color_score"  # each scored document carries its score (null: too short)


def color_scores(docs: list[Document], prior: Path, conditional: Path,
                 max_tokens: int) -> list[float]:
    """score(doc) for each document, in order (NaN for a text too short to score). `prior`
    and `conditional` are export folders (model.onnx, tokenizer.json) with the same
    tokenizer."""
    before = mean_nlls(docs, prior, max_tokens)
    after = mean_nlls(docs, conditional, max_tokens)
    return [b - a for b, a in zip(before, after, strict=True)]


def mean_nlls(docs: list[Document], folder: Path, max_tokens: int) -> list[float]:
    """Mean token NLL (nats) of each document under the export in `folder`; NaN for a text
    of under 2 tokens."""
    return [s.mean_nll for s in reference_scorer(folder, max_tokens).score([d.text for d in docs])]


def select(scores: dict[str, float], step: ColorFilterStep) -> dict[str, float]:
    """doc id -> score of every document the step removes. `keep_fraction`: the
    ceil(fraction * n) highest scores stay, ties broken by the smaller id so that the answer does
    not depend on shard order; `threshold`: documents scoring at least the threshold stay.
    NaN scores are always removed."""
    finite = {d: s for d, s in scores.items() if math.isfinite(s)}
    if step.threshold is not None:
        keep = {d for d, s in finite.items() if s >= step.threshold}
    else:
        ranked = sorted(finite, key=lambda d: (-finite[d], d))
        keep = set(ranked[:math.ceil(step.keep_fraction * len(scores))])
    return {d: s for d, s in scores.items() if d not in keep}


def removal_reason(step: ColorFilterStep, score: float) -> str:
    return f"{step.step}:{REASON}:{score:.4f}"
