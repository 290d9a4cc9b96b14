"""Long-line helpers: tiles, box joins, CTC positions and the overlap merge (hand-made cases)."""

import numpy as np
import pytest
from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

from workers.ocr.longline import (
    Decoded,
    LongLineConfig,
    ctc_decode,
    merge_boxes,
    merge_windows,
    plan_windows,
    tile_spans,
)


def piece(text: str, x0: float, step: float = 10.0) -> Decoded:
    """A decoded window whose characters sit every `step` px from x0 (crop coordinates)."""
    xs = [x0 + step * (k + 0.5) for k in range(len(text))]
    return Decoded(list(text), list(range(len(text))), [0.9] * len(text), len(text), xs)


def test_tile_spans_cover_with_overlap():
    assert tile_spans(1500, 2000, 300) == [(0, 1500)]
    spans = tile_spans(5000, 2000, 300)
    assert spans[0][0] == 0 and spans[-1][1] == 5000
    assert all(b[0] < a[1] and a[1] - b[0] >= 300
               for a, b in zip(spans, spans[1:], strict=False))
    assert all(e - s == 2000 for s, e in spans)


def test_plan_windows_only_for_wide_crops():
    cfg = LongLineConfig(window_above=3200, window_width=1600, window_overlap=320)
    assert plan_windows(3000, 48, cfg) == [(0, 3000)]
    spans = plan_windows(10_000, 96, cfg)  # native px are 2x recognizer px here
    assert all(e - s <= 3200 for s, e in spans) and spans[-1][1] == 10_000


def test_merge_boxes_joins_pieces_cut_by_tiles_but_not_separate_words():
    def quad(x0, y0, x1, y1):
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)

    joined = merge_boxes([quad(0, 10, 2000, 60), quad(1700, 12, 3900, 61),
                          quad(3600, 11, 5000, 59)])
    assert len(joined) == 1
    assert joined[0][0, 0] == pytest.approx(0, abs=1e-3)
    assert joined[0][1, 0] == pytest.approx(5000, abs=1e-3)
    apart = merge_boxes([quad(0, 10, 100, 60), quad(130, 10, 200, 60),  # a gap: two words
                         quad(0, 100, 100, 150)])                        # next row
    assert len(apart) == 3
    dup = merge_boxes([quad(1700, 10, 1900, 60), quad(1702, 11, 1899, 59)])  # seen twice
    assert len(dup) == 1


def test_a_rotated_line_cut_by_tiles_gets_a_rotated_box():
    # A line rising 1 degree: 3 tile pieces, each a rotated quad along the same baseline.
    slope = np.tan(np.radians(-1.0))

    def piece(x0, x1, h=40.0):
        y0, y1 = 100 + slope * x0, 100 + slope * x1
        return np.array([[x0, y0], [x1, y1], [x1, y1 + h], [x0, y0 + h]], dtype=np.float32)

    [quad] = merge_boxes([piece(0, 2000), piece(1700, 3700), piece(3400, 5000)])
    left_h = np.linalg.norm(quad[3] - quad[0])
    assert left_h == pytest.approx(40, abs=2)  # the crop stays one line high, not 40 + drift
    assert quad[1][1] < quad[0][1]  # and rises to the right like the text


def test_ctc_decode_matches_rapidocr_decoder():
    rng = np.random.default_rng(0)
    charset = list("abcdefghij")
    ours_set = CTCLabelDecode(character=list(charset)).character
    preds = rng.random((3, 40, len(ours_set))).astype(np.float32)
    preds[:, ::3, 0] += 2  # plenty of blanks, as real output has
    theirs, _ = CTCLabelDecode(character=list(charset))(preds)
    ours = ctc_decode(preds, ours_set)
    assert [(d.text, d.confidence) for d in ours] == [(t, s) for t, s in theirs]
    assert all(f1 < f2 for d in ours
               for f1, f2 in zip(d.frames, d.frames[1:], strict=False))


def test_merge_on_the_overlap_substring():
    # Window 1 covers x 0..300 ("the quick brown fox j" at 10 px/char, cut mid-glyph), window
    # 2 covers x 200..500 and starts mid-glyph too; the overlap is x 200..300.
    line = "the quick brown fox jumps over the lazy dog, twice over"
    a = piece(line[:29] + "#", 0)      # garbage where the window edge cut a glyph
    b = piece("%" + line[21:], 200)    # starts with garbage at its own edge
    merged = merge_windows([a, b], [(0, 300), (200, 560)], height=20)
    assert merged.text == line


def test_repeated_substrings_are_matched_where_positions_agree():
    # "over over over": the overlap's text repeats; positions say which copy is which.
    line = "over over over over over over"
    a = piece(line[:20], 0)            # x 0..200
    b = piece(line[10:], 100)          # x 100..290, overlap 100..200
    merged = merge_windows([a, b], [(0, 200), (100, 300)], height=20)
    assert merged.text == line


def test_empty_window_and_single_character_window():
    a = piece("hello ", 0)
    empty = Decoded([], [], [], 10, [])
    b = piece("world", 100)
    merged = merge_windows([a, empty, b], [(0, 60), (40, 110), (100, 150)], height=20)
    assert merged.text == "hello world"
    one = piece("x", 60)  # the last window holds a single glyph at x 65
    merged = merge_windows([piece("abcdef", 0), one], [(0, 60), (52, 70)], height=20)
    assert merged.text == "abcdefx"


def test_no_common_substring_cuts_in_the_middle_of_the_overlap():
    a = piece("aaaaaXX", 0)      # x 5..65
    b = piece("YYbbbbb", 50)     # x 55..115, overlap 50..70: nothing in common
    merged = merge_windows([a, b], [(0, 70), (50, 120)], height=20)
    assert merged.text == "aaaaaXYbbbbb"  # a keeps x < 60, b keeps x >= 60


@pytest.mark.parametrize("n", [2, 5])
def test_confidence_is_mean_of_kept_characters(n):
    merged = merge_windows([piece("ab" * n, 0), piece("ab" * n, 10 * n)],
                           [(0, 20 * n), (10 * n, 30 * n)], height=20)
    assert merged.confidence == pytest.approx(0.9)
