"""Deterministic OCR benchmark inputs: text rendered with the Debian DejaVu fonts.

``make_bench_images()`` returns ``(name, png_bytes, expected_text)`` tuples; ``expected_text``
joins the rendered lines with "\\n", which is what ``OcrResult.text`` returns when the pipeline
reads every line verbatim (all eight do with the bundled PP-OCRv6 models and default options).
Nothing is random and no file is read except the fonts, so the bytes are identical across runs
on the same Pillow/FreeType build.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

# (name, font file, size px, lines, ink RGB, paper RGB)
_SPECS: list[tuple[str, str, int, list[str], tuple[int, int, int], tuple[int, int, int]]] = [
    (
        "pangram_sans",
        "DejaVuSans.ttf",
        36,
        ["The quick brown fox jumps over the lazy dog"],
        (0, 0, 0),
        (255, 255, 255),
    ),
    (
        "invoice_serif",
        "DejaVuSerif.ttf",
        34,
        ["Invoice 2026-12-01", "Customer: ACME Corp", "Total due: 1234.56 EUR"],
        (0, 0, 0),
        (255, 255, 255),
    ),
    (
        "code_mono",
        "DejaVuSansMono.ttf",
        30,
        ["def main():", "return 42"],
        (0, 0, 0),
        (255, 255, 255),
    ),
    (
        "memo_sans",
        "DejaVuSans.ttf",
        28,
        [
            "Please review the attached report",
            "before the meeting on Friday.",
            "The budget section changed",
            "after the last review round.",
            "Thanks for your help.",
        ],
        (20, 20, 20),
        (255, 255, 255),
    ),
    (
        "address_serif",
        "DejaVuSerif.ttf",
        32,
        ["Order #4711", "Shipped to Berlin", "Tracking 9876543210"],
        (0, 0, 0),
        (255, 255, 255),
    ),
    (
        "label_bold",
        "DejaVuSans-Bold.ttf",
        40,
        ["jobmesh OCR works"],
        (0, 0, 0),
        (255, 255, 255),
    ),
    (
        "blue_on_gray",
        "DejaVuSans.ttf",
        32,
        ["Meeting at 10:30 in room B-12", "Bring your laptop"],
        (20, 40, 120),
        (235, 235, 235),
    ),
    (
        "receipt_mono",
        "DejaVuSansMono.ttf",
        28,
        ["Coffee 3.50", "Bagel 2.25", "Tax 0.46", "Total 6.21"],
        (0, 0, 0),
        (250, 248, 240),
    ),
]


def render_lines(
    lines: list[str],
    font: str = "DejaVuSans.ttf",
    size: int = 36,
    ink: tuple[int, int, int] = (0, 0, 0),
    paper: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Draw ``lines`` top to bottom with a 1.5x-size pitch.

    Margins are one font size left/right and two above/below: on tight crops rapidocr's detector
    settings (736-px minimum side) split large text into words.
    """
    face = ImageFont.truetype(str(FONT_DIR / font), size)
    width = max(face.getbbox(line)[2] for line in lines) + 2 * size
    pitch = int(size * 1.5)
    image = Image.new("RGB", (width, pitch * len(lines) + 4 * size), paper)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((size, 2 * size + i * pitch), line, font=face, fill=ink)
    return image


def make_bench_images() -> list[tuple[str, bytes, str]]:
    """Eight (name, png_bytes, expected_text) benchmark cases, 1 to 5 lines each."""
    cases = []
    for name, font, size, lines, ink, paper in _SPECS:
        buf = io.BytesIO()
        render_lines(lines, font, size, ink, paper).save(buf, format="PNG", optimize=False)
        cases.append((name, buf.getvalue(), "\n".join(lines)))
    return cases
