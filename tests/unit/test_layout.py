from workers.ocr.layout import text_of


def box(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_words_on_one_row_join_with_spaces_rows_with_newlines():
    lines = [
        {"text": "world", "box": box(120, 12, 200, 40)},
        {"text": "Hello", "box": box(10, 10, 100, 42)},
        {"text": "second  row", "box": box(10, 60, 200, 90)},
    ]
    assert text_of(lines) == "Hello world\nsecond row"


def test_slightly_skewed_boxes_stay_on_their_row():
    lines = [{"text": "a", "box": box(0, 0, 10, 20)}, {"text": "b", "box": box(20, 6, 30, 26)},
             {"text": "c", "box": box(0, 30, 10, 50)}]
    assert text_of(lines) == "a b\nc"


def test_two_columns_under_a_full_width_title_read_column_by_column():
    from workers.ocr.layout import page_layout

    lines = [{"text": "Title across the page", "box": box(10, 10, 600, 40)}]
    for k in range(3):  # left column at x 10..280, right at 330..600, rows 30 px apart
        y = 80 + 30 * k
        lines.append({"text": f"left {k}", "box": box(10, y, 280, y + 20)})
        lines.append({"text": f"right {k}", "box": box(330, y, 600, y + 20)})
    ordered, paragraphs, text = page_layout(lines)
    assert [ln["text"] for ln in ordered] == ["Title across the page", "left 0", "left 1",
                                              "left 2", "right 0", "right 1", "right 2"]
    assert [p["text"] for p in paragraphs] == ["Title across the page",
                                               "left 0\nleft 1\nleft 2",
                                               "right 0\nright 1\nright 2"]
    assert text.split("\n\n")[1] == "left 0\nleft 1\nleft 2"


def test_a_larger_gap_starts_a_paragraph():
    from workers.ocr.layout import page_layout

    ys = [0, 30, 60, 130, 160]  # usual gap 10 px; 50 px before the 4th row
    lines = [{"text": f"row {k}", "box": box(0, y, 200, y + 20)} for k, y in enumerate(ys)]
    _, paragraphs, text = page_layout(lines)
    assert [p["lines"] for p in paragraphs] == [[0, 1, 2], [3, 4]]
    assert text == "row 0\nrow 1\nrow 2\n\nrow 3\nrow 4"


def test_a_longer_column_keeps_its_tail():
    from workers.ocr.layout import page_layout

    lines = [{"text": f"L{k}", "box": box(0, 30 * k, 200, 30 * k + 20)} for k in range(4)]
    lines += [{"text": f"R{k}", "box": box(300, 30 * k, 500, 30 * k + 20)} for k in range(2)]
    ordered, _, _ = page_layout(lines)
    assert [ln["text"] for ln in ordered] == ["L0", "L1", "L2", "L3", "R0", "R1"]
