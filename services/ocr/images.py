"""Cheap checks of an encoded image at the gateway: header only, no pixel decoding, so garbage
and decompression bombs are refused before a job exists."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from shared.errors import InvalidArgument

MIN_SIDE = 8


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
