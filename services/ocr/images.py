"""Cheap checks of an encoded image or document at the gateway: headers only, no pixel
decoding or page rendering, so garbage, decompression bombs and over-long documents are refused
before a job exists."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from shared.errors import InvalidArgument

MIN_SIDE = 8


def inspect_input(data: bytes, max_pixels: int, max_pages: int, field: str = "image",
                  pdf_dpi: int = 150) -> int:
    """Checks an image or document from its headers; returns the page count. PDFs are parsed
    (not rendered) for their page count and page sizes at `pdf_dpi`."""
    if data.startswith(b"%PDF-"):
        return _inspect_pdf(data, max_pixels, max_pages, field, pdf_dpi)
    width, height, fmt = inspect_image(data, max_pixels, field)
    pages = 1
    if fmt == "TIFF":
        try:
            with Image.open(io.BytesIO(data)) as img:
                # Counting pages parses every page's header; a later page can be broken even
                # when the first is fine (found by tests/fuzz: a page without a size).
                pages = int(getattr(img, "n_frames", 1))
        except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
            raise InvalidArgument.for_field(field, "is a TIFF with an unreadable page",
                                            reason="UNDECODABLE_INPUT") from exc
    if pages > max_pages:
        raise InvalidArgument.for_field(field, f"has {pages} pages; the limit is {max_pages}",
                                        reason="INPUT_TOO_LARGE")
    return pages


def _inspect_pdf(data: bytes, max_pixels: int, max_pages: int, field: str, dpi: int) -> int:
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise InvalidArgument.for_field(field, "is not a readable PDF",
                                        reason="UNDECODABLE_INPUT") from exc
    try:
        pages = len(doc)
        if pages == 0:
            raise InvalidArgument.for_field(field, "is a PDF without pages")
        if pages > max_pages:
            raise InvalidArgument.for_field(field, f"has {pages} pages; the limit is "
                                            f"{max_pages}", reason="INPUT_TOO_LARGE")
        for n in range(pages):
            try:
                w, h = doc.get_page_size(n)
            except pdfium.PdfiumError as exc:  # e.g. a page object that is not a /Page
                raise InvalidArgument.for_field(field, f"page {n + 1} is not readable",
                                                reason="UNDECODABLE_INPUT") from exc
            pixels = int(w * dpi / 72) * int(h * dpi / 72)
            if pixels > max_pixels:
                raise InvalidArgument.for_field(
                    field, f"page {n + 1} renders to {pixels} pixels at {dpi} dpi; the "
                    f"limit is {max_pixels}", reason="INPUT_TOO_LARGE")
        return pages
    finally:
        doc.close()


def inspect_image(data: bytes, max_pixels: int, field: str = "image") -> tuple[int, int, str]:
    """(width, height, format) from the header; raises InvalidArgument naming `field`."""
    if not data:
        raise InvalidArgument.for_field(field, "is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # lazy: reads the header only
            width, height, fmt = img.width, img.height, img.format or "unknown"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument.for_field(field, "is not a decodable image (PNG, JPEG, BMP, TIFF, "
                                        "WebP)", reason="UNDECODABLE_INPUT") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument.for_field(field, f"has too many pixels (limit {max_pixels})",
                                        reason="INPUT_TOO_LARGE") from exc
    if width * height > max_pixels:
        raise InvalidArgument.for_field(
            field, f"is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            reason="INPUT_TOO_LARGE")
    if min(width, height) < MIN_SIDE:
        raise InvalidArgument.for_field(field, f"is {width}x{height}; each side must be at "
                                        f"least {MIN_SIDE} px")
    return width, height, fmt
