"""Per-document filters: keep or remove one document, with a reason.

The heuristics are datatrove's own filters (Gopher quality and repetition, C4, FineWeb), called
through their public `filter(doc)`, so a decision here is the decision datatrove makes; language
id is py3langid (its model ships in the wheel) and profanity alt-profanity-check, both offline.
datatrove's LanguageFilter and C4BadWordsFilter are not used: they download their models.

`run_filters` applies filters in order, each to the documents the previous ones kept (as a
datatrove pipeline does), so the first failing filter gives the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workers.curation.documents import Document
from workers.curation.steps import (
    C4QualityStep,
    FineWebQualityStep,
    GopherQualityStep,
    GopherRepetitionStep,
    LanguageStep,
    PipelineError,
    ProfanityStep,
    StepSpec,
)


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str = ""  # "<step>:<why>" when removed, e.g. "gopher_quality:gopher_short_doc"
    text: str | None = None  # the new text of a kept document the filter rewrote (c4_quality)
    score: float | None = None  # what the decision was made on, for the report's histograms


class DocumentFilter(Protocol):
    """`decide` must not mutate the document. A filter may also offer
    `decide_batch(docs) -> list[Decision]` (same length, same order), which run_filters uses."""

    name: str

    def decide(self, doc: Document) -> Decision: ...


class DatatroveFilter:
    """One datatrove BaseFilter. datatrove's `filter` returns a bool or (False, reason) and may
    rewrite `doc.text` (C4 drops lines), so it gets a copy."""

    def __init__(self, name: str, inner):
        self.name = name
        self.inner = inner

    def decide(self, doc: Document) -> Decision:
        from datatrove.data import Document as DatatroveDocument

        copy = DatatroveDocument(text=doc.text, id=doc.id, metadata=dict(doc.metadata))
        result = self.inner.filter(copy)
        keep, why = result if isinstance(result, tuple) else (result, None)
        if not keep:
            return Decision(False, f"{self.name}:{why or 'rejected'}")
        return Decision(True, text=copy.text if copy.text != doc.text else None)


@functools.cache
def _language_identifier():
    """One py3langid model per process (~0.6 s to load); read-only once built."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LanguageIdFilter:
    """py3langid over all its 97 languages with normalised probabilities; removed with reason
    `language:<code>` when another language wins, `language:low_score` when an accepted one
    wins below min_score."""

    name = "language"

    def __init__(self, languages: list[str], min_score: float):
        self.identifier = _language_identifier()
        unknown = sorted(set(languages) - set(self.identifier.labels))
        if unknown:
            raise PipelineError("language.languages", f"py3langid does not know {unknown}")
        self.languages = frozenset(languages)
        self.min_score = min_score

    def decide(self, doc: Document) -> Decision:
        lang, score = self.identifier.classify(doc.text)
        if lang not in self.languages:
            return Decision(False, f"language:{lang}", score=score)
        if score < self.min_score:
            return Decision(False, "language:low_score", score=score)
        return Decision(True, score=score)


class ProfanityFilter:
    """alt-profanity-check's linear SVM over the whole text; a batch is one sklearn call."""

    name = "profanity"

    def __init__(self, threshold: float):
        from profanity_check import predict_prob

        self.predict_prob = predict_prob
        self.threshold = threshold

    def decide(self, doc: Document) -> Decision:
        return self.decide_batch([doc])[0]

    def decide_batch(self, docs: list[Document]) -> list[Decision]:
        if not docs:
            return []
        probs = self.predict_prob([d.text for d in docs])
        return [Decision(True, score=float(p)) if p < self.threshold
                else Decision(False, "profanity:profane", score=float(p)) for p in probs]


def _datatrove(spec: StepSpec) -> DatatroveFilter:
    try:
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )
    except ImportError as exc:
        raise ImportError(f"the {spec.step} step needs datatrove with spaCy: pip install "
                          "'datatrove==0.10.1' spacy orjson") from exc
    params = spec.model_dump()
    if isinstance(spec, FineWebQualityStep) and params["stop_chars"] is not None:
        params["stop_chars"] = tuple(params["stop_chars"])
    cls = {GopherQualityStep: GopherQualityFilter, GopherRepetitionStep: GopherRepetitionFilter,
           C4QualityStep: C4QualityFilter, FineWebQualityStep: FineWebQualityFilter}[type(spec)]
    return DatatroveFilter(spec.step, cls(exclusion_writer=None, **params))


_BUILDERS: dict[type[StepSpec], Callable[[StepSpec], DocumentFilter]] = {
    GopherQualityStep: _datatrove,
    GopherRepetitionStep: _datatrove,
    C4QualityStep: _datatrove,
    FineWebQualityStep: _datatrove,
    LanguageStep: lambda s: LanguageIdFilter(s.languages, s.min_score),
    ProfanityStep: lambda s: ProfanityFilter(s.threshold),
}


def build_filter(spec: StepSpec, lm_folder: Path | None = None) -> DocumentFilter:
    """The filter a "filter"-kind step describes (loads its model or tokenizer lazily).
    Steps that score with the reference LM need its export folder (`lm_folder`)."""
    if spec.needs_lm:
        if lm_folder is None:
            raise PipelineError(f"{spec.step}", "needs the reference LM, and none was given")
        from workers.curation.lm_filters import build_lm_filter

        return build_lm_filter(spec, lm_folder)
    builder = _BUILDERS.get(type(spec))
    if builder is None:
        raise ValueError(f"{spec.step} is a {spec.kind} step, not a per-document filter")
    return builder(spec)


def _segments(filters: list[DocumentFilter]) -> list[list[DocumentFilter]]:
    """Runs of per-document filters, and each batch filter on its own."""
    out: list[list[DocumentFilter]] = []
    for f in filters:
        if hasattr(f, "decide_batch"):
            out.append([f])
        elif out and not hasattr(out[-1][0], "decide_batch"):
            out[-1].append(f)
        else:
            out.append([f])
    return out


def run_filters(docs: Iterable[Document], filters: list[DocumentFilter],
                stats: Counter | None = None, scores: dict[str, list[float]] | None = None
                ) -> tuple[list[Document], list[tuple[Document, str]]]:
    """(kept, removed with reason), both in input order. Each filter sees only the documents
    the previous ones kept, with their rewritten text (a removed document is returned as the
    filter that removed it saw it); input documents are never mutated.
    Counts `<step>.kept` and `<step>.removed:<why>` into `stats` when given, and appends each
    finite `Decision.score` to `scores[<step>]` when given (kept and removed alike).

    A document goes through a run of per-document filters before the next one starts (as in a
    datatrove pipeline): datatrove caches the words of the last 5 texts, so gopher_quality gets
    those gopher_repetition computed instead of running spaCy again. A filter with
    `decide_batch` gets all the documents that reach it at once."""
    survivors = list(enumerate(docs))
    removed: list[tuple[int, Document, str]] = []

    def apply(f: DocumentFilter, i: int, doc: Document, decision: Decision) -> Document | None:
        if scores is not None and decision.score is not None and math.isfinite(decision.score):
            scores.setdefault(f.name, []).append(decision.score)
        if not decision.keep:
            removed.append((i, doc, decision.reason))
            if stats is not None:
                stats[f"{f.name}.removed:{decision.reason.removeprefix(f'{f.name}:')}"] += 1
            return None
        if stats is not None:
            stats[f"{f.name}.kept"] += 1
        if decision.text is None:
            return doc
        return dataclasses.replace(doc, text=decision.text, metadata=dict(doc.metadata))

    for segment in _segments(filters):
        kept = []
        if hasattr(segment[0], "decide_batch"):
            f = segment[0]
            decisions = f.decide_batch([doc for _, doc in survivors])
            for (i, doc), decision in zip(survivors, decisions, strict=True):
                if (doc := apply(f, i, doc, decision)) is not None:
                    kept.append((i, doc))
        else:
            for i, doc in survivors:
                for f in segment:
                    if (doc := apply(f, i, doc, f.decide(doc))) is None:
                        break
                else:
                    kept.append((i, doc))
        survivors = kept
    removed.sort(key=lambda r: r[0])
    return [doc for _, doc in survivors], [(doc, reason) for _, doc, reason in removed]
