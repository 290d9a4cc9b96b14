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
