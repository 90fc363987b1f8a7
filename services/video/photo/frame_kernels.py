"""The photo warp's per-pixel loops outside the mouth, compiled with numba like the mouth's (`kernels`, whose `JIT`
options they share: cached on disk, so a warm process loads them instead of compiling).

Why apart: the mouth's loops are tuned to vectorise and carry their own conventions (float32, a flat scratch row,
tables read at the nearest entry); these four are plain double loops, each one pass: the head's backward map over the
whole frame, the eyelids inside the eye boxes (while blinking; their curve tables are interpolated, `_index` and
`_at`), the chroma planes' maps (each 2x2 block's top-left pixel, as `rgb_to_i420` samples), and the blend of the
mouth's interior paint over the resampled planes.
"""

from __future__ import annotations

import numba
import numpy as np

from services.video.photo.kernels import JIT


@numba.njit(**JIT)
def _index(value: float, origin: float, inverse_step: float, size: int) -> tuple[int, float]:
    """Grid cell and fraction of `value` on a table of `size` entries (clamped: flat beyond the ends)."""
    f = min(max((value - origin) * inverse_step, 0.0), size - 1.000001)
    i = int(f)
    return i, f - i


@numba.njit(**JIT)
def _at(table: np.ndarray, i: int, t: float, column: int) -> float:
    a = table[i, column]
    return a + (table[i + 1, column] - a) * t


@numba.njit(**JIT)
def head_maps(
    row_x: np.ndarray, row_y: np.ndarray, row_w: np.ndarray, col_y: np.ndarray, map_x: np.ndarray, map_y: np.ndarray
) -> None:
    """map_x = x - row_x[y], map_y = row_y[y] - row_w[y] * col_y[x]: the head's backward map (float32)."""
    h, w = map_x.shape
    for y in range(h):
        ax = row_x[y]
        ay = row_y[y]
        aw = row_w[y]
        for x in range(w):
            map_x[y, x] = np.float32(x) - ax
            map_y[y, x] = ay - aw * col_y[x]


@numba.njit(**JIT)
def eyelid_warp(
    map_x: np.ndarray,
    map_y: np.ndarray,
    box: np.ndarray,
    params: np.ndarray,
    curves: np.ndarray,
    blink: float,
) -> None:
    """The upper lid slides down to the lower lid, the lid skin above it stretches (in place, inside the eye box).
    params: centre x, y, axis ux, uy, half width, table origin, inverse step; curves: upper lid, lower lid, and
    where the stretch starts, per table entry."""
    cx, cy, ux, uy, half = params[0], params[1], params[2], params[3], params[4]
    u0, u_inv = params[5], params[6]
    size = curves.shape[0]
    closure = min(blink, 1.0)
    for y in range(box[1], box[3]):
        for x in range(box[0], box[2]):
            dx = np.float64(map_x[y, x]) - cx
            dy = np.float64(map_y[y, x]) - cy
            u = dx * ux + dy * uy
            if abs(u) >= half:
                continue
            v = dy * ux - dx * uy
            i, t = _index(u, u0, u_inv, size)
            start = _at(curves, i, t, 2)
            if v <= start:
                continue
            upper = _at(curves, i, t, 0)
            lid = upper + closure * (_at(curves, i, t, 1) - upper)
            if v >= lid:
                continue
            vs = start + (v - start) * ((upper - start) / max(lid - start, 1e-3))
            map_x[y, x] = np.float32(cx + u * ux - vs * uy)
            map_y[y, x] = np.float32(cy + u * uy + vs * ux)


@numba.njit(**JIT)
def chroma_maps(map_x: np.ndarray, map_y: np.ndarray, out_x: np.ndarray, out_y: np.ndarray) -> None:
    """The maps of the chroma planes: each chroma sample takes its 2x2 block's top-left pixel, as rgb_to_i420 does."""
    h, w = out_x.shape
    for y in range(h):
        for x in range(w):
            out_x[y, x] = map_x[2 * y, 2 * x]
            out_y[y, x] = map_y[2 * y, 2 * x]


@numba.njit(**JIT)
def paint(
    plane_y: np.ndarray,
    plane_u: np.ndarray,
    plane_v: np.ndarray,
    box: np.ndarray,
    painted: np.ndarray,
    paint4: np.ndarray,
) -> None:
    """Blends the interior's colour over the resampled planes where its coverage is above 0 (chroma: each 2x2
    block's top-left pixel, as rgb_to_i420 samples it)."""
    bx, by = box[0], box[1]
    for y in range(painted[1], painted[3]):
        for x in range(painted[0], painted[2]):
            a = np.float64(paint4[0, y - by, x - bx])
            if a <= 0.0:
                continue
            old = np.float64(plane_y[y, x])
            plane_y[y, x] = np.uint8(min(max(old + (paint4[1, y - by, x - bx] - old) * a + 0.5, 0.0), 255.0))
            if (x | y) & 1 == 0:
                cy, cx = y >> 1, x >> 1
                old = np.float64(plane_u[cy, cx])
                plane_u[cy, cx] = np.uint8(min(max(old + (paint4[2, y - by, x - bx] - old) * a + 0.5, 0.0), 255.0))
                old = np.float64(plane_v[cy, cx])
                plane_v[cy, cx] = np.uint8(min(max(old + (paint4[3, y - by, x - bx] - old) * a + 0.5, 0.0), 255.0))
