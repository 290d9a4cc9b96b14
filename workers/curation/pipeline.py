"""One curation run, as pure functions over documents: the shard stage and the global stage.

Shard stage (`process_shard`, one task per shard, in parallel): every per-document filter step
in pipeline order, then for each global step (dedup, select, annotate) the key, signature,
score, embedding or log message of each kept document. Global stage (`global_stage`, once,
after every shard): the global steps over all shards' keys, in pipeline order, each over the
documents the previous one kept; besides removals, a global step may add metadata to the
documents it keeps (drain_templates, domain_cluster) and report more than counts.

So global steps always run after the filter steps, whatever their place in the list: a duplicate
is decided among documents that passed every filter (the order datatrove's and NeMo Curator's
example pipelines use), and a CoLoR-Filter cut among the documents still there.
`order_note` says so when a pipeline lists them otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.curation import color, dedup, embed_dedup, log_steps
from workers.curation.documents import Document
from workers.curation.filters import build_filter, run_filters
from workers.curation.steps import (
    ColorFilterStep,
    DomainClusterStep,
    DrainTemplatesStep,
    EmbedDedupStep,
    ExactDedupStep,
    MinhashDedupStep,
    StepSpec,
)

# "annotate": adds metadata to documents (domain_cluster), removes none.
GLOBAL_KINDS = ("dedup", "select", "annotate")
# The global pass of the steps whose logic lives in their own module: (step, doc id -> shard
# value) -> (removed: doc id -> (why, reason), counted as `<step>.removed:<why>`, the document
# removed with `<step>:<reason>`; metadata: doc id -> fields added to the kept document;
# report: what the run report shows of the step, {} for nothing).
GLOBAL_PASSES = {EmbedDedupStep: embed_dedup.deduplicate, DomainClusterStep: embed_dedup.cluster,
                 DrainTemplatesStep: log_steps.mine}

# Fixed (log-spaced) bins of document length in words, so shards' histograms add up.
WORD_BINS = [0, 10, 30, 100, 300, 1000, 3000, 10_000, 100_000, 10**9]
_UNIT = [round(0.1 * k, 1) for k in range(11)]
# Fixed bins of the scores steps decide on (histogram `score:<step>`), for the same reason:
# probabilities, perplexity (log-spaced), the detector's statistic (log-ppl minus entropy,
# nats) and CoLoR's loss reduction (nats).
SCORE_BINS = {
    "language": _UNIT, "profanity": _UNIT,
    "lm_perplexity": [1, 3, 10, 30, 100, 300, 1000, 3000, 10_000, 1e12],
    "llm_detect": [-1e9, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 1e9],
    "color_filter": [-1e9, -1, -0.5, -0.2, -0.1, 0, 0.1, 0.2, 0.5, 1, 1e9],
}


@dataclass
class ShardOutcome:
    kept: list[Document]
    removed: list[tuple[Document, str]]
    stats: Counter  # "<step>.kept", "<step>.removed:<why>", "documents_in"
    # Per global step index (as a string, JSON keys): doc id -> exact key (hex), signature (hex)
    # or CoLoR score (repr of the float; "nan" for a text too short to score).
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    histograms: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class GlobalOutcome:
    removed: dict[str, str]  # doc id -> reason, e.g. `exact_dedup:duplicate_of:<id>`
    stats: Counter  # "<step>.kept", "<step>.removed:<why>"
    # doc id -> fields a global step adds to a kept document's metadata (drain_templates:
    # template, template_id, parameters; domain_cluster: cluster, cluster_similarity).
    metadata: dict[str, dict] = field(default_factory=dict)
    # Per step with more to show than counts: {"step": name, ...} (templates, clusters).
    reports: list[dict] = field(default_factory=list)


def filter_steps(steps: list[StepSpec]) -> list[StepSpec]:
    return [s for s in steps if s.kind == "filter"]


def global_steps(steps: list[StepSpec]) -> list[tuple[int, StepSpec]]:
    return [(i, s) for i, s in enumerate(steps) if s.kind in GLOBAL_KINDS]


def order_note(steps: list[StepSpec]) -> str:
    kinds = [s.kind in GLOBAL_KINDS for s in steps]
    if True in kinds and False in kinds[kinds.index(True):]:
        return ("dedup and selection steps run after every filter step (across all shards), "
                "not at their place in the list")
    return ""


def _histogram(values: list[float], bins: list[float]) -> list[int]:
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    return [int(c) for c in counts]


def needs_lm(steps: list[StepSpec]) -> bool:
    return any(s.needs_lm for s in steps)


def process_shard(docs: list[Document], steps: list[StepSpec],
                  lm_folder: Path | None = None,
                  model_folder: Callable[[str], Path] | None = None) -> ShardOutcome:
    """`lm_folder`: the reference LM's export, for steps that score with it; `model_folder`:
    a registry model reference ("name" or "name@version") -> its local export folder, for
    steps that name their models (color_filter)."""
    stats: Counter = Counter({"documents_in": len(docs)})
    filters = [build_filter(s, lm_folder) for s in filter_steps(steps)]
    scores: dict[str, list[float]] = {}
    kept, removed = run_filters(docs, filters, stats, scores) if filters else (list(docs), [])
    keys: dict[str, dict[str, str]] = {}
    embedded: dict[int, list[str]] = {}  # max_chars -> vectors: embedding steps share them
    for index, step in global_steps(steps):
        ids = [d.id for d in kept]
        if isinstance(step, ColorFilterStep):
            if model_folder is None:
                raise ValueError(f"{step.step} needs its models, and no model_folder was given")
            color_values = color.color_scores(kept, model_folder(step.prior_model),
                                              model_folder(step.conditional_model),
                                              step.max_tokens)
            values = [repr(v) for v in color_values]
            scores["color_filter"] = [v for v in color_values if math.isfinite(v)]
            kept = [dataclasses.replace(d, metadata={**d.metadata, color.METADATA_KEY:
                                                     round(v, 6) if math.isfinite(v) else None})
                    for d, v in zip(kept, color_values, strict=True)]
        elif isinstance(step, EmbedDedupStep | DomainClusterStep):
            if model_folder is None:
                raise ValueError(f"{step.step} needs the embedding model, and no model_folder "
                                 "was given")
            if step.max_chars not in embedded:
                embedded[step.max_chars] = embed_dedup.encode(
                    kept, model_folder(embed_dedup.MODEL), step.max_chars, step.batch_size)
            values = embedded[step.max_chars]
        elif isinstance(step, DrainTemplatesStep):
            values = log_steps.contents(step, kept)
        elif isinstance(step, ExactDedupStep):
            values = dedup.exact_keys(kept)
        elif isinstance(step, MinhashDedupStep):
            values = [sig.tobytes().hex() for sig in dedup.minhash_signatures(
                kept, num_perm=step.num_perm, shingle=step.shingle, seed=step.seed)]
        else:
            raise ValueError(f"no shard stage for global step {step.step}")
        keys[str(index)] = dict(zip(ids, values, strict=True))
    histograms = {"words_in": _histogram([len(d.text.split()) for d in docs], WORD_BINS),
                  "words_kept": _histogram([len(d.text.split()) for d in kept], WORD_BINS)}
    histograms.update({f"score:{name}": _histogram(values, SCORE_BINS[name])
                       for name, values in scores.items() if name in SCORE_BINS})
    return ShardOutcome(kept, removed, stats, keys, histograms)


def global_duplicates(steps: list[StepSpec], keys: list[dict[str, dict[str, str]]]
                      ) -> tuple[dict[str, str], Counter]:
    """`global_stage`'s removals and stats."""
    outcome = global_stage(steps, keys)
    return outcome.removed, outcome.stats


def global_stage(steps: list[StepSpec], keys: list[dict[str, dict[str, str]]]
                 ) -> GlobalOutcome:
    """The global steps over each shard's `ShardOutcome.keys`: doc id -> reason (e.g.
    `exact_dedup:duplicate_of:<id>`, `color_filter:below_cut:<score>`) for every document a
    global step removes, the steps' stats, metadata for kept documents, the steps' reports."""
    removed: dict[str, str] = {}
    stats: Counter = Counter()
    outcome = GlobalOutcome(removed, stats)
    for index, step in global_steps(steps):
        merged = {doc_id: value for shard in keys for doc_id, value in
                  shard.get(str(index), {}).items() if doc_id not in removed}
        if isinstance(step, ColorFilterStep):
            cut = color.select({d: float(v) for d, v in merged.items()}, step)
            for doc_id, score in cut.items():
                removed[doc_id] = color.removal_reason(step, score)
            stats[f"{step.step}.kept"] += len(merged) - len(cut)
            if cut:
                stats[f"{step.step}.removed:{color.REASON}"] += len(cut)
            continue
        if type(step) in GLOBAL_PASSES:
            _apply_pass(step, merged, outcome)
            continue
        if isinstance(step, ExactDedupStep):
            groups = dedup.duplicate_groups(merged)
        else:
            groups = dedup.near_duplicate_groups(
                {d: bytes.fromhex(v) for d, v in merged.items()}, threshold=step.threshold,
                num_perm=step.num_perm)
        dropped = 0
        for doc_id, kept_id in groups.items():
            if doc_id != kept_id:
                removed[doc_id] = f"{step.step}:duplicate_of:{kept_id}"
                dropped += 1
        stats[f"{step.step}.kept"] += len(merged) - dropped
        if dropped:
            stats[f"{step.step}.removed:duplicate"] += dropped
    return outcome


def _apply_pass(step: StepSpec, merged: dict[str, str], outcome: GlobalOutcome) -> None:
    dropped, metadata, report = GLOBAL_PASSES[type(step)](step, merged)
    for doc_id, (why, reason) in dropped.items():
        outcome.removed[doc_id] = f"{step.step}:{reason}"
        outcome.stats[f"{step.step}.removed:{why}"] += 1
    outcome.stats[f"{step.step}.kept"] += len(merged) - len(dropped)
    for doc_id, fields in metadata.items():
        outcome.metadata.setdefault(doc_id, {}).update(fields)
    if report:
        outcome.reports.append({"step": step.step, **report})
