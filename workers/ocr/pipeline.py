"""Pure OCR pipeline: PP-OCR text detection -> optional angle classification -> recognition.

Contract:
- The caller owns the model sessions and passes them in as :class:`Runner` objects (det, rec and
  optionally cls). Nothing here loads models, touches the network or keeps global state, so one
  ``OcrPipeline`` can serve many tasks as long as the runners are usable from the calling thread.
- Input images are RGB ``uint8`` arrays of shape (H, W, 3). Output boxes are in the pixel
  coordinates of those input arrays.
- Numerics follow rapidocr 3.10.0's default engine (PP-OCRv6 det/rec, PP-OCRv4 cls): same image
  preprocessing, vertical padding, DB post-processing, crop, normalisation and CTC decoding. We
  import rapidocr's pure helpers instead of re-implementing them. The one intentional difference
  is batching: crops of every image in a call are recognised together in aspect-ratio-sorted
  batches of ``rec_batch_size`` (rapidocr batches 6 crops of one image), which changes the
  right-padding of some crops and therefore, rarely, a score in the last decimals.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from rapidocr.ch_ppocr_det.main import TextDetector
from rapidocr.ch_ppocr_det.utils import DBPostProcess, DetPreProcess
from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode
from rapidocr.utils.process_img import (
    ResizeImgError,
    apply_vertical_padding,
    get_rotate_crop_image,
    map_boxes_to_original,
    resize_image_within_bounds,
)

from workers.ocr.longline import (
    Decoded,
    LongLineConfig,
    ctc_decode,
    merge_boxes,
    merge_windows,
    plan_windows,
    tile_spans,
)

# rapidocr 3.10.0 config.yaml defaults (Global / Det / Cls / Rec sections).
_MIN_SIDE_LEN = 30  # images with a smaller side are upscaled before detection
_MAX_SIDE_LEN = 2000  # ... and with a larger side downscaled
_PAD_MIN_HEIGHT = 30  # short or very wide images get black bands above/below
_PAD_WIDTH_HEIGHT_RATIO = 8
_DET_LIMIT_SIDE_LEN = 736
_DET_LIMIT_TYPE = "min"
_REC_HEIGHT = 48
_REC_BASE_WIDTH = 320
_CLS_HEIGHT = 48
_CLS_WIDTH = 192
_CLS_THRESH = 0.9


class Runner(Protocol):
    """A loaded model: ONNX Runtime session wrapper or anything with the same surface."""

    input_names: list[str]
    metadata: dict[str, str]  # the model's custom metadata map

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class PipelineCancelled(Exception):
    """``should_stop`` returned True; the partial work was discarded."""


class ImageDecodeError(ValueError):
    """Bytes could not be turned into an image we accept.

    ``reason`` is one of "UNDECODABLE_INPUT", "INPUT_TOO_LARGE", "INVALID_ARGUMENT".
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class OcrOptions:
    min_confidence: float = 0.5  # lines scoring below this are dropped (rapidocr text_score)
    classify_angle: bool = False  # run the 0/180 degree classifier on each crop
    rec_batch_size: int = 16  # crops per recognition call
    long_lines: bool = True  # tiled detection and windowed recognition (off = by-hand baseline)


@dataclass
class OcrLine:
    text: str
    confidence: float
    box: list[tuple[float, float]]  # TL, TR, BR, BL in input-image pixels
    path: str = "single"  # "single" (one recognizer call) or "windowed" (merged windows)
    windows: int = 1
    tiled: bool = False  # the box came from tiled detection


@dataclass
class OcrResult:
    lines: list[OcrLine] = field(default_factory=list)
    width: int = 0
    height: int = 0

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; ``text`` is included for consumers and ignored by ``from_dict``."""
        return {
            "width": self.width,
            "height": self.height,
            "text": self.text,
            "lines": [
                {
                    "text": line.text,
                    "confidence": float(line.confidence),
                    "box": [[float(x), float(y)] for x, y in line.box],
                    "path": line.path,
                    "windows": line.windows,
                    "tiled": line.tiled,
                }
                for line in self.lines
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OcrResult:
        return cls(
            lines=[
                OcrLine(
                    text=str(item["text"]),
                    confidence=float(item["confidence"]),
                    box=[(float(x), float(y)) for x, y in item["box"]],
                    path=str(item.get("path", "single")),
                    windows=int(item.get("windows", 1)),
                    tiled=bool(item.get("tiled", False)),
                )
                for item in data.get("lines", [])
            ],
            width=int(data["width"]),
            height=int(data["height"]),
        )


@dataclass
class _Crop:
    image_index: int
    box: np.ndarray  # (4, 2) float32, input-image coordinates
    pixels: np.ndarray  # BGR uint8 crop, straightened
    text: str = ""
    confidence: float = 0.0
    long_lines: bool = True
    tiled: bool = False
    path: str = "single"
    windows: int = 1


class OcrPipeline:
    """Runs det per image, then cls/rec over all crops of all images in shared batches."""

    def __init__(
        self,
        det: Runner,
        rec: Runner,
        cls: Runner | None = None,
        *,
        det_limit_side_len: int = _DET_LIMIT_SIDE_LEN,
        det_limit_type: str = _DET_LIMIT_TYPE,
        long_lines: LongLineConfig | None = None,
    ) -> None:
        """``det_limit_*`` default to rapidocr's (736, "min"): every image whose smaller side is
        under 736 px is upscaled to it before detection. That is slow on CPU and splits large
        text on small images into words; (64, "min"), PaddleOCR 3.x's default, avoids both."""
        self._det = det
        self._rec = rec
        self._cls = cls
        charset = rec.metadata.get("character")
        if not charset:
            raise ValueError("rec model has no 'character' entry in its metadata")
        # CTCLabelDecode inserts blank/space into the list it is given, so hand it a fresh one.
        self._decoder = CTCLabelDecode(character=charset.splitlines())
        self._charset = self._decoder.character  # blank first, space last
        self._long = long_lines or LongLineConfig()
        self._det_pre = DetPreProcess(det_limit_side_len, det_limit_type)
        self._det_post = DBPostProcess(
            thresh=0.3,
            box_thresh=0.5,
            max_candidates=1000,
            unclip_ratio=1.6,
            score_mode="fast",
            use_dilation=True,
        )

    def recognize_images(
        self,
        images: Sequence[np.ndarray],
        options: Sequence[OcrOptions],
        should_stop: Callable[[], bool] | None = None,
    ) -> list[OcrResult]:
        """OCR each RGB uint8 (H, W, 3) image with its own options; results keep input order.

        Raises PipelineCancelled when ``should_stop()`` turns True (checked before every model
        call) and ValueError for malformed arguments.
        """
        if len(images) != len(options):
            raise ValueError(f"{len(images)} images but {len(options)} option sets")
        for img in images:
            bad = not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3
            if bad or img.shape[2] != 3:
                raise ValueError("images must be RGB uint8 arrays of shape (H, W, 3)")
        if self._cls is None and any(o.classify_angle for o in options):
            raise ValueError("classify_angle requested but the pipeline has no cls model")

        def check_stop() -> None:
            if should_stop is not None and should_stop():
                raise PipelineCancelled("OCR cancelled")

        crops: list[_Crop] = []
        for index, (img, opts) in enumerate(zip(images, options, strict=True)):
            check_stop()
            if opts.long_lines and max(img.shape[:2]) > self._long.tile_above:
                found = self._detect_tiled(index, img, check_stop)
            else:
                found = self._detect(index, img)
            for crop in found:
                crop.long_lines = opts.long_lines
            crops.extend(found)

        # One batch size for the whole call: the smallest requested, so no task gets a bigger
        # ORT call (more memory) than it asked for.
        batch_size = max(1, min((o.rec_batch_size for o in options), default=1))
        if self._cls is not None:
            to_classify = [c for c in crops if options[c.image_index].classify_angle]
            self._classify(to_classify, batch_size, check_stop)
        self._recognize(crops, batch_size, check_stop)

        results = [OcrResult(lines=[], width=img.shape[1], height=img.shape[0]) for img in images]
        for crop in crops:  # crops are already in reading order within each image
            opts = options[crop.image_index]
            if not crop.text.strip() or crop.confidence < opts.min_confidence:
                continue
            box = [(float(x), float(y)) for x, y in crop.box]
            results[crop.image_index].lines.append(OcrLine(crop.text, crop.confidence, box,
                                                           crop.path, crop.windows, crop.tiled))
        return results

    def _detect(self, index: int, rgb: np.ndarray, pad: bool = True) -> list[_Crop]:
        """Mirror of RapidOCR.preprocess_img + detect_and_crop + map_boxes_to_original."""
        ori_h, ori_w = rgb.shape[:2]
        if ori_h == 0 or ori_w == 0:
            return []
        # The Paddle models were trained on cv2-loaded (BGR) images; rapidocr feeds BGR too.
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        try:
            img, ratio_h, ratio_w = resize_image_within_bounds(bgr, _MIN_SIDE_LEN,
                                                               _MAX_SIDE_LEN)
        except ResizeImgError:
            # rapidocr's single pass cannot shrink extreme aspect ratios (a 14,000 x 60 line
            # would become 2,000 x 8): it reads nothing, as rapidocr by hand does.
            return []
        record: dict[str, Any] = {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}}
        # Short/wide line images get black bands so the 736-px "min side" resize in DetPreProcess
        # does not blow the text up until DB splits or drops it.
        if pad:
            img, record = apply_vertical_padding(img, record, _PAD_WIDTH_HEIGHT_RATIO,
                                                 _PAD_MIN_HEIGHT)

        tensor = self._det_pre(img)
        if tensor is None:
            return []
        pred = self._det.run({self._det.input_names[0]: tensor})[0]
        boxes, _ = self._det_post(pred, img.shape[:2])
        if len(boxes) == 0:
            return []
        boxes = TextDetector.sorted_boxes(boxes)  # reading order, in working-image space

        # Crops come from the working image (as rapidocr does); boxes go back to input pixels.
        pixels = [get_rotate_crop_image(img, box.copy()) for box in boxes]
        mapped = map_boxes_to_original(boxes.astype(np.float32), record, ori_h, ori_w)
        return [_Crop(index, box, crop) for box, crop in zip(mapped, pixels, strict=True)]

    def _detect_tiled(self, index: int, rgb: np.ndarray,
                      check_stop: Callable[[], None]) -> list[_Crop]:
        """Detects on overlapping tiles at native resolution (no global shrink to 2,000 px),
        joins boxes that tiles cut apart, and crops from the native image."""
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        h, w = bgr.shape[:2]
        cfg = self._long
        quads: list[np.ndarray] = []
        for y0, y1 in tile_spans(h, cfg.tile_size, cfg.tile_overlap):
            for x0, x1 in tile_spans(w, cfg.tile_size, cfg.tile_overlap):
                check_stop()
                tile = np.ascontiguousarray(rgb[y0:y1, x0:x1])
                # No vertical padding: a tile is already at native scale, and padding a
                # 2,000 x 70 strip to 2,000 x 250 would triple the detector's work.
                for crop in self._detect(index, tile, pad=False):
                    quads.append(crop.box + np.array([x0, y0], dtype=np.float32))
        boxes = merge_boxes(quads)
        boxes = TextDetector.sorted_boxes(np.array(boxes)) if boxes else []
        return [_Crop(index, box, get_rotate_crop_image(bgr, box.copy()), tiled=True)
                for box in boxes]

    def _classify(
        self, crops: list[_Crop], batch_size: int, check_stop: Callable[[], None]
    ) -> None:
        """Rotate crops the 0/180 classifier is confident are upside down (in place)."""
        assert self._cls is not None
        ordered = sorted(crops, key=_aspect)
        for start in range(0, len(ordered), batch_size):
            check_stop()
            batch = ordered[start : start + batch_size]
            tensor = np.stack([normalize_crop(c.pixels, _CLS_HEIGHT, _CLS_WIDTH) for c in batch])
            probs = self._cls.run({self._cls.input_names[0]: tensor})[0]
            for crop, row in zip(batch, probs, strict=True):
                label = int(row.argmax())
                if label == 1 and row[label] > _CLS_THRESH:  # label list is ["0", "180"]
                    crop.pixels = cv2.rotate(crop.pixels, cv2.ROTATE_180)

    def _recognize(
        self, crops: list[_Crop], batch_size: int, check_stop: Callable[[], None]
    ) -> None:
        """Fill crop.text/confidence. Crops wider than the recognizer handles well become
        overlapping windows; all pieces of all crops share width-sorted batches."""
        pieces: list[_Piece] = []
        spans: dict[int, list[tuple[int, int]]] = {}
        for n, crop in enumerate(crops):
            h, w = crop.pixels.shape[:2]
            plan = plan_windows(w, h, self._long) if crop.long_lines else [(0, w)]
            spans[n] = plan
            pieces += [_Piece(n, x0, crop.pixels[:, x0:x1]) for x0, x1 in plan]
        ordered = sorted(pieces, key=lambda p: p.pixels.shape[1] / p.pixels.shape[0])
        for batch in _width_buckets(ordered, batch_size):
            check_stop()
            # Every piece in a batch is padded to the widest one, never below 320x48.
            max_ratio = max([_REC_BASE_WIDTH / _REC_HEIGHT] +
                            [p.pixels.shape[1] / p.pixels.shape[0] for p in batch])
            width = int(_REC_HEIGHT * max_ratio)
            tensor = np.stack([normalize_crop(p.pixels, _REC_HEIGHT, width) for p in batch])
            preds = self._rec.run({self._rec.input_names[0]: tensor})[0]
            for piece, dec in zip(batch, ctc_decode(preds, self._charset), strict=True):
                # Frame f covers recognizer columns around (f + 0.5) * stride; map to crop px.
                h, w = piece.pixels.shape[:2]
                stride = width / dec.frame_count
                native_per_rec = w / min(width, math.ceil(_REC_HEIGHT * w / h))
                dec.xs = [piece.x0 + (f + 0.5) * stride * native_per_rec for f in dec.frames]
                piece.decoded = dec
        by_crop: dict[int, list[_Piece]] = {}
        for piece in pieces:
            by_crop.setdefault(piece.crop, []).append(piece)
        for n, crop in enumerate(crops):
            parts = [p.decoded for p in by_crop[n]]
            line = parts[0] if len(parts) == 1 else merge_windows(
                parts, spans[n], crop.pixels.shape[0])
            crop.text, crop.confidence = line.text, line.confidence
            crop.windows = len(parts)
            crop.path = "windowed" if len(parts) > 1 else "single"


# Measured here (48 short/normal eval lines, 1 ORT thread, recognizer time): one image per call
# 1.88 s; 8 images per call in plain batches of 16: 2.57 s; with buckets of spread 1.1: 1.85 s.
BUCKET_SPREAD = 1.1


def _width_buckets(ordered: list, batch_size: int) -> list[list]:
    """Splits width-sorted pieces into batches whose widest piece is at most BUCKET_SPREAD x the
    narrowest (never below the 320-px minimum), so a short word is not padded to a long line:
    padding is computed in full by the recognizer and made batching slower than no batching."""
    batches: list[list] = []
    floor = _REC_BASE_WIDTH / _REC_HEIGHT
    for piece in ordered:
        ratio = max(floor, piece.pixels.shape[1] / piece.pixels.shape[0])
        if batches and len(batches[-1][1]) < batch_size and ratio <= batches[-1][0] * BUCKET_SPREAD:
            batches[-1][1].append(piece)
        else:
            batches.append((ratio, [piece]))
    return [b for _, b in batches]


@dataclass
class _Piece:
    """A crop, or one window of a wide crop, on its way through the recognizer."""

    crop: int  # index into the crops list
    x0: int  # left edge within the crop, px
    pixels: np.ndarray
    decoded: Decoded | None = None


def _aspect(crop: _Crop) -> float:
    h, w = crop.pixels.shape[:2]
    return w / float(h)


def normalize_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to ``height`` keeping aspect (capped at ``width``), scale to [-1, 1], right-pad
    with zeros to (3, height, width). Same arithmetic as rapidocr's cls/rec resize_norm_img.
    Public because the compression evaluation feeds the recognizer exactly as serving does."""
    h, w = img.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    resized = cv2.resize(img, (resized_w, height), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (resized.astype(np.float32).transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out


# --------------------------------------------------------------------------------------------
# Image decoding

_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")  # no EPS/PSD/...: smaller attack surface
_MIN_SIDE = 8


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode PNG/JPEG/BMP/TIFF/WebP bytes to an RGB uint8 (H, W, 3) array.

    EXIF orientation is applied; palette, grayscale, 16-bit and alpha images are converted
    (transparent areas become a background that contrasts with the visible pixels). The size in
    the header is checked against ``max_pixels`` before any pixel data is decoded.

    Raises ImageDecodeError with reason "UNDECODABLE_INPUT" (empty, unknown, corrupt or truncated
    data), "INPUT_TOO_LARGE" (width * height > max_pixels) or "INVALID_ARGUMENT" (smaller side
    under 8 px).
    """
    if not data:
        raise ImageDecodeError("UNDECODABLE_INPUT", "empty image data")
    try:
        # Pillow itself warns past Image.MAX_IMAGE_PIXELS and raises past twice that while
        # reading the header; both count as too large (the warning only raises under -W error).
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError("INPUT_TOO_LARGE", f"image too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError("UNDECODABLE_INPUT", f"cannot identify image: {exc}") from exc

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                "INPUT_TOO_LARGE", f"{width}x{height} exceeds the {max_pixels} pixel limit"
            )
        if min(width, height) < _MIN_SIDE:
            raise ImageDecodeError(
                "INVALID_ARGUMENT", f"{width}x{height} is smaller than {_MIN_SIDE} px per side"
            )
        try:
            image.load()  # first frame only for multi-frame TIFF/WebP
            return _to_rgb(_exif_transpose(image))
        except Exception as exc:  # any decoder failure (truncated, bad CRC, ...) is bad input
            raise ImageDecodeError("UNDECODABLE_INPUT", f"cannot decode image: {exc}") from exc


def _exif_transpose(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # a broken EXIF block must not reject a readable image
        return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _high_depth_gray_to_rgb(np.asarray(image))
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        return _flatten_alpha(np.asarray(image.convert("RGBA")))
    if mode != "RGB":
        image = image.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _high_depth_gray_to_rgb(arr: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float grayscale -> 8 bit. Pillow's own convert clips instead of
    scaling, which turns most 16-bit scans white."""
    values = arr.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if arr.dtype.kind == "f" and peak <= 1.0:
        scaled = values * 255.0
    elif peak <= 255:
        scaled = values
    elif peak <= 65535:
        scaled = values / 257.0
    else:
        low = float(values.min())
        scaled = (values - low) * (255.0 / (peak - low))
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite over white, or over black when the visible pixels are light (e.g. white text
    on a transparent background), so text keeps its contrast. Same idea as rapidocr's loader."""
    rgb = rgba[:, :, :3].astype(np.float32)
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    visible = rgba[:, :, 3] > 0
    background = 255.0
    if visible.any():
        luminance = rgb[visible] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        background = 255.0 if float(luminance.mean()) < 128 else 0.0
    out = rgb * alpha + background * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
