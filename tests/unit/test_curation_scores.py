"""Score histograms of the scoring steps: every judged document lands in one fixed bin (kept
and removed alike), shards' histograms add up, and the HTML report draws one chart per step."""

from __future__ import annotations

from workers.curation.documents import Document
from workers.curation.pipeline import SCORE_BINS, process_shard
from workers.curation.report import to_html
from workers.curation.steps import parse_pipeline

DOCS = [
    Document("en1", "The committee approved the budget for the new library after a long debate."),
    Document("en2", "Rain is expected across the north of the country later this afternoon."),
    Document("fr1", "Le comité a approuvé le budget de la nouvelle bibliothèque hier soir."),
    Document("de1", "Der Ausschuss hat den Haushalt für die neue Bibliothek gestern genehmigt."),
]


def test_each_scoring_step_histograms_every_document_it_judged():
    steps = parse_pipeline([{"step": "language", "languages": ["en"]}, {"step": "profanity"}])
    out = process_shard(DOCS, steps)
    lang, prof = out.histograms["score:language"], out.histograms["score:profanity"]
    assert len(lang) == len(SCORE_BINS["language"]) - 1
    assert sum(lang) == len(DOCS)  # removed documents were scored too
    assert sum(prof) == len(out.kept) == 2  # profanity only saw what language kept
    assert "score:gopher_quality" not in out.histograms  # a heuristic without one score


def test_the_report_draws_one_chart_per_scoring_step():
    steps = parse_pipeline([{"step": "language", "languages": ["en"]}])
    a, b = process_shard(DOCS[:2], steps), process_shard(DOCS[2:], steps)
    merged = [x + y for x, y in zip(a.histograms["score:language"],
                                    b.histograms["score:language"], strict=True)]
    page = to_html({"steps": [], "histograms": {"score:language": merged,
                                                "score:unknown_step": [1, 2]}})
    assert "Scores of language (4 documents scored)" in page
    assert "unknown_step" not in page  # no bins known: not drawn rather than mislabelled
