"""Reading order, rows and paragraphs from detected boxes (pure).

- Reading order is column-aware: a recursive XY-cut splits a region at vertical gutters at
  least two line heights wide (columns, left to right), else at horizontal gaps (bands, top to
  bottom), keeping consecutive bands that share a gutter together. A full-width title above
  two columns therefore comes first, then the whole left column, then the right.
- Within a block, boxes whose vertical extents overlap by more than half the smaller height are
  one visual row, joined by spaces left to right (the detector often returns one box per word).
- A paragraph ends where the column changes or the gap to the next row is clearly larger than
  the column's usual line gap.

Lines are dicts with `text` and `box` (4 points); every function returns new lists.
"""

from __future__ import annotations

from statistics import median


def _bounds(line: dict) -> tuple[float, float, float, float]:
    xs = [p[0] for p in line["box"]]
    ys = [p[1] for p in line["box"]]
    return min(xs), min(ys), max(xs), max(ys)


def rows_of(lines: list[dict]) -> list[list[dict]]:
    """Groups lines into visual rows (top to bottom), each sorted left to right."""
    rows: list[tuple[float, float, list[dict]]] = []
    for line in sorted(lines, key=lambda ln: _bounds(ln)[1] + _bounds(ln)[3]):
        _, top, _, bottom = _bounds(line)
        for i, (rtop, rbottom, members) in enumerate(rows):
            overlap = min(bottom, rbottom) - max(top, rtop)
            if overlap > 0.5 * min(bottom - top, rbottom - rtop):
                members.append(line)
                rows[i] = (min(top, rtop), max(bottom, rbottom), members)
                break
        else:
            rows.append((top, bottom, [line]))
    rows.sort(key=lambda r: r[0])
    return [sorted(members, key=lambda ln: _bounds(ln)[0]) for _, _, members in rows]


def _gaps(intervals: list[tuple[float, float]], min_gap: float) -> list[float]:
    """Cut positions in the middle of every uncovered stretch at least `min_gap` long."""
    cuts, end = [], None
    for lo, hi in sorted(intervals):
        if end is not None and lo - end >= min_gap:
            cuts.append((end + lo) / 2)
        end = hi if end is None else max(end, hi)
    return cuts


def _split(lines: list[dict], cuts: list[float], axis: int) -> list[list[dict]]:
    parts: list[list[dict]] = [[] for _ in range(len(cuts) + 1)]
    for line in lines:
        b = _bounds(line)
        center = (b[axis] + b[axis + 2]) / 2
        parts[sum(center > c for c in cuts)].append(line)
    return [p for p in parts if p]


def _xy_cut(lines: list[dict], line_h: float, column: tuple[int, ...]
            ) -> list[tuple[tuple[int, ...], list[dict]]]:
    """[(column path, lines of one leaf block)] in reading order."""
    if len(lines) <= 1:
        return [(column, lines)] if lines else []

    def gutters(group: list[dict]) -> list[float]:
        return _gaps([(_bounds(ln)[0], _bounds(ln)[2]) for ln in group], 2.0 * line_h)

    cols = gutters(lines)
    if cols:
        return [leaf for k, part in enumerate(_split(lines, cols, 0))
                for leaf in _xy_cut(part, line_h, (*column, k))]
    bands = _gaps([(_bounds(ln)[1], _bounds(ln)[3]) for ln in lines], 1.0)
    if not bands:
        return [(column, lines)]
    # Consecutive bands that share a gutter are one multi-column region: keep them together so
    # each column is read whole instead of row by row across the gutter.
    groups: list[list[dict]] = []
    for part in _split(lines, bands, 1):
        # (A band that does not cross the gutter joins it: one column may run longer.)
        if groups and gutters(groups[-1]) and gutters(groups[-1] + part):
            groups[-1] = groups[-1] + part
        else:
            groups.append(part)
    return [leaf for group in groups for leaf in _xy_cut(group, line_h, column)]


def page_layout(lines: list[dict]) -> tuple[list[dict], list[dict], str]:
    """(lines in reading order, paragraphs, plain text).

    Paragraphs are `{"text", "lines": [indices into the ordered lines]}`; the text joins a
    paragraph's rows by newlines and paragraphs by a blank line, with whitespace runs collapsed.
    """
    if not lines:
        return [], [], ""
    line_h = median(_bounds(ln)[3] - _bounds(ln)[1] for ln in lines) or 1.0
    rows: list[tuple[tuple[int, ...], list[dict]]] = []
    for column, block in _xy_cut(lines, line_h, ()):
        rows += [(column, row) for row in rows_of(block)]
    gaps = [_bounds(b[0])[1] - _bounds(a[0])[3]
            for (ca, a), (cb, b) in zip(rows, rows[1:], strict=False) if ca == cb]
    usual = median(gaps) if gaps else line_h
    limit = max(usual * 1.6, usual + 0.5 * line_h)

    ordered: list[dict] = []
    paragraphs: list[dict] = []
    prev = None
    for column, row in rows:
        top = min(_bounds(ln)[1] for ln in row)
        new = prev is None or prev[0] != column or top - prev[1] > limit
        if new:
            paragraphs.append({"rows": [], "lines": []})
        paragraphs[-1]["rows"].append(" ".join(" ".join(ln["text"] for ln in row).split()))
        paragraphs[-1]["lines"] += range(len(ordered), len(ordered) + len(row))
        ordered += row
        prev = (column, max(_bounds(ln)[3] for ln in row))
    out = [{"text": "\n".join(p["rows"]), "lines": p["lines"]} for p in paragraphs]
    return ordered, out, "\n\n".join(p["text"] for p in out)


def text_of(lines: list[dict]) -> str:
    """Plain text of one page (see page_layout)."""
    return page_layout(lines)[2]
