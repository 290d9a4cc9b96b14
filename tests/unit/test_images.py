import io

import pytest
from PIL import Image

from services.ocr.images import inspect_image
from shared.errors import InvalidArgument


def png(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "white").save(buf, "PNG")
    return buf.getvalue()


def test_header_gives_size():
    assert inspect_image(png(40, 30), 10_000)[:2] == (40, 30)


@pytest.mark.parametrize("data,limit,reason", [
    (b"", 10_000, "INVALID_ARGUMENT"),
    (b"not an image at all", 10_000, "UNDECODABLE_INPUT"),
    (png(1, 1), 10_000, "INVALID_ARGUMENT"),
    (png(200, 200), 10_000, "INPUT_TOO_LARGE"),
])
def test_refusals_name_the_field(data, limit, reason):
    with pytest.raises(InvalidArgument) as e:
        inspect_image(data, limit, field="image")
    assert e.value.reason == reason
    assert e.value.field_violations[0][0] == "image"
