"""Document paging and limits (PDF via pypdfium2, multi-page TIFF), without any model."""

import io

import pytest
from PIL import Image

from workers.ocr.documents import DocumentLimits, count_pages, iter_pages, kind_of
from workers.ocr.pipeline import ImageDecodeError


def _pages(n, size=(400, 300)):
    return [Image.new("RGB", size, (255, 255 - 40 * k, 255)) for k in range(n)]


def _pdf(n, size=(400, 300)):
    imgs = _pages(n, size)
    buf = io.BytesIO()
    imgs[0].save(buf, "PDF", resolution=72, save_all=True, append_images=imgs[1:])
    return buf.getvalue()


def _tiff(n):
    imgs = _pages(n)
    buf = io.BytesIO()
    imgs[0].save(buf, "TIFF", save_all=True, append_images=imgs[1:])
    return buf.getvalue()


def test_kinds_and_counts():
    assert kind_of(_pdf(1)) == "pdf" and count_pages(_pdf(3)) == 3
    assert kind_of(_tiff(2)) == "tiff" and count_pages(_tiff(2)) == 2
    png = io.BytesIO()
    _pages(1)[0].save(png, "PNG")
    assert kind_of(png.getvalue()) == "image" and count_pages(png.getvalue()) == 1


def test_pdf_pages_render_at_the_dpi_in_order():
    pages = list(iter_pages(_pdf(3), DocumentLimits(pdf_dpi=144)))
    assert len(pages) == 3
    assert all(p.shape[:2] == (600, 800) and p.dtype.name == "uint8" for p in pages)
    assert pages[0][10, 10, 1] > pages[2][10, 10, 1]  # page colours differ: order is kept


def test_tiff_frames_are_pages():
    pages = list(iter_pages(_tiff(3), DocumentLimits()))
    assert [p.shape[:2] for p in pages] == [(300, 400)] * 3


def test_page_limit_is_checked_before_rendering():
    with pytest.raises(ImageDecodeError) as e:
        next(iter_pages(_pdf(4), DocumentLimits(max_pages=3)))
    assert e.value.reason == "INPUT_TOO_LARGE" and "limit is 3" in str(e.value)


def test_page_pixel_limit_uses_the_declared_size():
    # 400x300 pt at 300 dpi is 1666x1250 px: over a 1,000,000-pixel limit, refused unrendered.
    with pytest.raises(ImageDecodeError) as e:
        next(iter_pages(_pdf(1), DocumentLimits(max_pixels=1_000_000, pdf_dpi=300)))
    assert e.value.reason == "INPUT_TOO_LARGE" and "page 1" in str(e.value)


@pytest.mark.parametrize("data", [b"%PDF-1.7 not really", b"II*\x00garbage"])
def test_broken_documents_are_undecodable(data):
    with pytest.raises(ImageDecodeError) as e:
        list(iter_pages(data, DocumentLimits()))
    assert e.value.reason == "UNDECODABLE_INPUT"
