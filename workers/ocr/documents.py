"""Documents → page images: PDF (rendered with pypdfium2), multi-page TIFF, and single images.

Limits are checked before pixels are allocated: page count first, then each page's pixel count
from its declared size (PDF points × DPI, TIFF frame header), so a hostile document cannot make
the worker render or decode something huge.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageSequence

from workers.ocr.pipeline import ImageDecodeError, decode_image

PDF_MAGIC = b"%PDF-"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class DocumentLimits:
    max_pages: int = 200
    max_pixels: int = 40_000_000  # per page
    pdf_dpi: int = 150  # 12 pt text renders ~25 px high: comfortable for the recognizer


def kind_of(data: bytes) -> str:
    """"pdf", "tiff" or "image" from the magic bytes."""
    if data.startswith(PDF_MAGIC):
        return "pdf"
    if data[:4] in TIFF_MAGICS:
        return "tiff"
    return "image"


def count_pages(data: bytes) -> int:
    """Pages in the document (1 for a plain image), without rendering anything."""
    kind = kind_of(data)
    if kind == "pdf":
        return len(_open_pdf(data))
    if kind == "tiff":
        try:
            with Image.open(io.BytesIO(data)) as img:
                return int(getattr(img, "n_frames", 1))
        except Exception as exc:  # PIL raises many types for broken TIFFs
            raise ImageDecodeError("UNDECODABLE_INPUT", "is not a readable TIFF") from exc
    return 1


def iter_pages(data: bytes, limits: DocumentLimits) -> Iterator[np.ndarray]:
    """Yields each page as an RGB uint8 array; raises ImageDecodeError (with a `.reason`) for
    undecodable input or a limit passed (named in the message)."""
    kind = kind_of(data)
    pages = count_pages(data)
    if pages > limits.max_pages:
        raise ImageDecodeError("INPUT_TOO_LARGE", f"has {pages} pages; the limit is "
                               f"{limits.max_pages} (JOBMESH_MAX_PAGES)")
    if pages == 0:
        raise ImageDecodeError("INVALID_ARGUMENT", "has no pages")
    if kind == "pdf":
        yield from _pdf_pages(data, limits)
    elif kind == "tiff":
        yield from _tiff_pages(data, limits)
    else:
        yield decode_image(data, limits.max_pixels)


def _open_pdf(data: bytes):
    import pypdfium2 as pdfium  # imported where used: only workers that read PDFs need it

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise ImageDecodeError("UNDECODABLE_INPUT", f"is not a readable PDF ({exc})") from exc


def _pdf_pages(data: bytes, limits: DocumentLimits) -> Iterator[np.ndarray]:
    doc = _open_pdf(data)
    scale = limits.pdf_dpi / 72.0
    try:
        for n in range(len(doc)):
            page = doc[n]
            w_pt, h_pt = page.get_size()
            pixels = int(w_pt * scale) * int(h_pt * scale)
            if pixels > limits.max_pixels:
                raise ImageDecodeError(
                    "INPUT_TOO_LARGE", f"page {n + 1} renders to {pixels} pixels at "
                    f"{limits.pdf_dpi} dpi; the limit is {limits.max_pixels}")
            bitmap = page.render(scale=scale)
            yield np.asarray(bitmap.to_pil().convert("RGB"))
            page.close()
    finally:
        doc.close()


def _tiff_pages(data: bytes, limits: DocumentLimits) -> Iterator[np.ndarray]:
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:
        raise ImageDecodeError("UNDECODABLE_INPUT", "is not a readable TIFF") from exc
    with img:
        for n, frame in enumerate(ImageSequence.Iterator(img)):
            if frame.width * frame.height > limits.max_pixels:
                raise ImageDecodeError(
                    "INPUT_TOO_LARGE", f"page {n + 1} is {frame.width}x{frame.height}; the "
                    f"limit is {limits.max_pixels} pixels")
            buf = io.BytesIO()
            try:
                frame.save(buf, "PNG")  # one frame, through the same checks as any image
            except OSError as exc:
                raise ImageDecodeError("UNDECODABLE_INPUT",
                                       f"page {n + 1} cannot be decoded") from exc
            yield decode_image(buf.getvalue(), limits.max_pixels)
