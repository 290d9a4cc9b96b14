"""Pipeline output → the JSON a job stores: per-page layout, all-page lines, plain text, and the
searchable-text document written as an artifact for async jobs (pure)."""

from __future__ import annotations

import json

from workers.ocr.layout import page_layout
from workers.ocr.pipeline import OcrResult

PAGE_BREAK = "\f"  # between pages in plain text, as pdftotext does


def page_result(result: OcrResult, page_number: int) -> dict:
    """One page: lines in column-aware reading order, paragraphs, text."""
    lines = result.to_dict()["lines"]
    ordered, paragraphs, text = page_layout(lines)
    for line in ordered:
        line["page"] = page_number
    return {"page": page_number, "width": result.width, "height": result.height,
            "lines": ordered, "paragraphs": paragraphs, "text": text}


def document_result(pages: list[dict], model_versions: list[str]) -> dict:
    first = pages[0] if pages else {"width": 0, "height": 0}
    return {
        "pages": pages,
        "lines": [line for p in pages for line in p["lines"]],
        "text": PAGE_BREAK.join(p["text"] for p in pages),
        "width": first["width"],
        "height": first["height"],
        "model_versions": model_versions,
    }


def searchable_text(doc: dict) -> bytes:
    """Per page text with line boxes normalised to 0..1 of the page, for search indexes and
    highlight overlays (independent of the DPI a PDF was rendered at)."""
    pages = []
    for p in doc["pages"]:
        w, h = max(1, p["width"]), max(1, p["height"])
        pages.append({
            "page": p["page"], "text": p["text"],
            "lines": [{"text": ln["text"], "confidence": round(ln["confidence"], 4),
                       "box": [[round(x / w, 5), round(y / h, 5)] for x, y in ln["box"]]}
                      for ln in p["lines"]],
        })
    return json.dumps({"version": 1, "pages": pages}, ensure_ascii=False).encode()
