"""OCR pipeline tests against the real PP-OCR ONNX models bundled with rapidocr (CPU only).

Text is rendered with DejaVu fonts and must come back verbatim. Lines are drawn with a margin of
twice the font size: with rapidocr's detector settings (every image upscaled to a 736-px smaller
side) a tightly cropped line of large text gets split into words, in rapidocr as well as here.
"""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import rapidocr
from PIL import Image, ImageDraw, ImageFont

from workers.ocr.pipeline import (
    ImageDecodeError,
    OcrLine,
    OcrOptions,
    OcrPipeline,
    OcrResult,
    PipelineCancelled,
    decode_image,
)

MODELS = Path(rapidocr.__file__).parent / "models"
FONTS = Path("/usr/share/fonts/truetype/dejavu")


class OrtRunner:
    """Minimal Runner over a CPU InferenceSession that counts its calls."""

    def __init__(self, path: Path) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.calls: list[tuple[int, ...]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(next(iter(feeds.values())).shape)
        return self.session.run(None, feeds)


@pytest.fixture(scope="module")
def runners() -> dict[str, OrtRunner]:
    return {
        "det": OrtRunner(MODELS / "PP-OCRv6_det_small.onnx"),
        "rec": OrtRunner(MODELS / "PP-OCRv6_rec_small.onnx"),
        "cls": OrtRunner(MODELS / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
    }


@pytest.fixture()
def pipeline(runners: dict[str, OrtRunner]) -> OcrPipeline:
    for runner in runners.values():
        runner.calls.clear()
    return OcrPipeline(runners["det"], runners["rec"], runners["cls"])


def render(lines: list[str], font: str = "DejaVuSans.ttf", size: int = 36) -> np.ndarray:
    """Black text on white, RGB uint8; line pitch 1.5x size, margins size / 2x size."""
    face = ImageFont.truetype(str(FONTS / font), size)
    width = max(face.getbbox(line)[2] for line in lines) + 2 * size
    pitch = int(size * 1.5)
    image = Image.new("RGB", (width, pitch * len(lines) + 4 * size), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((size, 2 * size + i * pitch), line, font=face, fill="black")
    return np.asarray(image).copy()


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def test_batch_of_single_lines_reads_exactly_in_one_rec_call(pipeline, runners):
    cases = [
        ("The quick brown fox jumps over the lazy dog", "DejaVuSans.ttf", 36),
        ("Invoice 2026-12-01 total 1234.56", "DejaVuSerif.ttf", 40),
        ("jobmesh OCR works", "DejaVuSansMono.ttf", 32),
    ]
    images = [render([text], font, size) for text, font, size in cases]

    started = time.perf_counter()
    results = pipeline.recognize_images(images, [OcrOptions()] * 3)
    elapsed = time.perf_counter() - started

    assert [r.text for r in results] == [text for text, _, _ in cases]
    for result, image in zip(results, images, strict=True):
        assert (result.width, result.height) == (image.shape[1], image.shape[0])
        [line] = result.lines
        assert line.confidence > 0.9
        xs, ys = zip(*line.box, strict=True)
        assert 0 <= min(xs) < max(xs) <= result.width
        assert 0 <= min(ys) < max(ys) <= result.height
    # Detection per image; the crops of all images share recognizer calls, batched by width
    # (a call pads to its widest crop, so very different widths go to different calls).
    assert len(runners["det"].calls) == 3
    assert sum(shape[0] for shape in runners["rec"].calls) == 3
    assert len(runners["rec"].calls) < 3 or len({s[3] for s in runners["rec"].calls}) == 3
    assert runners["cls"].calls == []  # classify_angle defaults to off
    assert elapsed < 30


def test_multi_line_image_in_reading_order(pipeline, runners):
    lines = ["First line of the memo", "Second line, with comma", "Third: 42 items"]
    image = render(lines)
    # Nothing scores above 1; the smallest batch size asked for in a call applies to all.
    strict = OcrOptions(min_confidence=1.01, rec_batch_size=4)

    normal, filtered = pipeline.recognize_images([image, image], [OcrOptions(), strict])

    assert [line.text for line in normal.lines] == lines
    assert normal.text == "\n".join(lines)
    tops = [line.box[0][1] for line in normal.lines]
    assert tops == sorted(tops)
    assert filtered.lines == []
    # Six crops of similar width, at most 4 per recognizer call.
    sizes = [shape[0] for shape in runners["rec"].calls]
    assert sum(sizes) == 6 and max(sizes) <= 4


def test_upside_down_line_needs_angle_classifier(pipeline, runners):
    text = "Pack my box with five dozen liquor jugs"
    image = np.ascontiguousarray(render([text])[::-1, ::-1])

    [result] = pipeline.recognize_images([image], [OcrOptions(classify_angle=True)])

    assert result.text == text
    assert len(runners["cls"].calls) == 1


def test_should_stop_cancels_between_batches(pipeline, runners):
    images = [render(["one"]), render(["two"])]
    checks = []

    def stop_after_first_image() -> bool:
        checks.append(1)
        return len(checks) > 1

    with pytest.raises(PipelineCancelled):
        pipeline.recognize_images(images, [OcrOptions()] * 2, stop_after_first_image)
    assert len(runners["det"].calls) == 1
    assert runners["rec"].calls == []


def test_blank_and_tiny_images_give_empty_results(pipeline):
    blank = np.full((64, 80, 3), 255, dtype=np.uint8)
    empty = np.zeros((0, 10, 3), dtype=np.uint8)
    results = pipeline.recognize_images([blank, empty], [OcrOptions()] * 2)
    assert [(r.lines, r.width, r.height) for r in results] == [([], 80, 64), ([], 10, 0)]


def test_argument_validation(runners):
    pipe = OcrPipeline(runners["det"], runners["rec"])
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        pipe.recognize_images([image], [])
    with pytest.raises(ValueError):
        pipe.recognize_images([image.astype(np.float32)], [OcrOptions()])
    with pytest.raises(ValueError):
        pipe.recognize_images([image[:, :, 0]], [OcrOptions()])
    with pytest.raises(ValueError, match="cls"):
        pipe.recognize_images([image], [OcrOptions(classify_angle=True)])

    class NoCharset:
        input_names = ["x"]
        metadata: dict[str, str] = {}

        def run(self, feeds):
            raise AssertionError

    with pytest.raises(ValueError, match="character"):
        OcrPipeline(runners["det"], NoCharset())


def test_result_json_round_trip():
    result = OcrResult(
        lines=[
            OcrLine("hello", 0.98765, [(1.0, 2.0), (30.0, 2.0), (30.0, 12.5), (1.0, 12.5)]),
            OcrLine("world", 0.9, [(1.0, 20.0), (30.0, 20.0), (30.0, 30.0), (1.0, 30.0)]),
        ],
        width=40,
        height=35,
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["text"] == "hello\nworld"
    assert OcrResult.from_dict(data) == result


# ---------------------------------------------------------------------------------------------
# decode_image


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "UNDECODABLE_INPUT"),
        (np.random.default_rng(7).bytes(4096), "UNDECODABLE_INPUT"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "UNDECODABLE_INPUT"),  # format not on the allow-list
        (png_bytes(Image.new("RGB", (1, 1))), "INVALID_ARGUMENT"),
        (png_bytes(Image.new("RGB", (200, 7))), "INVALID_ARGUMENT"),
        (crafted_png(64, 64), "UNDECODABLE_INPUT"),  # IDAT far too short
        (png_bytes(Image.new("RGB", (64, 64), "red"))[:-40], "UNDECODABLE_INPUT"),  # truncated
    ],
)
def test_decode_rejects(data: bytes, reason: str):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=10_000_000)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("width", "height"), [(40_000, 40_000), (9_000, 9_000)])
def test_decode_rejects_bomb_from_header(width: int, height: int):
    data = crafted_png(width, height)
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=50_000_000)
    assert info.value.reason == "INPUT_TOO_LARGE"
    assert time.perf_counter() - started < 0.5


def test_decode_limit_is_width_times_height():
    data = png_bytes(Image.new("RGB", (100, 50), "white"))
    assert decode_image(data, max_pixels=5_000).shape == (50, 100, 3)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=4_999)
    assert info.value.reason == "INPUT_TOO_LARGE"


def test_decode_round_trips_rgb_png_and_reads_jpeg_bmp_tiff_webp():
    rgb = render(["abc"], size=20)
    assert np.array_equal(decode_image(png_bytes(Image.fromarray(rgb)), 10**7), rgb)
    for fmt in ("JPEG", "BMP", "TIFF", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt)
        out = decode_image(buf.getvalue(), 10**7)
        assert out.shape == rgb.shape and out.dtype == np.uint8, fmt


def test_decode_converts_modes():
    gray = Image.new("L", (20, 10), 100)
    out = decode_image(png_bytes(gray), 10**6)
    assert out.shape == (10, 20, 3) and (out == 100).all()

    palette = Image.new("RGB", (20, 10), (10, 20, 30)).convert("P", palette=Image.ADAPTIVE)
    assert (decode_image(png_bytes(palette), 10**6)[0, 0] == (10, 20, 30)).all()
    # Fully transparent palette image -> white.
    assert (decode_image(png_bytes(palette, transparency=0), 10**6) == 255).all()

    # 16-bit grayscale is scaled down, not clipped to white.
    deep = Image.fromarray(np.full((10, 20), 0x8000, dtype=np.uint16))
    out = decode_image(png_bytes(deep), 10**6)
    assert out.dtype == np.uint8 and 126 <= int(out[0, 0, 0]) <= 129

    # Dark text on transparency goes onto white, light text onto black.
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[2:4, 2:8] = (0, 0, 0, 255)
    out = decode_image(png_bytes(Image.fromarray(rgba, "RGBA")), 10**6)
    assert (out[0, 0] == 255).all() and (out[2, 2] == 0).all()
    rgba[2:4, 2:8] = (255, 255, 255, 255)
    out = decode_image(png_bytes(Image.fromarray(rgba, "RGBA")), 10**6)
    assert (out[0, 0] == 0).all() and (out[2, 2] == 255).all()


def test_decode_applies_exif_orientation():
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 10))  # red square top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=95)

    out = decode_image(buf.getvalue(), 10**6)

    assert out.shape == (40, 20, 3)
    red, green = int(out[2, 17, 0]), int(out[2, 17, 1])  # top-right after the rotation
    assert red > 200 and green < 60
