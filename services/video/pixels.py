"""The video path's pixel format: I420 (yuv420p: a Y plane, then U and V at half width and height), BT.601 limited
range, which is what H.264 players assume for untagged video.

Why here: every renderer (drawn, photo, InfiniteTalk) hands I420 to the encoder, and each used to convert on its own
(the drawn avatar with its own matrix, the photo renderer with OpenCV, the photo warp with the coefficients again) and
to slice the planes out of a frame by hand. This module is the one definition of the layout and of the conversion.

It converts RGB two ways, for two jobs; both use the BT.601 matrix below and agree within one level on flat colour:
- `rgb_to_i420`: OpenCV's fixed-point conversion, each chroma sample taken from its 2x2 block's top-left pixel; fast,
  for whole frames (photo and InfiniteTalk output). `rgb_to_yuv444` gives its Y with U and V at full resolution (the
  photo warp resamples them itself).
- `rgb_to_i420_planes`: the matrix in float32, each chroma sample the mean of its 2x2 block, so anti-aliased edges
  do not fringe; for the drawn avatar's pictures and patches, which are made once and cached."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "U_RGB",
    "V_RGB",
    "Y_RGB",
    "i420_planes",
    "i420_size",
    "i420_to_rgb",
    "rgb_to_i420",
    "rgb_to_i420_planes",
    "rgb_to_yuv444",
    "to_u8",
]

# BT.601 limited range, per 8-bit RGB level: Y = 16 + (Y_RGB . rgb) / 255; U and V likewise around 128.
Y_RGB = (65.481, 128.553, 24.966)
U_RGB = (-37.797, -74.203, 112.0)
V_RGB = (112.0, -93.786, -18.214)

_RGB_TO_YUV = np.ascontiguousarray(np.array([Y_RGB, U_RGB, V_RGB], dtype=np.float32).T) / np.float32(255.0)
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def i420_size(width: int, height: int) -> int:
    """Bytes of one I420 frame (even width and height)."""
    return width * height * 3 // 2


def i420_planes(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the (Y, U, V) planes of a flat uint8 I420 `frame` (writable when `frame` is)."""
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (
        frame[:luma].reshape(height, width),
        frame[luma : luma + chroma].reshape(height // 2, width // 2),
        frame[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2),
    )


def to_u8(values: np.ndarray) -> np.ndarray:
    """Float levels rounded and clipped to uint8."""
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def rgb_to_i420(rgb: np.ndarray) -> bytes:
    """I420 bytes of an RGB uint8 frame with even width and height (OpenCV: top-left chroma of each 2x2 block)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()


def rgb_to_i420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, U, V) uint8 planes of an RGB image with even height and width (chroma averaged over 2x2 blocks)."""
    yuv = rgb.astype(np.float32) @ _RGB_TO_YUV + _YUV_OFFSET
    h, w = rgb.shape[:2]
    chroma = yuv[:, :, 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    return to_u8(yuv[:, :, 0]), to_u8(chroma[:, :, 0]), to_u8(chroma[:, :, 1])


def rgb_to_yuv444(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (exactly as `rgb_to_i420` computes it), U and V uint8 planes of an RGB picture, all at full resolution."""
    h = rgb.shape[0]
    y = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)[:h])
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    u = 128.0 + (U_RGB[0] * r + U_RGB[1] * g + U_RGB[2] * b) / 255.0
    v = 128.0 + (V_RGB[0] * r + V_RGB[1] * g + V_RGB[2] * b) / 255.0
    return y, to_u8(u), to_u8(v)


def i420_to_rgb(i420: bytes, width: int, height: int) -> np.ndarray:
    """RGB uint8 of an I420 frame (what a viewer decodes): for previews and for measuring output frames."""
    return cv2.cvtColor(np.frombuffer(i420, np.uint8).reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_I420)
