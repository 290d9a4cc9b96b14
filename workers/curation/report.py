"""The curation report: the run's summary as JSON, and one self-contained HTML page (inline SVG
charts, no scripts, nothing fetched) with documents kept and removed per step and reason, and
the document-length histograms before and after, and a histogram of each scoring step's scores."""

from __future__ import annotations

import html
import json

from workers.curation.pipeline import SCORE_BINS, WORD_BINS


def summary_steps(steps: list[dict], stats: dict[str, int], documents_in: int) -> list[dict]:
    """Per step, in pipeline order: documents in, kept, removed and the reasons, from the
    counters `<step>.kept` / `<step>.removed:<why>` (filters first, then the global steps, dedup
    and select, as they ran)."""
    out, flowing = [], documents_in
    ordered = [s for s in steps if s["kind"] == "filter"] + \
              [s for s in steps if s["kind"] != "filter"]
    for s in ordered:
        name = s["step"]
        reasons = {f"{name}:{k.split(':', 1)[1]}": v for k, v in stats.items()
                   if k.startswith(f"{name}.removed:")}
        removed = sum(reasons.values())
        kept = int(stats.get(f"{name}.kept", flowing - removed))
        out.append({"step": name, "documents_in": flowing, "kept": kept, "removed": removed,
                    "reasons": reasons})
        flowing = kept
    return out


def to_json(summary: dict) -> bytes:
    return json.dumps(summary, indent=2, sort_keys=True).encode()


def _bars(title: str, rows: list[tuple[str, int, str]], width: int = 640) -> str:
    """A horizontal bar chart: (label, value, colour) per row."""
    if not rows:
        return ""
    top = max(v for _, v, _ in rows) or 1
    bar_h, label_w = 22, 260
    parts = [f'<svg width="{width}" height="{bar_h * len(rows) + 30}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>']
    for n, (label, value, colour) in enumerate(rows):
        y = 24 + n * bar_h
        w = int((width - label_w - 70) * value / top)
        parts += [f'<text x="0" y="{y + 15}">{html.escape(label[:40])}</text>',
                  f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{bar_h - 6}" '
                  f'fill="{colour}"/>',
                  f'<text x="{label_w + w + 6}" y="{y + 15}">{value:,}</text>']
    parts.append("</svg>")
    return "\n".join(parts)


def to_html(summary: dict) -> str:
    steps = summary.get("steps", [])
    flow = []
    for s in steps:
        flow += [(f"{s['step']} kept", s["kept"], "#4c9a2a"),
                 (f"{s['step']} removed", s["removed"], "#c0392b")]
    reasons = sorted(((r.split(":duplicate_of:")[0], c, "#c0392b")
                      for s in steps for r, c in s["reasons"].items()),
                     key=lambda r: -r[1])
    merged: dict[str, int] = {}
    for label, count, _ in reasons:  # duplicate_of:<id> reasons collapse into one bar per step
        merged[label] = merged.get(label, 0) + count
    bins = [f"{WORD_BINS[i]:,}–{WORD_BINS[i + 1]:,}" for i in range(len(WORD_BINS) - 1)]
    hist = summary.get("histograms", {})
    length_rows = []
    for i, label in enumerate(bins):
        before = hist.get("words_in", [0] * len(bins))[i]
        after = hist.get("words_kept", [0] * len(bins))[i]
        if before or after:
            length_rows += [(f"{label} words, in", before, "#7f8c8d"),
                            (f"{label} words, kept", after, "#4c9a2a")]
    rows = "".join(f"<tr><td>{html.escape(s['step'])}</td><td>{s['documents_in']:,}</td>"
                   f"<td>{s['kept']:,}</td><td>{s['removed']:,}</td></tr>" for s in steps)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary.get("notes", []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Curation report {html.escape(
        summary.get('job', ''))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}
td,th{{padding:.2em .8em;text-align:right}}td:first-child{{text-align:left}}
svg text{{font-size:12px}}</style></head><body>
<h1>Curation report</h1>
<p>{summary.get('documents_in', 0):,} documents in {summary.get('shards', 0)} shards
({summary.get('shards_resumed', 0)} resumed from an earlier run):
<b>{summary.get('documents_kept', 0):,} kept</b>, {summary.get('documents_removed', 0):,} removed,
in {summary.get('seconds', 0):.1f} s. Output: <code>{html.escape(
        summary.get('output_prefix', ''))}</code></p>
<table><tr><th>step</th><th>in</th><th>kept</th><th>removed</th></tr>{rows}</table>
<ul>{notes}</ul>
{_bars("Documents kept and removed per step", flow)}
{_bars("Removed documents by reason", [(k, v, "#c0392b") for k, v in merged.items()])}
{_bars("Document length (words): all documents and kept documents", length_rows)}
{_score_histograms(hist)}
{_step_reports(summary.get("step_reports", []))}
</body></html>
"""


def _score_histograms(hist: dict[str, list[int]]) -> str:
    """One chart per scoring step (`score:<step>`): how its scores spread over every document
    it judged, kept and removed alike, on the step's fixed bins."""
    charts = []
    for key in sorted(k for k in hist if k.startswith("score:")):
        step = key.removeprefix("score:")
        bins = SCORE_BINS.get(step)
        if bins is None or len(bins) != len(hist[key]) + 1:
            continue
        edge = [("−∞" if b <= -1e9 else "∞" if b >= 1e9 else f"{b:g}") for b in bins]
        rows = [(f"{edge[i]} – {edge[i + 1]}", n, "#2e86c1")
                for i, n in enumerate(hist[key]) if n]
        charts.append(_bars(f"Scores of {step} ({sum(hist[key]):,} documents scored)", rows))
    return "\n".join(charts)


TEMPLATE_ROWS = 50


def _step_reports(reports: list[dict]) -> str:
    """What global steps show beyond counts: drain_templates' most frequent templates (a
    table), domain_cluster's cluster sizes (bars, each labelled with its most central
    document)."""
    parts = []
    for r in reports:
        step = html.escape(r["step"])
        if "templates" in r:
            rows = "".join(f"<tr><td>{t['id']}</td><td>{t['count']:,}</td><td>{t['kept']:,}</td>"
                           f"<td style=\"text-align:left\"><code>{html.escape(t['template'])}"
                           "</code></td></tr>" for t in r["templates"][:TEMPLATE_ROWS])
            parts.append(f"<h2>Log templates ({step})</h2><p>{r['templates_total']:,} templates"
                         f", the most frequent first.</p><table><tr><th>id</th><th>records</th>"
                         f"<th>kept</th><th>template</th></tr>{rows}</table>")
        elif isinstance(r.get("clusters"), list):
            parts.append(_bars(f"Documents per cluster ({r['step']})", [
                (f"{c['cluster']}: {c['example']}", c["size"], "#2980b9")
                for c in r["clusters"]]))
    return "\n".join(parts)
