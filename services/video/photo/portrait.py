"""Uploaded portraits: decoding with limits, and the reasons a file is refused.

Limits are checked before pixels are decoded: the byte size first, then the format from the file's first bytes, then
the pixel count from the file header (a small PNG can declare 50 megapixels and would take gigabytes to decode), then
the face, which must be big enough to animate without looking blurred.

Why the format is settled before Pillow sees the file: `Image.open` otherwise offers the bytes to every parser it has
(dozens, some rarely exercised), so an upload could reach code that no portrait ever needs. The magic bytes must be
JPEG's, PNG's or WebP's, and `Image.open` is told those formats only; any other known format is named in the refusal.
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
FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}  # Pillow's format id: the name people know
ACCEPTED = "send a JPEG, PNG or WebP image"
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)  # BITMAPCOREHEADER ... BITMAPV5HEADER


def sniff_format(data: bytes) -> str | None:
    """The format the first bytes announce: a key of FORMATS, the name of another image or document format (so the
    refusal can say what was sent), or None when they announce nothing known."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG 2000"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL"
    if head[:4] == b"8BPS":
        return "Photoshop"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if head[:4] == b"qoif":
        return "QOI"
    if head[:4] == b"%PDF":
        return "PDF"
    if head.lstrip()[:5].lower() in (b"<?xml", b"<svg ", b"<svg>"):
        return "SVG"
    return None


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
    sniffed = sniff_format(data)
    if sniffed is None:
        raise PortraitError("not_an_image", "the portrait is not a JPEG, PNG or WebP image")
    if sniffed not in FORMATS:
        article = "an" if sniffed[0] in "AEIOU" else "a"
        raise PortraitError("unsupported_format", f"the portrait is {article} {sniffed} file; {ACCEPTED}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[sniffed])  # that parser only, never the others
            kind = image.format
            width, height = image.size
            if kind != sniffed and (sniffed, kind) != ("JPEG", "MPO"):  # MPO: a camera's JPEG with extra frames
                raise PortraitError("unsupported_format", f"the portrait is a {kind} image; {ACCEPTED}")
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PortraitError("not_an_image", "the portrait is not a JPEG, PNG or WebP image") from None
    except UnidentifiedImageError:  # its first bytes say JPEG, PNG or WebP, but that parser cannot read it
        raise PortraitError("not_an_image", "the portrait file is damaged and cannot be decoded") from None
    except (OSError, ValueError, SyntaxError):
        raise PortraitError("not_an_image", "the portrait file is damaged and cannot be decoded") from None
    return np.ascontiguousarray(rgb)
