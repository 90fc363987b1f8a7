"""Anti-aliased implicit shapes on a float RGB canvas: the one drawing primitive of the drawn avatar.

Why apart: the static picture and the moving parts are all drawn the same way (a shape is a signed distance or an
implicit function of design coordinates, its coverage blends a colour in), and the canvas may be a whole padded
picture or a small patch of it at a sub-pixel offset. The painter owns that mapping from design units to canvas
pixels, so the drawing code never computes a pixel index. numpy only; nothing here knows what a face is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from services.video.drawn_geometry import CENTER, Box
from services.video.drawn_style import Color

Coverage = Callable[[np.ndarray, np.ndarray], np.ndarray]


def ellipse_d(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance (design units) to an ellipse: exact on the outline, good enough nearby."""
    u = (x - cx) / rx
    v = (y - cy) / ry
    f = u * u + v * v - 1.0
    grad = 2.0 * np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return f / np.maximum(grad, 1e-3)


def circle_d(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


class Painter:
    """Paints on `canvas` (float32 H x W x 3). Design point (x, y) sits at canvas pixel (ox + (x - 256) * s,
    oy + (y - 256) * s); shapes are given as signed-distance or implicit functions of design coordinates."""

    def __init__(self, canvas: np.ndarray, ox: float, oy: float, scale: float) -> None:
        self.canvas = canvas
        self.ox = ox
        self.oy = oy
        self.s = scale

    def window(self, box: Box) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """The canvas slice under a design box (plus 2 px), with the design x of its columns (1 x W) and y of its
        rows (H x 1); None when it covers less than 2 x 2 pixels of the canvas."""
        h, w = self.canvas.shape[:2]
        c0 = max(0, math.floor(self.ox + (box[0] - CENTER) * self.s) - 2)
        c1 = min(w, math.ceil(self.ox + (box[2] - CENTER) * self.s) + 2)
        r0 = max(0, math.floor(self.oy + (box[1] - CENTER) * self.s) - 2)
        r1 = min(h, math.ceil(self.oy + (box[3] - CENTER) * self.s) + 2)
        if c1 - c0 < 2 or r1 - r0 < 2:
            return None
        xs = (np.arange(c0, c1, dtype=np.float32) + 0.5 - self.ox) / self.s + CENTER
        ys = (np.arange(r0, r1, dtype=np.float32) + 0.5 - self.oy) / self.s + CENTER
        return (slice(r0, r1), slice(c0, c1)), xs[None, :], ys[:, None]

    def cov(self, distance: np.ndarray, feather: float = 0.0) -> np.ndarray:
        """Coverage from a design-unit signed distance; `feather` (design units) softens the edge beyond 1 px."""
        width = max(1.0 / self.s, feather)
        return np.clip(0.5 - distance / width, 0.0, 1.0)

    def cov_implicit(self, f: np.ndarray) -> np.ndarray:
        """Coverage of {f < 0} for any smooth implicit f, by its numeric gradient (distance = f / |grad f|)."""
        gy, gx = np.gradient(f)
        return np.clip(0.5 - f / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-6), 0.0, 1.0)

    def paint(self, box: Box, coverage: Coverage, color: Color, alpha: float = 1.0) -> None:
        """Blends `color` in with the coverage `coverage(x, y)` gives inside the design box."""
        window = self.window(box)
        if window is None:
            return
        sl, x, y = window
        region = self.canvas[sl]
        cov = np.broadcast_to(coverage(x, y), region.shape[:2]).astype(np.float32, copy=False)
        if alpha != 1.0:
            cov = cov * alpha
        region += (np.asarray(color, dtype=np.float32) - region) * cov[..., None]
