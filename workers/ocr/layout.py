"""Plain text from detected boxes. The detector often returns one box per word or phrase; boxes
whose vertical extents overlap by more than half the smaller height are one visual row, joined by
spaces left to right; rows are joined by newlines top to bottom."""

from __future__ import annotations


def _span(box: list[tuple[float, float]]) -> tuple[float, float, float]:
    ys = [p[1] for p in box]
    return min(ys), max(ys), min(p[0] for p in box)


def rows_of(lines: list[dict]) -> list[list[dict]]:
    """Groups result lines (dicts with `box`) into visual rows, each sorted left to right."""
    rows: list[tuple[float, float, list[dict]]] = []
    for line in sorted(lines, key=lambda ln: sum(_span(ln["box"])[:2])):
        top, bottom, _ = _span(line["box"])
        for i, (rtop, rbottom, members) in enumerate(rows):
            overlap = min(bottom, rbottom) - max(top, rtop)
            if overlap > 0.5 * min(bottom - top, rbottom - rtop):
                members.append(line)
                rows[i] = (min(top, rtop), max(bottom, rbottom), members)
                break
        else:
            rows.append((top, bottom, [line]))
    rows.sort(key=lambda r: r[0])
    return [sorted(members, key=lambda ln: _span(ln["box"])[2]) for _, _, members in rows]


def text_of(lines: list[dict]) -> str:
    """Rows joined by newlines; runs of spaces collapse to one (the CTC decoder sometimes emits
    two for a wide gap, which no reader of plain text wants)."""
    return "\n".join(" ".join(" ".join(ln["text"] for ln in row).split())
                     for row in rows_of(lines))
