"""Uploaded portraits: decoding with limits, and the reasons a file is refused.

Limits are checked before pixels are decoded: the byte size first, then the pixel count from the file header (a
small PNG can declare 50 megapixels and would take gigabytes to decode), then the face, which must be big enough to
animate without looking blurred.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.media import MAX_PORTRAIT_BYTES

MAX_PORTRAIT_MEGAPIXELS = 25.0
MIN_PORTRAIT_SIDE = 64
MIN_FACE_PIXELS = 80  # face width at the cheekbones in the uploaded image
FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}


class PortraitError(ValueError):
    """A portrait we cannot animate. `reason` is a stable code, `message` a sentence for a person."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def decode_portrait(
    data: bytes, max_bytes: int = MAX_PORTRAIT_BYTES, max_megapixels: float = MAX_PORTRAIT_MEGAPIXELS
) -> np.ndarray:
    """The portrait as an RGB uint8 array, upright (EXIF orientation applied), or PortraitError."""
    if len(data) > max_bytes:
        raise PortraitError(
            "too_large",
            f"the portrait is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB",
        )
    if not data:
        raise PortraitError("not_an_image", "the portrait is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            kind = image.format
            width, height = image.size
            if kind not in FORMATS:
                raise PortraitError(
                    "unsupported_format", f"the portrait is a {kind} image; send a JPEG, PNG or WebP image"
                )
            megapixels = width * height / 1e6
            if megapixels > max_megapixels:
                raise PortraitError(
                    "too_many_pixels",
                    f"the portrait is {width}x{height} ({megapixels:.1f} megapixels); the limit is "
                    f"{max_megapixels:g} megapixels",
                )
            if min(width, height) < MIN_PORTRAIT_SIDE:
                raise PortraitError(
                    "face_too_small",
                    f"the portrait is only {width}x{height} pixels; at least {MIN_PORTRAIT_SIDE} on each side",
                )
            image = ImageOps.exif_transpose(image)
            rgb = np.asarray(image.convert("RGB"))
    except PortraitError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PortraitError("not_an_image", "the portrait is not a JPEG, PNG or WebP image") from None
    except (OSError, ValueError, SyntaxError):
        raise PortraitError("not_an_image", "the portrait file is damaged and cannot be decoded") from None
    return np.ascontiguousarray(rgb)
