"""A deterministic OCR evaluation set: real English text rendered with the Debian DejaVu fonts,
mildly degraded, in five groups, plus scikit-image's scanned `page.png` when that is installed.

Groups (default counts; `make_eval_set(scale=...)` shrinks them for smoke runs):

- `short`: 1-2 words (24 images), `normal`: 30-60 characters (24), `long`: 120-300
  characters (12), `very_long`: 500-1,500 characters on one line, images up to 20,000 px wide
  (6), `page`: multi-line images mixing the lengths above (4), and `scan`: scikit-image's
  `page.png`, a photographed book page, with a hand transcription (1).

Text comes from files every Debian machine has and from Python itself: the licences in
/usr/share/common-licenses and the docstrings of standard-library modules (`inspect.getdoc`,
what `pydoc` prints). Whitespace is collapsed, only printable ASCII is kept.

Rendering: fonts DejaVu Sans / Serif / Sans Mono and their Bold (and the Condensed and Oblique
variants of Sans and Serif when present), 24-48 px, dark ink on light paper; a third of the
images get low contrast (grey ink on grey paper). Every image then gets a small rotation,
Gaussian blur (radius 0.3-0.9 px) and Gaussian noise (sigma 2-7 grey levels), and is stored as
an 8-bit grey PNG. Rotation is up to +-2 degrees for short and normal lines, +-1 degree for long
lines, +-0.5 degree for pages and +-0.25 degree for very long lines: a 20,000-px line turned by
2 degrees drifts 700 px, which no scanner produces, and its PNG (noise does not compress) would
exceed a gRPC message.

Every choice comes from `random.Random` seeded with the group and index, so the set is the same
on every run with the same Python (docstrings) and Pillow/FreeType (glyphs).
`python -m bench.eval_set DIR` writes the images and a `truth.json` to look at.
"""

from __future__ import annotations

import inspect
import io
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
         "DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf",
         "DejaVuSansCondensed.ttf", "DejaVuSerifCondensed.ttf", "DejaVuSans-Oblique.ttf",
         "DejaVuSerif-Italic.ttf")
LICENSES = ("GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "Artistic", "BSD", "GFDL-1.3")
MODULES = ("json", "textwrap", "argparse", "collections", "pathlib", "subprocess", "logging",
           "functools", "itertools", "shutil", "tempfile", "threading", "datetime", "csv",
           "string", "unittest", "heapq", "bisect", "fractions", "decimal", "zipfile",
           "difflib", "statistics", "email", "http.client", "urllib.parse", "sqlite3")
COUNTS = {"short": 24, "normal": 24, "long": 12, "very_long": 6, "page": 4}
MAX_WIDTH = 20_000  # px, the widest single-line image
SEED = 20261201

# The scanned page from scikit-image (skimage/data/page.png, 384x191, a photo of a book page),
# transcribed by hand from the image. Its last visible row, a URL cut in half by the image's
# bottom edge, is illegible and left out: an engine that reads part of it pays insertions.
SKIMAGE_PAGE_TRUTH = "\n".join([
    "Region-based segmentation",
    "Let us first determine markers of the coins and the",
    "background. These markers are pixels that we can label",
    "unambiguously as either object or background. Here,",
    "the markers are found at the two extreme parts of the",
    "histogram of grey values:",
    ">>> markers = np.zeros_like(coins)",
])


@dataclass
class EvalImage:
    name: str
    group: str
    png: bytes
    truth: str  # lines joined by "\n"
    size: tuple[int, int]
    meta: dict = field(default_factory=dict)


def normalize(text: str) -> str:
    """Whitespace runs (newlines included) to one space, stripped: how texts are compared."""
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------
# Text


def _clean(text: str) -> str:
    text = "".join(ch if 32 <= ord(ch) < 127 else " " for ch in text.replace("\t", " "))
    return normalize(text)


_ART = re.compile(r"([^\w\s])\1\1")  # "___", "---", "|||": rules and diagrams, not prose


def _prose(lines: list[str]) -> str:
    """Lines that read as text: no doctest or code prompts, no ASCII art, mostly letters."""
    keep = []
    for ln in lines:
        s = ln.strip()
        if not s or s.startswith((">>>", "...")) or _ART.search(s):
            continue
        if sum(ch.isalpha() for ch in s) < 0.6 * len(s.replace(" ", "")):
            continue
        keep.append(s)
    return _clean(" ".join(keep))


def _license_texts() -> list[str]:
    out = []
    for name in LICENSES:
        path = Path("/usr/share/common-licenses") / name
        if path.is_file():
            out.append(_prose(path.read_text(errors="replace").splitlines()))
    return out


def _docstring_texts() -> list[str]:
    import importlib

    out = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        parts = [inspect.getdoc(mod) or ""]
        for attr in sorted(vars(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and \
                    getattr(obj, "__module__", None) == mod.__name__:
                parts.append(inspect.getdoc(obj) or "")
        out.append(_prose([ln for p in parts for ln in p.splitlines()]))
    return out


def corpus() -> list[list[str]]:
    """Word lists, one per source document (licences first, then docstrings)."""
    docs = [t.split() for t in _license_texts() + _docstring_texts()]
    docs = [d for d in docs if len(d) > 400]
    if not docs:
        raise RuntimeError("no text sources found (/usr/share/common-licenses, stdlib docs)")
    return docs


def _words(rng: random.Random, docs: list[list[str]], lo: int, hi: int) -> str:
    """A run of consecutive words from one document, lo <= len(text) <= hi (cut at a word)."""
    target = rng.randint(lo, hi)
    for _ in range(100):
        doc = docs[rng.randrange(len(docs))]
        i = rng.randrange(len(doc) - 1)
        words: list[str] = []
        n = 0
        while i < len(doc) and n + len(doc[i]) + (1 if words else 0) <= target:
            n += len(doc[i]) + (1 if words else 0)
            words.append(doc[i])
            i += 1
        text = " ".join(words)
        if lo <= len(text) <= hi:
            return text
    raise RuntimeError(f"no run of words of {lo}-{hi} characters")


def _short(rng: random.Random, docs: list[list[str]]) -> str:
    for _ in range(200):
        doc = docs[rng.randrange(len(docs))]
        i = rng.randrange(len(doc) - 1)
        text = " ".join(doc[i:i + rng.choice((1, 2))])
        if 3 <= len(text) <= 24 and any(ch.isalnum() for ch in text):
            return text
    raise RuntimeError("no short text found")


# ------------------------------------------------------------------------------------------
# Rendering


def _fonts() -> list[str]:
    present = [f for f in FONTS if (FONT_DIR / f).is_file()]
    if not present:
        raise RuntimeError(f"no DejaVu fonts in {FONT_DIR} (Debian: fonts-dejavu-core)")
    return present


def _colors(rng: random.Random) -> tuple[int, int]:
    """(ink, paper) grey levels; a third of the images are low contrast."""
    if rng.random() < 1 / 3:
        paper = rng.randint(150, 200)
        return paper - rng.randint(55, 80), paper
    return rng.randint(0, 50), rng.randint(225, 255)


def _degrade(rng: random.Random, img: Image.Image, paper: int, max_deg: float) -> tuple[
        Image.Image, dict]:
    angle = round(rng.uniform(-max_deg, max_deg), 2)
    blur = round(rng.uniform(0.3, 0.9), 2)
    sigma = round(rng.uniform(2.0, 7.0), 1)
    img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=paper)
    img = img.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(img, dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0.0, sigma, arr.shape)
    img = Image.fromarray(np.clip(arr + noise, 0, 255).round().astype(np.uint8), "L")
    return img, {"rotation_deg": angle, "blur_px": blur, "noise_sigma": sigma}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def render_lines(rng: random.Random, lines: list[str], font_name: str, size: int,
                 max_deg: float) -> tuple[bytes, tuple[int, int], dict]:
    font = ImageFont.truetype(str(FONT_DIR / font_name), size)
    ink, paper = _colors(rng)
    margin = rng.randint(size // 2, size)
    step = int(size * rng.uniform(1.5, 1.9))
    width = max(int(font.getlength(t)) for t in lines) + 2 * margin
    height = step * (len(lines) - 1) + int(size * 1.3) + 2 * margin
    img = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((margin, margin + i * step), text, font=font, fill=ink)
    img, meta = _degrade(rng, img, paper, max_deg)
    meta.update({"font": font_name, "size_px": size, "ink": ink, "paper": paper})
    return _png(img), img.size, meta


def _fit_size(text: str, font_name: str, size: int, width: int) -> int:
    """The largest font size <= size at which `text` fits in `width` px."""
    while size > 12:
        font = ImageFont.truetype(str(FONT_DIR / font_name), size)
        if font.getlength(text) + 2 * size <= width:
            return size
        size -= 1
    return size


def _trim_to_width(text: str, font_name: str, size: int, width: int) -> str:
    font = ImageFont.truetype(str(FONT_DIR / font_name), size)
    while font.getlength(text) + 2 * size > width and " " in text:
        text = text.rsplit(" ", 1)[0]
    return text


# ------------------------------------------------------------------------------------------
# The set


def make_eval_set(scale: float = 1.0, include_scan: bool = True) -> list[EvalImage]:
    """The evaluation images, in group order. `scale` < 1 keeps that fraction of each group
    (at least one image each) for smoke runs; the images kept are the same as in the full
    set."""
    docs = corpus()
    fonts = _fonts()
    out: list[EvalImage] = []
    ranges = {"short": None, "normal": (30, 60), "long": (120, 300), "very_long": (500, 1500)}
    max_deg = {"short": 2.0, "normal": 2.0, "long": 1.0, "very_long": 0.25, "page": 0.5}
    for group, count in COUNTS.items():
        for i in range(max(1, round(count * scale))):
            rng = random.Random(f"{SEED}:{group}:{i}")
            font = fonts[i % len(fonts)] if group != "page" else rng.choice(fonts)
            size = rng.randint(24, 48)
            if group == "page":
                lines = _page_lines(rng, docs)
                size = rng.randint(24, 36)
            elif group == "short":
                lines = [_short(rng, docs)]
            else:
                text = _words(rng, docs, *ranges[group])
                if group == "very_long":
                    size = _fit_size(text, font, size, MAX_WIDTH)
                    text = _trim_to_width(text, font, size, MAX_WIDTH)
                lines = [text]
            png, wh, meta = render_lines(rng, lines, font, size, max_deg[group])
            meta["chars"] = sum(len(t) for t in lines)
            meta["lines"] = len(lines)
            out.append(EvalImage(f"{group}-{i:02d}", group, png, "\n".join(lines), wh, meta))
    if include_scan:
        scan = skimage_page()
        if scan is not None:
            out.append(scan)
    return out


def _page_lines(rng: random.Random, docs: list[list[str]]) -> list[str]:
    """A heading, then 5-9 lines of mixed length (mostly normal, some short, one or two long)."""
    lines = [_short(rng, docs)]
    for _ in range(rng.randint(5, 9)):
        kind = rng.choices(("short", "normal", "long"), weights=(2, 6, 2))[0]
        lines.append(_short(rng, docs) if kind == "short" else
                     _words(rng, docs, 30, 60) if kind == "normal" else
                     _words(rng, docs, 120, 200))
    return lines


def skimage_page() -> EvalImage | None:
    """scikit-image's `data/page.png` with the hand transcription, or None if not installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "page.png"
    if not path.is_file():
        return None
    png = path.read_bytes()
    with Image.open(io.BytesIO(png)) as im:
        size = im.size
    return EvalImage("skimage-page", "scan", png, SKIMAGE_PAGE_TRUTH, size,
                     {"source": "scikit-image skimage/data/page.png",
                      "truth_source": "transcribed by hand; the half-cut bottom row is left out",
                      "lines": SKIMAGE_PAGE_TRUTH.count("\n") + 1,
                      "chars": len(SKIMAGE_PAGE_TRUTH)})


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m bench.eval_set",
                                description="Write the OCR evaluation set to a folder.")
    p.add_argument("out", type=Path)
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    items = make_eval_set(args.scale)
    for it in items:
        (args.out / f"{it.name}.png").write_bytes(it.png)
    (args.out / "truth.json").write_text(json.dumps(
        [{"name": it.name, "group": it.group, "size": list(it.size), "truth": it.truth,
          **it.meta} for it in items], indent=2) + "\n")
    print(f"{len(items)} images in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
