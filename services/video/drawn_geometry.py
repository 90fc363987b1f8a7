"""Where the drawn face's parts sit: a 512x512 design space, scaled to the output size, and the pixel boxes that hold
the moving parts.

Why apart: every other drawn module speaks design units (the static picture, the mouth and eyes, the painter that
maps them to pixels), while the renderer and the tests need the same layout in pixels (which region a mouth frame may
change). Keeping the numbers in one pure module means moving an eye or widening the mouth is one edit, and the boxes
that bound them follow. No numpy.
"""

from __future__ import annotations

import math

DESIGN = 512.0
CENTER = 256.0

# Where the moving parts sit in design space.
EYE_Y = 258.0
EYE_DX = 52.0
EYE_RX = 24.0
EYE_RY = 20.0
MOUTH_X = 256.0
MOUTH_Y = 346.0
MOUTH_HALF_WIDTH = 34.0
MOUTH_MAX_GAP = 30.0

# Design-space boxes that contain the mouth / both eyes for every parameter value (before head motion).
_MOUTH_DESIGN_BOX = (MOUTH_X - 46.0, MOUTH_Y - 27.0, MOUTH_X + 46.0, MOUTH_Y + 42.0)
_EYES_DESIGN_BOX = (CENTER - EYE_DX - EYE_RX - 9.0, EYE_Y - EYE_RY - 6.0, CENTER + EYE_DX + EYE_RX + 9.0, EYE_Y + 24.0)

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1)
PixelBox = tuple[int, int, int, int]  # (x0, y0, x1, y1)


def design_scale(width: int, height: int) -> float:
    """Output pixels per design unit."""
    return min(width, height) / DESIGN


def max_head_shift(width: int, height: int) -> int:
    """The largest head offset in pixels (each axis) the idle and speaking motion can reach."""
    return max(1, round(1.6 * design_scale(width, height)))


def _pixel_box(design_box: Box, width: int, height: int) -> PixelBox:
    s = design_scale(width, height)
    margin = max_head_shift(width, height) + 1
    x0 = width / 2 + (design_box[0] - CENTER) * s - margin
    y0 = height / 2 + (design_box[1] - CENTER) * s - margin
    x1 = width / 2 + (design_box[2] - CENTER) * s + margin
    y1 = height / 2 + (design_box[3] - CENTER) * s + margin
    ix0 = max(0, math.floor(x0 / 2) * 2)
    iy0 = max(0, math.floor(y0 / 2) * 2)
    ix1 = min(width, math.ceil(x1 / 2) * 2)
    iy1 = min(height, math.ceil(y1 / 2) * 2)
    return ix0, iy0, ix1, iy1


def mouth_box(width: int, height: int) -> PixelBox:
    """(x0, y0, x1, y1) in pixels, even-aligned: the region that contains the mouth at every shape and head position.
    Outside it nothing changes when the mouth moves."""
    return _pixel_box(_MOUTH_DESIGN_BOX, width, height)


def eye_box(width: int, height: int) -> PixelBox:
    """(x0, y0, x1, y1) in pixels, even-aligned: the region that contains both eyes (blinks, glances) at every
    head position."""
    return _pixel_box(_EYES_DESIGN_BOX, width, height)
