"""OCR input checks (`services.ocr.images`): any bytes, and mutated PNG/TIFF/PDF files, give a
page count or InvalidArgument; accepted inputs are within the limits."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from services.ocr.images import MIN_SIDE, inspect_image, inspect_input
from shared.errors import InvalidArgument
from tests.fuzz.strategies import mutated
from tests.fuzz.tally import tried

MAX_PIXELS, MAX_PAGES = 400 * 400, 3
# Pillow warns (UserWarning) about the damaged TIFF tags it skips; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _encode(fmt: str, frames: int = 1, size=(32, 24), **kw) -> bytes:
    images = [Image.new("RGB", size, (40 * k, 90, 200)) for k in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=frames > 1, append_images=images[1:], **kw)
    return buf.getvalue()


IMAGE_SEEDS = [_encode("PNG"), _encode("TIFF"), _encode("TIFF", frames=2),
               _encode("TIFF", compression="tiff_lzw"), _encode("JPEG"), _encode("BMP")]
PDF_SEEDS = [_encode("PDF"), _encode("PDF", frames=2)]
limits = st.tuples(st.integers(0, 10**6), st.integers(0, 4))


def _tiff_second_page_without_size() -> bytes:
    """An 8x8 grey TIFF whose second IFD has no ImageWidth/ImageLength tags."""
    def ifd(entries, next_offset):
        out = struct.pack("<H", len(entries))
        for tag, kind, value in entries:  # kind 3 = SHORT, 4 = LONG
            out += (struct.pack("<HHII", tag, kind, 1, value) if kind == 4
                    else struct.pack("<HHIHH", tag, kind, 1, value, 0))
        return out + struct.pack("<I", next_offset)

    second_offset = 8 + 2 + 12 * 6 + 4
    second = ifd([(262, 3, 1)], 0)
    pixels = second_offset + len(second)
    first = ifd([(256, 3, 8), (257, 3, 8), (258, 3, 8), (262, 3, 1), (273, 4, pixels),
                 (279, 4, 64)], second_offset)
    return b"II*\x00" + struct.pack("<I", 8) + first + second + bytes(64)


# Found by this suite (fixed since): minimal inputs that once escaped as untyped exceptions,
# kept as regression examples.
TIFF_BAD_SECOND_PAGE = _tiff_second_page_without_size()
PDF_PAGE_NOT_A_PAGE = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                       b"2 0 obj<</Type/Pages/Count 1/Kids[3 0 R]>>endobj\n"
                       b"3 0 obj<</Type/Qage/Parent 2 0 R/MediaBox[0 0 32 24]>>endobj\n"
                       b"trailer<</Root 1 0 R>>\n%%EOF")


def check_input(data: bytes, max_pixels: int, max_pages: int) -> None:
    try:
        pages = inspect_input(data, max_pixels, max_pages)
    except InvalidArgument as exc:
        assert exc.field_violations and exc.field_violations[0][0] == "image"
        return
    assert 1 <= pages <= max_pages


def check_image(data: bytes, max_pixels: int) -> None:
    try:
        width, height, fmt = inspect_image(data, max_pixels)
    except InvalidArgument as exc:
        assert exc.field_violations and exc.field_violations[0][0] == "image"
        return
    assert width * height <= max_pixels and min(width, height) >= MIN_SIDE and fmt


@given(st.binary(max_size=1024), limits)
def test_arbitrary_bytes(data, lim):
    tried("ocr inspect_input (bytes)")
    check_input(data, *lim)


@given(st.binary(max_size=512).map(lambda b: b"%PDF-" + b), limits)
def test_arbitrary_pdf_like_bytes(data, lim):
    tried("ocr inspect_input (%PDF- + bytes)")
    check_input(data, *lim)


@given(mutated(PDF_SEEDS), st.integers(0, 10**6), st.integers(0, 3))
@example(PDF_PAGE_NOT_A_PAGE, 10**6, 3)
def test_mutated_pdfs(data, max_pixels, max_pages):
    tried("ocr inspect_input (mutated PDF)")
    check_input(data, max_pixels, max_pages)


@given(mutated(IMAGE_SEEDS), st.integers(0, 10**6))
def test_mutated_images_header(data, max_pixels):
    tried("ocr inspect_image (mutated PNG/TIFF/JPEG/BMP)")
    check_image(data, max_pixels)


@given(mutated(IMAGE_SEEDS), st.integers(0, 10**6), st.integers(0, 3))
@example(TIFF_BAD_SECOND_PAGE, 10**6, 3)
def test_mutated_images(data, max_pixels, max_pages):
    tried("ocr inspect_input (mutated PNG/TIFF/JPEG/BMP)")
    check_input(data, max_pixels, max_pages)


@pytest.mark.parametrize("seed", IMAGE_SEEDS + PDF_SEEDS)
def test_seeds_are_accepted(seed):
    assert inspect_input(seed, MAX_PIXELS, MAX_PAGES) >= 1
