"""ScoreTexts: quality signals for a few texts at once — language, profanity, the heuristic
filters' decisions with their default parameters, and raw signals."""

from __future__ import annotations

import functools
from pathlib import Path

from workers.curation.documents import Document
from workers.curation.filters import build_filter
from workers.curation.steps import STEP_TYPES

HEURISTICS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


@functools.cache
def _heuristics():
    return {name: build_filter(STEP_TYPES[name]()) for name in HEURISTICS}


@functools.cache
def _language():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def signals(text: str) -> dict[str, float]:
    words = text.split()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return {
        "characters": float(len(text)),
        "words": float(len(words)),
        "mean_word_length": sum(map(len, words)) / len(words) if words else 0.0,
        "lines": float(len(lines)),
        "duplicate_line_fraction": 1 - len(set(lines)) / len(lines) if lines else 0.0,
        "non_alpha_word_fraction": (sum(not any(c.isalpha() for c in w) for w in words)
                                    / len(words)) if words else 0.0,
    }


def score_texts(texts: list[str], lm_folder: Path | None = None) -> list[dict]:
    """With `lm_folder` (the reference LM's export) also perplexity and the machine-text
    detector's statistic (log-perplexity minus mean entropy)."""
    from profanity_check import predict_prob

    profanity = predict_prob(texts) if texts else []
    lm = [None] * len(texts)
    if lm_folder is not None and texts:
        from workers.curation.detect import statistic
        from workers.curation.lm_filters import reference_scorer

        lm = [(s.perplexity, statistic(s)) for s in reference_scorer(lm_folder, 256).score(texts)]
    out = []
    for n, text in enumerate(texts):
        lang, lang_score = _language().classify(text)
        doc = Document(id=str(n), text=text)
        decisions = {name: f.decide(doc) for name, f in _heuristics().items()}
        perplexity, detect = lm[n] if lm[n] is not None else (float("nan"), float("nan"))
        out.append({"language": lang, "language_score": float(lang_score),
                    "profanity": float(profanity[n]), "perplexity": float(perplexity),
                    "machine_text_statistic": float(detect),
                    "filters": {k: "" if d.keep else d.reason for k, d in decisions.items()},
                    "signals": signals(text)})
    return out
