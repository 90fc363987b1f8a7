"""The mouth's per-pixel loops of the photo warp, compiled with numba (the pictures they make are described in
`warp`): the per-frame table of the lip curves, then one pass over the mouth box that replaces the head map by the
mouth and jaw field and works out the interior's paint where the lips part. The other loops (head map, eyelids,
chroma maps, the paint's blend) are in `frame_kernels`; the resampling itself is OpenCV's `remap`, straight into the
I420 planes.

Curves of u (the lips' seam and inner edge, the opening across the mouth, the jaw profile) are tables on a regular
grid, so no pixel pays for a search, a power or a log; the mouth reads the nearest entry (8 a pixel). The loops are
written to vectorise (LLVM's loop vectoriser does it, no fast-math): each box row is a row view indexed from 0 (an
index like `x0 + j` makes numba wrap negative indices, which hides the access pattern), the per-row scratch is one
flat array with fields at constant distances (separate arrays would need run-time overlap checks, and past eight of
them the vectoriser gives up), the table reads (gathers) sit in their own loop, and exp is a polynomial. Without
fast-math the same inputs give the same bits whichever code path a pixel takes, so an idle pose always renders the
same frame (the idle loop relies on it). The interior's colours are converted to Y, U, V inline with BT.601's
coefficients (the one place besides `services.video.pixels` that has them: the loop is fused).

Every kernel of the photo warp (here and in `frame_kernels`) is compiled with `JIT`: on first use (a few seconds) and
cached next to its file, or in numba's user cache directory when that is read-only (NUMBA_CACHE_DIR overrides); a
process with a warm cache loads them in about 0.3 s.
"""

from __future__ import annotations

import numba
import numpy as np

# Compile options of every photo-warp kernel: cached on disk, GIL released, numpy-style float errors.
JIT = {"cache": True, "nogil": True, "error_model": "numpy"}

# Columns of the per-frame mouth table (functions of the source column u_src).
SEAM, LOWER_SRC, GAP, JAW, ACROSS, TEETH_WEIGHT = 0, 1, 2, 3, 4, 5
MOUTH_COLUMNS = 6
# Columns of the per-rig mouth table.
RIG_SEAM, RIG_LOWER, RIG_LOG_ACROSS, RIG_JAW, RIG_ACROSS, RIG_TEETH = 0, 1, 2, 3, 4, 5
RIG_COLUMNS = 6
# Entries of the mouth parameter vector.
P_OX, P_OY, P_UX, P_UY, P_HALF_W, P_CORNER, P_CHIN, P_NECK, P_NOSE = 0, 1, 2, 3, 4, 5, 6, 7, 8
P_SPREAD_ON, P_PAINT_ON, P_OPEN, P_TEETH_CAP, P_U0, P_U_INV, P_GAP_MAX, P_JAW_AMP = 9, 10, 11, 12, 13, 14, 15, 16
P_FAR = 17  # below this v the mouth warp changes nothing (no drop, no visible spread)
MOUTH_PARAMS = 18

CAVITY = (38.0, 15.0, 17.0)
TONGUE = (122.0, 56.0, 60.0)
TEETH = (232.0, 226.0, 214.0)


# float32 constants: the mouth's per-pixel passes run in single precision, twice as many lanes per instruction.
_0, _1, _2, _3, _HALF = np.float32(0.0), np.float32(1.0), np.float32(2.0), np.float32(3.0), np.float32(0.5)
_SHARE = np.float32(0.2)  # the upper lip's share of the gap
_EXP_MIN = np.float32(-40.0)
_C2, _C3, _C4 = np.float32(1.0 / 2.0), np.float32(1.0 / 6.0), np.float32(1.0 / 24.0)
_C5, _C6, _C7 = np.float32(1.0 / 120.0), np.float32(1.0 / 720.0), np.float32(1.0 / 64.0)


@numba.njit(inline="always", **JIT)
def _smooth32(t):
    t = min(max(t, _0), _1)
    return t * t * (_3 - _2 * t)


@numba.njit(inline="always", **JIT)
def _exp_neg32(x):
    """e**x for x <= 0 (float32) with plain arithmetic, so the loops that use it vectorise: a Taylor polynomial of
    e**(x/64) squared six times (relative error below 1e-5 down to x = -13; absolute error below 3e-6)."""
    y = max(x, _EXP_MIN) * _C7
    p = _1 + y * (_1 + y * (_C2 + y * (_C3 + y * (_C4 + y * (_C5 + y * _C6)))))
    p *= p
    p *= p
    p *= p
    p *= p
    p *= p
    return p * p


@numba.njit(**JIT)
def mouth_table(rig: np.ndarray, gap_max: float, exponent: float, out: np.ndarray, bounds: np.ndarray) -> None:
    """The per-frame functions of u_src (MOUTH_* columns, float32) from the rig's (RIG_* columns) and the shape;
    `bounds` gets the lowest upper-lip edge and the highest lower-lip edge over all columns."""
    upper_min = np.inf
    lower_max = -np.inf
    for k in range(rig.shape[0]):
        across = rig[k, RIG_ACROSS]
        seam = rig[k, RIG_SEAM]
        lower = rig[k, RIG_LOWER]
        gap = gap_max * np.exp(exponent * rig[k, RIG_LOG_ACROSS]) if across > 0.0 else 0.0
        out[k, SEAM] = seam
        out[k, LOWER_SRC] = lower
        out[k, GAP] = gap
        out[k, JAW] = rig[k, RIG_JAW]
        out[k, ACROSS] = across
        out[k, TEETH_WEIGHT] = rig[k, RIG_TEETH] if lower - seam < 1.0 else 0.0
        # As the kernel computes them (float32), so the bounds hold exactly.
        upper = np.float32(np.float32(seam) - _SHARE * np.float32(gap))
        upper_min = min(upper_min, upper)
        lower_max = max(lower_max, upper + np.float32(gap))
    bounds[0] = upper_min
    bounds[1] = lower_max


@numba.njit(inline="always", **JIT)
def _spread(u, vz, corner, half_w, inv_half, inv_beyond):
    """u_src of a pixel at u (vz: its squared distance from the lips in units of the fade): the corners spread (or
    round inwards), fading beyond the corners and away from the lips, inverted with two fixed-point steps."""
    b = max(abs(u) - half_w, _0) * inv_beyond
    first = u - corner * min(max(u * inv_half, -_1), _1) * _exp_neg32(-(vz + b * b))
    b = max(abs(first) - half_w, _0) * inv_beyond
    return u - corner * min(max(first * inv_half, -_1), _1) * _exp_neg32(-(vz + b * b))


@numba.njit(inline="always", **JIT)
def _lift(v, seam, gap, nose):
    """Above the seam: the upper lip rises by its share of the gap, fading out at the nose."""
    rise = _SHARE * gap
    inv = _1 / max(seam - nose, _1)
    above = v
    for _ in range(4):
        above = v + rise * _smooth32((above - nose) * inv)
    return min(above, seam)


@numba.njit(inline="always", **JIT)
def _drop(v, seam, lower_src, gap, jaw, jaw_amp, chin, inv_neck):
    """Below the lower lip: the lip's shift blends into the jaw's drop at the chin and fades out down the neck."""
    shift = seam + (_1 - _SHARE) * gap - lower_src
    jaw_minus = jaw_amp * jaw - shift
    inv = _1 / max(chin - lower_src, _1)
    below = v
    for _ in range(4):
        s = _smooth32((below - lower_src) * inv)
        fade = _1 - _smooth32((below - chin) * inv_neck)
        below = v - (shift + jaw_minus * s) * fade
    return max(below, lower_src)


# The mouth kernel's per-row scratch: one flat float32 array, a field every ROW_STRIDE entries. Fields of one array
# at constant distances are what lets the compiler prove that the row loops do not overlap themselves (separate
# arrays would need run-time overlap checks, and too many of them stop vectorisation).
ROW_STRIDE = 4096  # the widest mouth box (pixels)
F_US, F_V, F_SEAM, F_LOWER, F_GAP, F_JAW, F_ACROSS, F_TEETH = 0, 1, 2, 3, 4, 5, 6, 7
F_ALPHA, F_Y, F_U, F_V_CHROMA = 8, 9, 10, 11
ROW_FIELDS = 12


@numba.njit(**JIT)
def mouth_warp(
    map_x: np.ndarray,
    map_y: np.ndarray,
    box: np.ndarray,
    params: np.ndarray,
    table: np.ndarray,
    bounds: np.ndarray,
    rows: np.ndarray,
    paint4: np.ndarray,
    painted: np.ndarray,
) -> None:
    """Replaces the maps inside the mouth box by the mouth and jaw warp (in place). When painting is on, writes the
    interior's coverage and colour (`paint4`: alpha, Y, U, V planes of the box) for the box rows that reach between
    the lips, and the span of those rows into `painted` (x0, y0, x1, y1 in frame pixels; empty when y1 <= y0).

    Row by row: face coordinates and the corners' spread (vectorised); the lip curves at each pixel's source
    column (table reads, one at a time); where each pixel samples, above the seam (the upper lip rises), below the
    lower lip (the jaw drops) or between the lips (the photo's own interior hangs from the upper lip), vectorised,
    rows wholly above or below the lips skipping the other cases; the paint, only on rows that reach between the
    lips. `rows` is scratch (ROW_FIELDS x ROW_STRIDE)."""
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    f32 = np.float32
    ox, oy, ux, uy = f32(params[P_OX]), f32(params[P_OY]), f32(params[P_UX]), f32(params[P_UY])
    half_w = f32(params[P_HALF_W])
    corner = f32(params[P_CORNER]) if params[P_SPREAD_ON] > 0.0 else _0
    chin, nose = f32(params[P_CHIN]), f32(params[P_NOSE])
    inv_neck = f32(1.0 / params[P_NECK])
    paint_on = params[P_PAINT_ON] > 0.0
    jaw_amp = f32(params[P_JAW_AMP])
    teeth_cap = f32(params[P_TEETH_CAP])
    tongue = f32(min(1.0, params[P_OPEN] * 1.4))
    # Nearest entry of the tables (they hold TABLE_STEPS_PER_PIXEL entries a pixel).
    u0, u_inv = f32(params[P_U0] - 0.5 / params[P_U_INV]), f32(params[P_U_INV])
    inv_vertical = f32(1.0 / (0.9 * params[P_HALF_W]))
    inv_half = f32(1.0 / params[P_HALF_W])
    inv_beyond = f32(1.0 / (0.7 * params[P_HALF_W]))
    above_all = f32(bounds[0]) - _1
    below_all = f32(bounds[1]) + _1
    last = f32(table.shape[0] - 1)
    beyond_all = f32(params[P_FAR]) + _1
    n = x1 - x0
    if n > ROW_STRIDE:
        raise ValueError("the mouth box is wider than ROW_STRIDE")
    cav_r, cav_g, cav_b = f32(CAVITY[0]), f32(CAVITY[1]), f32(CAVITY[2])
    ton_r, ton_g, ton_b = f32(TONGUE[0] - CAVITY[0]), f32(TONGUE[1] - CAVITY[1]), f32(TONGUE[2] - CAVITY[2])
    tee_r, tee_g, tee_b = f32(TEETH[0]), f32(TEETH[1]), f32(TEETH[2])
    S = ROW_STRIDE
    py0, py1 = y1, y0
    for y in range(y0, y1):
        # Row views indexed from 0: numba then knows the indices are not negative, and the loops vectorise.
        rx = map_x[y, x0:x1]
        ry = map_y[y, x0:x1]
        high = 0
        low = 0
        far = 0
        for j in range(n):
            v = (ry[j] - oy) * ux - (rx[j] - ox) * uy
            rows[F_V * S + j] = v
            high += v < above_all
            low += v > below_all
            far += v > beyond_all
        if paint_on:
            paint4[0, y - y0, :] = _0  # no interior unless this row paints some (the paint reads rows py0..py1)
        if far == n:
            continue  # below the jaw's reach and too far from the lips for the corners' spread to show
        if corner == _0:
            for j in range(n):
                rows[F_US * S + j] = (rx[j] - ox) * ux + (ry[j] - oy) * uy
        else:
            for j in range(n):
                dx = rx[j] - ox
                dy = ry[j] - oy
                vz = rows[F_V * S + j] * inv_vertical
                rows[F_US * S + j] = _spread(dx * ux + dy * uy, vz * vz, corner, half_w, inv_half, inv_beyond)
        near = paint_on and high < n and low < n
        for j in range(n):
            i = int(min(max((rows[F_US * S + j] - u0) * u_inv, _0), last))
            rows[F_SEAM * S + j] = table[i, SEAM]
            rows[F_LOWER * S + j] = table[i, LOWER_SRC]
            rows[F_GAP * S + j] = table[i, GAP]
            rows[F_JAW * S + j] = table[i, JAW]
        if near:
            for j in range(n):
                i = int(min(max((rows[F_US * S + j] - u0) * u_inv, _0), last))
                rows[F_ACROSS * S + j] = table[i, ACROSS]
                rows[F_TEETH * S + j] = table[i, TEETH_WEIGHT]
        if high == n:
            for j in range(n):
                vs = _lift(rows[F_V * S + j], rows[F_SEAM * S + j], rows[F_GAP * S + j], nose)
                us = rows[F_US * S + j]
                rx[j] = ox + us * ux - vs * uy
                ry[j] = oy + us * uy + vs * ux
        elif low == n:
            for j in range(n):
                v = rows[F_V * S + j]
                seam = rows[F_SEAM * S + j]
                vs = _drop(
                    v, seam, rows[F_LOWER * S + j], rows[F_GAP * S + j], rows[F_JAW * S + j], jaw_amp, chin, inv_neck
                )
                us = rows[F_US * S + j]
                rx[j] = ox + us * ux - vs * uy
                ry[j] = oy + us * uy + vs * ux
        else:
            for j in range(n):
                v = rows[F_V * S + j]
                seam = rows[F_SEAM * S + j]
                lower_src = rows[F_LOWER * S + j]
                gap = rows[F_GAP * S + j]
                upper = seam - _SHARE * gap
                above = _lift(v, seam, gap, nose)
                below = _drop(v, seam, lower_src, gap, rows[F_JAW * S + j], jaw_amp, chin, inv_neck)
                inside = min(seam + (v - upper), lower_src)
                vs = above if v <= upper else (below if v >= upper + gap else inside)
                us = rows[F_US * S + j]
                rx[j] = ox + us * ux - vs * uy
                ry[j] = oy + us * uy + vs * ux
        if not near:
            continue
        # The interior where the opening is deeper than the photo's own (anti-aliased, 1 px edges); thin slits
        # towards the corners stay partly lip-coloured; upper teeth under the lip when the photo shows none.
        py0 = min(py0, y)
        py1 = y + 1
        for j in range(n):
            v = rows[F_V * S + j]
            seam = rows[F_SEAM * S + j]
            gap = rows[F_GAP * S + j]
            upper = seam - _SHARE * gap
            depth = v - upper
            a = min(max(depth + _HALF, _0), _1) * min(max(upper + gap - v + _HALF, _0), _1)
            a *= min(max(depth - (rows[F_LOWER * S + j] - seam) + _HALF, _0), _1) * min(max(gap * f32(0.25), _0), _1)
            share = min(max(depth / max(gap, _1), _0), _1)
            k = min(max((share - f32(0.55)) * f32(1.0 / 0.45), _0), _1) * tongue
            r = cav_r + ton_r * k
            g = cav_g + ton_g * k
            b = cav_b + ton_b * k
            teeth = (
                _smooth32((min(f32(0.42) * gap, teeth_cap) - depth) * f32(1.0 / 1.5) + _HALF) * rows[F_TEETH * S + j]
            )
            shade = f32(0.75) + f32(0.25) * rows[F_ACROSS * S + j]
            r += (tee_r * shade - r) * teeth
            g += (tee_g * shade - g) * teeth
            b += (tee_b * shade - b) * teeth
            rows[F_ALPHA * S + j] = a if abs(rows[F_US * S + j]) < half_w else _0
            # BT.601, limited range (what rgb_to_i420 writes).
            rows[F_Y * S + j] = f32(16.0) + (f32(65.481 / 255) * r + f32(128.553 / 255) * g + f32(24.966 / 255) * b)
            rows[F_U * S + j] = f32(128.0) + (f32(-37.797 / 255) * r + f32(-74.203 / 255) * g + f32(112.0 / 255) * b)
            rows[F_V_CHROMA * S + j] = f32(128.0) + (
                f32(112.0 / 255) * r + f32(-93.786 / 255) * g + f32(-18.214 / 255) * b
            )
        for plane, field in ((0, F_ALPHA), (1, F_Y), (2, F_U), (3, F_V_CHROMA)):
            out = paint4[plane, y - y0]
            for j in range(n):
                out[j] = rows[field * S + j]
    painted[0] = x0
    painted[1] = py0
    painted[2] = x1
    painted[3] = py1
