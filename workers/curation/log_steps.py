"""Log datasets: the `drain_templates` step (Drain through drain3, workers/curation/logs.py).

A document is one log record. A multi-line record (a stack trace) stays one message: Drain
splits tokens on any whitespace, newlines included, so its lines become one template. With a
Loghub `system` (and `strip_header`), the header of the record's first line is parsed with that
system's log format and only its `<Content>` (plus any further lines) is mined, as in the Loghub
benchmark; a record whose first line does not match the format is mined whole.

Why the global stage: Drain's templates generalise as lines arrive and are numbered in order of
creation, so a miner per shard would word and number the same event differently on each shard.
The shard stage therefore only extracts each record's content (in parallel); the global stage
runs one Drain pass over all shards' contents in order (shards in input order, records in shard
order), so every record gets the one final template of its group and `dedup_by_template` keeps
the first records of each template in that order. drain3 took 8,000-23,000 records/s on one core
here (Loghub Android and HDFS, parameters included), so the pass fits the default 300 s task
limit up to about a million records; split larger log sets by time or source.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from workers.curation import loghub
from workers.curation.documents import Document
from workers.curation.logs import MinerSettings, TemplateMiner, dedup_by_template

DUPLICATE = "duplicate_template"  # the removal reason
REPORT_TEMPLATES = 100  # templates in the report (and the job result), the most frequent


def miner_settings(step) -> MinerSettings:
    """The step's Drain settings: the Loghub system's (or MinerSettings' defaults), with the
    step's own `similarity`, `depth` and `masks` in their place when given."""
    base = loghub.SYSTEMS[step.system].miner_settings() if step.system else MinerSettings()
    return MinerSettings(
        similarity=base.similarity if step.similarity is None else step.similarity,
        depth=base.depth if step.depth is None else step.depth,
        masks=base.masks if step.masks is None else tuple((m, "*") for m in step.masks))


def contents(step, docs: Sequence[Document]) -> list[str]:
    """What Drain reads of each record: the `<Content>` of the system's header format when the
    step strips headers and the first line matches, else the whole text."""
    if not (step.system and step.strip_header):
        return [d.text for d in docs]
    header = loghub.SYSTEMS[step.system].header_regex()
    out = []
    for d in docs:
        first, newline, rest = d.text.strip().partition("\n")
        m = header.match(first.strip())
        out.append(m.group("Content") + newline + rest if m else d.text)
    return out


def mine(step, contents_by_doc: dict[str, str]
         ) -> tuple[dict[str, tuple[str, str]], dict[str, dict], dict]:
    """One Drain pass over every record, in the dict's order. Returns (removed: doc id ->
    ("duplicate_template", "duplicate_template:<template id>") for the records past
    `keep_per_template` when
    `dedup_by_template`; metadata: doc id -> {template, template_id, parameters} for every kept
    record; report: {templates_total, templates: [{id, template, count, kept}] (the
    REPORT_TEMPLATES most frequent, most frequent first)})."""
    ids = list(contents_by_doc)
    parsed = TemplateMiner(miner_settings(step)).parse_all([contents_by_doc[d] for d in ids])
    removed: dict[str, tuple[str, str]] = {}
    if step.dedup_by_template:
        _, dropped = dedup_by_template(parsed, step.keep_per_template)
        removed = {ids[i]: (DUPLICATE, f"{DUPLICATE}:{parsed[i].template_id}") for i in dropped}
    metadata = {doc_id: {"template": p.template, "template_id": p.template_id,
                         "parameters": p.parameters}
                for doc_id, p in zip(ids, parsed, strict=True) if doc_id not in removed}
    counts = Counter(p.template_id for p in parsed)
    kept = Counter(m["template_id"] for m in metadata.values())
    texts = {p.template_id: p.template for p in parsed}
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    templates = [{"id": t, "template": texts[t], "count": counts[t], "kept": kept[t]}
                 for t in ranked[:REPORT_TEMPLATES]]
    return removed, metadata, {"templates_total": len(counts), "templates": templates}
