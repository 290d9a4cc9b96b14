"""Character error rate and latency of a text-line recognizer on rendered lines.

The subject is the recognizer alone (PP-OCR rec, or a compressed copy of it), so lines are
rendered as the crops the detector would hand it: one line per image, cropped tightly around the
ink with a small margin. Fonts (DejaVu, Debian's fonts-dejavu-core), size, contrast, blur and
noise vary per line, drawn from `random.Random` seeded with (seed, index), so a seed fixes the
set whatever the number of lines.

Preprocessing is the serving pipeline's (workers/ocr/pipeline.py): BGR, height 48 with the
aspect kept, (pixel / 255 - 0.5) / 0.5, right-padded with zeros to the widest line of the batch
and never narrower than 320. Batches take lines in width order, so a compressed model and its
parent see identical tensors. Decoding is greedy CTC with the charset stored in the model's own
metadata (key "character"; blank first, space last): a compressed model that dropped the
metadata cannot be served by the pipeline either, and is refused here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from workers.ocr.longline import ctc_decode
from workers.ocr.pipeline import normalize_crop

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed.ttf", "DejaVuSerifCondensed.ttf",
         "DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf")
REC_HEIGHT = 48
REC_MIN_WIDTH = 320  # the pipeline pads every batch to at least 320 x 48


@dataclass
class LineSample:
    image: np.ndarray  # (H, W, 3) uint8 RGB, one tightly cropped text line
    text: str  # what the line says


@dataclass
class OcrEval:
    cer: float  # total edit distance / total reference characters
    lines: int
    chars: int  # reference characters
    latency_ms: float  # median recognizer time per batch


# ------------------------------------------------------------------------------------------
# Scoring


def normalize(text: str) -> str:
    """Whitespace runs to one space, stripped: the recognizer's spacing at the ends and a
    doubled space are not what we measure."""
    return " ".join(text.split())


def edit_distance(reference: str, hypothesis: str) -> int:
    """Levenshtein distance in characters (substitutions, deletions and insertions all cost
    one)."""
    row = list(range(len(hypothesis) + 1))
    for i, ch in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, other in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ch != other))
    return row[-1]


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER: summed edit distances over summed reference lengths, both normalised
    (`normalize`). Can exceed 1 with many insertions; ValueError when the references hold no
    characters or the lists differ in length."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize(r) for r in references]
    chars = sum(len(r) for r in refs)
    if chars == 0:
        raise ValueError("references hold no characters; the CER is undefined")
    edits = sum(edit_distance(r, normalize(h)) for r, h in zip(refs, hypotheses, strict=True))
    return edits / chars


# ------------------------------------------------------------------------------------------
# Rendering


def _fonts() -> list[Path]:
    present = [FONT_DIR / f for f in FONTS if (FONT_DIR / f).is_file()]
    if not present:
        raise RuntimeError(f"no DejaVu fonts in {FONT_DIR} (Debian: fonts-dejavu-core)")
    return present


def _render_one(text: str, rng: random.Random, fonts: list[Path]) -> np.ndarray:
    font = ImageFont.truetype(str(rng.choice(fonts)), rng.randint(14, 36))
    if rng.random() < 0.25:  # low contrast: grey ink on grey paper
        paper = rng.randint(150, 200)
        ink = paper - rng.randint(60, 90)
    else:
        ink, paper = rng.randint(0, 60), rng.randint(215, 255)
    left, top, right, bottom = font.getbbox(text)
    size = font.size
    # Detector boxes are unclipped by 1.6x: a margin of a fraction of the font size.
    mx, my = (int(size * rng.uniform(0.1, 0.4)) for _ in range(2))
    img = Image.new("L", (right - left + 2 * mx, bottom - top + 2 * my), paper)
    ImageDraw.Draw(img).text((mx - left, my - top), text, font=font, fill=ink)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(2, 7),
                                                               img.size[::-1])
    gray = np.clip(np.asarray(img, np.float32) + noise, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def render_lines(texts: list[str], seed: int = 0) -> list[LineSample]:
    """One tightly cropped RGB line image per text, in order. Line `i` depends only on
    (`seed`, `i`, its text)."""
    fonts = _fonts()
    return [LineSample(_render_one(text, random.Random(f"{seed}:{i}"), fonts), text)
            for i, text in enumerate(texts)]


# ------------------------------------------------------------------------------------------
# Recognizer input


def _normalize_crop(rgb: np.ndarray, width: int) -> np.ndarray:
    """(3, 48, width) float32 exactly as serving feeds the recognizer: BGR (the Paddle models
    were trained on cv2-loaded images), then the pipeline's own resize and scaling."""
    return normalize_crop(np.ascontiguousarray(rgb[:, :, ::-1]), REC_HEIGHT, width)


def _batches(samples: Sequence[LineSample], batch_size: int) -> list[tuple[list[int], np.ndarray]]:
    """(sample indices, tensor [N, 3, 48, W]) per batch; lines sorted by aspect ratio so each
    batch pads little."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(samples)),
                   key=lambda i: samples[i].image.shape[1] / samples[i].image.shape[0])
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ratio = max([REC_MIN_WIDTH / REC_HEIGHT] +
                    [samples[i].image.shape[1] / samples[i].image.shape[0] for i in idx])
        width = int(REC_HEIGHT * ratio)
        out.append((idx, np.stack([_normalize_crop(samples[i].image, width) for i in idx])))
    return out


def recognizer_feeds(samples: Sequence[LineSample], batch_size: int = 8,
                     input_name: str = "x") -> list[dict[str, np.ndarray]]:
    """ONNX Runtime feeds, one per width-sorted batch, e.g. for static-quantisation calibration:
    `{input_name: float32 [N, 3, 48, W]}`."""
    return [{input_name: tensor} for _, tensor in _batches(samples, batch_size)]


# ------------------------------------------------------------------------------------------
# Evaluation


def model_charset(session) -> list[str]:
    """The CTC label list of a recognizer session: blank, the metadata's characters, space."""
    raw = session.get_modelmeta().custom_metadata_map.get("character")
    if not raw:
        raise ValueError("recognizer has no 'character' entry in its metadata; copy the "
                         "parent's metadata into the compressed model")
    return ["blank", *raw.splitlines(), " "]


def evaluate_recognizer(model: Path, samples: list[LineSample], batch_size: int = 8,
                        repeats: int = 1,
                        providers: Sequence[str] = ("CPUExecutionProvider",)) -> OcrEval:
    """Recognizes every sample with the ONNX model at `model` and scores it against the
    samples' texts. The CER comes from the first pass; latency is the median over all
    `repeats` x batches calls, after one untimed warm-up call."""
    import onnxruntime as ort

    if not samples:
        raise ValueError("no samples to evaluate")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    session = ort.InferenceSession(str(model), providers=list(providers))
    charset = model_charset(session)
    name = session.get_inputs()[0].name
    batches = _batches(samples, batch_size)
    session.run(None, {name: batches[0][1]})  # warm-up: first-call allocations are not the model
    hypotheses = [""] * len(samples)
    times = []
    for rep in range(repeats):
        for idx, tensor in batches:
            t0 = time.perf_counter()
            preds = session.run(None, {name: tensor})[0]
            times.append(time.perf_counter() - t0)
            if rep == 0:
                for i, decoded in zip(idx, ctc_decode(preds, charset), strict=True):
                    hypotheses[i] = decoded.text
    references = [s.text for s in samples]
    return OcrEval(cer=character_error_rate(references, hypotheses), lines=len(samples),
                   chars=sum(len(normalize(r)) for r in references),
                   latency_ms=float(np.median(times)) * 1000)
