"""Long text lines: tiled detection at native resolution and windowed recognition merged on
overlaps (after "Out of Length Text Recognition with Sub-String Matching", SMTR, and LISTER).

Run by hand, PP-OCR shrinks a 7,000-px line to a 2,000-px side (the text ends ~17 px high and the
detector misses it), and a recognizer fed a very wide crop degrades. Here:

- `tile_spans` cuts a long side into overlapping tiles that are detected at native resolution;
  `merge_boxes` joins the pieces of one line that tiles cut apart (their boxes overlap in the
  shared strip) and drops duplicates.
- `plan_windows` cuts a wide crop into overlapping windows at native height; `ctc_decode` keeps
  each character's CTC frame, hence its x position; `merge_windows` joins neighbours on the
  longest common sub-string of their overlap, preferring the match whose positions agree
  (frame positions break ties), and cuts at the overlap's middle when nothing matches.

Everything here is pure numpy / Python; the pipeline owns the model calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LongLineConfig:
    """Sizes for the long-line paths. Windows are in recognizer pixels (crop height scaled to
    48), so they cover the same number of characters whatever the crop's native height."""

    # Detect on tiles when the image's longer side exceeds `tile_above`: one pass shrinks the
    # image to a 2,000-px side, and past ~2x that, text gets too small to find.
    tile_above: int = 4000
    tile_size: int = 2000  # tile side, px (a tile is detected without shrinking)
    tile_overlap: int = 320  # px shared by neighbouring tiles (> the tallest line we expect)
    # Recognize crops wider than `window_above` recognizer px (crop height scaled to 48) as
    # windows of `window_width`: one pass stays exact to ~3,000 px here, then degrades.
    window_above: int = 3200
    window_width: int = 1600
    window_overlap: int = 320  # recognizer px shared by neighbouring windows (~13 chars)


@dataclass
class Decoded:
    """One CTC row: text plus, per kept character, its frame, probability and x position."""

    chars: list[str]
    frames: list[int]
    probs: list[float]
    frame_count: int
    xs: list[float] | None = None  # filled by the caller once the frame → pixel scale is known

    @property
    def text(self) -> str:
        return "".join(self.chars)

    @property
    def confidence(self) -> float:
        # Same rounding as rapidocr's CTCLabelDecode, so single-window lines score identically.
        probs = [round(p, 5) for p in self.probs] or [0.0]
        return float(np.mean(probs).round(5))


def ctc_decode(preds: np.ndarray, charset: list[str]) -> list[Decoded]:
    """Greedy CTC over (N, T, C) probabilities: argmax per frame, first of each run, blank (0)
    dropped. `charset` is the full label list (index 0 = blank, last = space)."""
    idx = preds.argmax(axis=2)
    prob = preds.max(axis=2)
    out = []
    for row_idx, row_prob in zip(idx, prob, strict=True):
        keep = np.ones(len(row_idx), dtype=bool)
        keep[1:] = row_idx[1:] != row_idx[:-1]
        keep &= row_idx != 0
        frames = np.nonzero(keep)[0]
        out.append(Decoded([charset[i] for i in row_idx[frames]], frames.tolist(),
                           row_prob[frames].astype(float).tolist(), len(row_idx)))
    return out


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans of at most `tile` covering [0, length), neighbours sharing `overlap`."""
    if length <= tile:
        return [(0, length)]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step)) + [length - tile]
    return [(s, s + tile) for s in sorted(set(starts))]


def _aabb(quad: np.ndarray) -> tuple[float, float, float, float]:
    return (float(quad[:, 0].min()), float(quad[:, 1].min()), float(quad[:, 0].max()),
            float(quad[:, 1].max()))


def merge_boxes(quads: list[np.ndarray]) -> list[np.ndarray]:
    """Joins boxes of one text line that tiles cut apart: boxes whose vertical extents overlap
    by more than half the smaller height and whose horizontal extents overlap (they meet in a
    shared strip). Separate words (a gap between them) stay separate. A joined line gets the
    minimum-area rotated rectangle around its pieces, so a slightly rotated long line is
    straightened when cropped instead of cut out as a tall axis-aligned band (which would
    shrink the glyphs at recognizer height). Returns quads (TL, TR, BR, BL), float32."""
    groups = [(list(_aabb(q)), [np.asarray(q, dtype=np.float32)]) for q in quads]
    merged = True
    while merged:  # repeat until stable: a join can make a box reach a third one
        merged = False
        out: list[tuple[list[float], list[np.ndarray]]] = []
        for b, pieces in sorted(groups, key=lambda g: (g[0][0], g[0][1])):
            for o, o_pieces in out:
                v_overlap = min(b[3], o[3]) - max(b[1], o[1])
                h_overlap = min(b[2], o[2]) - max(b[0], o[0])
                if h_overlap > 0 and v_overlap > 0.5 * min(b[3] - b[1], o[3] - o[1]):
                    o[:] = [min(o[0], b[0]), min(o[1], b[1]), max(o[2], b[2]), max(o[3], b[3])]
                    o_pieces.extend(pieces)
                    merged = True
                    break
            else:
                out.append((list(b), list(pieces)))
        groups = out
    return [pieces[0] if len(pieces) == 1 else _enclosing_quad(np.concatenate(pieces))
            for _, pieces in groups]


def _enclosing_quad(points: np.ndarray) -> np.ndarray:
    import cv2

    rect = cv2.boxPoints(cv2.minAreaRect(points.astype(np.float32)))
    s, d = rect.sum(axis=1), rect[:, 1] - rect[:, 0]
    # TL has the smallest x+y, BR the largest; TR the smallest y-x, BL the largest.
    return np.array([rect[s.argmin()], rect[d.argmin()], rect[s.argmax()], rect[d.argmax()]],
                    dtype=np.float32)


def plan_windows(width: int, height: int, cfg: LongLineConfig) -> list[tuple[int, int]]:
    """[x0, x1) windows over a crop of native size (width, height); one window when it fits."""
    scale = height / 48.0  # native px per recognizer px
    if width <= cfg.window_above * scale:
        return [(0, width)]
    window = max(1, int(cfg.window_width * scale))
    overlap = min(window // 2, int(cfg.window_overlap * scale))
    return tile_spans(width, window, overlap)


def _common_substrings(a: list[str], b: list[str]) -> tuple[int, list[tuple[int, int]]]:
    """Length of the longest common sub-string (of labels: some labels are several code points)
    and every (i, j) where one starts."""
    best, where = 0, []
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
                    where = [(i - best, j - best)]
                elif cur[j] == best:
                    where.append((i - best, j - best))
        prev = cur
    return best, where


def _join(a: Decoded, b: Decoded, ov_start: float, ov_end: float, char_w: float) -> Decoded:
    """Joins window `a` with the next window `b` that overlaps it on [ov_start, ov_end]."""
    ia = [k for k, x in enumerate(a.xs) if x >= ov_start - char_w]
    ib = [k for k, x in enumerate(b.xs) if x <= ov_end + char_w]
    sa = [a.chars[k] for k in ia]
    sb = [b.chars[k] for k in ib]
    length, starts = _common_substrings(sa, sb) if sa and sb else (0, [])
    if length:
        # Among equally long matches, the one whose characters sit at the same place in both
        # windows is the real overlap; a repeated word elsewhere is not.
        def drift(s: tuple[int, int]) -> float:
            return sum(abs(a.xs[ia[s[0] + k]] - b.xs[ib[s[1] + k]]) for k in range(length))

        i, j = min(starts, key=drift)
        if drift((i, j)) / length <= 2 * char_w:
            cut_a, cut_b = ia[i], ib[j]  # keep a before the match, b from the match on
            return _concat(a, cut_a, b, cut_b, char_w)
    middle = (ov_start + ov_end) / 2
    cut_a = next((k for k, x in enumerate(a.xs) if x >= middle), len(a.chars))
    cut_b = next((k for k, x in enumerate(b.xs) if x >= middle), len(b.chars))
    return _concat(a, cut_a, b, cut_b, char_w)


def _concat(a: Decoded, cut_a: int, b: Decoded, cut_b: int, char_w: float) -> Decoded:
    chars, xs = a.chars[:cut_a], a.xs[:cut_a]
    frames, probs = a.frames[:cut_a], a.probs[:cut_a]
    if chars and cut_b < len(b.chars) and chars[-1] != " " and b.chars[cut_b] != " " and \
            b.xs[cut_b] - xs[-1] > 4 * char_w:
        # The space between two words fell into the part of the overlap that neither side
        # kept (an empty window, or a cut at the middle of a gap): put it back.
        chars, xs = chars + [" "], xs + [(xs[-1] + b.xs[cut_b]) / 2]
        frames, probs = frames + [-1], probs + [min(probs[-1], b.probs[cut_b])]
    return Decoded(chars + b.chars[cut_b:], frames + b.frames[cut_b:],
                   probs + b.probs[cut_b:], a.frame_count + b.frame_count, xs + b.xs[cut_b:])


def merge_windows(pieces: list[Decoded], spans: list[tuple[int, int]], height: int) -> Decoded:
    """Merges decoded windows (in order, `xs` already in crop pixels) into one line."""
    merged = pieces[0]
    char_w = 0.5 * height  # roughly half a glyph: the slack allowed on positions
    for piece, (prev_span, span) in zip(pieces[1:], zip(spans, spans[1:], strict=False),
                                        strict=True):
        merged = _join(merged, piece, span[0], prev_span[1], char_w)
    return merged
