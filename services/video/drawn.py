"""The CPU default avatar: a drawn, friendly face whose mouth follows the visemes, with blinks, glances and a little
breathing sway (the avatar's idle loop: a function of the loop phase, see `services.video.idle`).

Cost model: everything static (background, body, hair, face, brows, nose) is drawn once per (style, size) with
anti-aliased implicit shapes in numpy and kept as padded I420 planes. A frame is then a crop of those planes at the
head's integer offset (that is the head motion; a pixel or two, on a smooth background) plus two small patches drawn
per frame and cached by their quantized parameters: the mouth and the eyes. All geometry is in a 512x512 design
space scaled to the output size, so any even size works.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.common.lru import Lru
from services.video.backend import AvatarInfo, AvatarRenderer, Drive, FrameByFrameRenderer, IdleLoop, RendererBackend
from services.video.idle import GAZES, IdleSchedule, avatar_seed
from services.video.pixels import i420_planes, i420_size, rgb_to_i420_planes, to_u8
from services.video.visemes import MouthShape, MouthTracker, TrackerState

DESIGN = 512.0
CENTER = 256.0
# Bump when the rendered pictures change (drawing, idle motion): encoded idle loops are keyed by it.
LOOK_VERSION = "drawn-look-2"

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

Color = tuple[float, float, float]


@dataclass(frozen=True)
class Style:
    """The look of one drawn avatar."""

    name: str
    description: str
    background_top: Color
    background_bottom: Color
    skin: Color
    skin_shadow: Color
    blush: Color
    hair: Color
    hair_shadow: Color
    hair_highlight: Color
    iris: Color
    shirt: Color
    shirt_shadow: Color
    lips: Color
    lips_upper: Color


STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            name="drawn",
            description="Ada: a friendly drawn face with an auburn bob (CPU, real time)",
            background_top=(178, 212, 232),
            background_bottom=(112, 152, 190),
            skin=(246, 208, 178),
            skin_shadow=(222, 170, 140),
            blush=(240, 140, 140),
            hair=(140, 70, 40),
            hair_shadow=(105, 48, 28),
            hair_highlight=(190, 110, 70),
            iris=(70, 120, 90),
            shirt=(40, 150, 150),
            shirt_shadow=(28, 112, 115),
            lips=(208, 96, 102),
            lips_upper=(186, 80, 90),
        ),
        Style(
            name="drawn-kai",
            description="Kai: a drawn face with dark hair and a plum sweater (CPU, real time)",
            background_top=(226, 214, 190),
            background_bottom=(170, 150, 130),
            skin=(176, 122, 88),
            skin_shadow=(146, 96, 68),
            blush=(190, 90, 80),
            hair=(38, 30, 32),
            hair_shadow=(20, 16, 18),
            hair_highlight=(80, 66, 66),
            iris=(80, 52, 32),
            shirt=(110, 60, 120),
            shirt_shadow=(82, 42, 92),
            lips=(160, 80, 76),
            lips_upper=(136, 66, 64),
        ),
    )
}
DEFAULT_AVATAR = "drawn"


def _scale(width: int, height: int) -> float:
    return min(width, height) / DESIGN


def max_head_shift(width: int, height: int) -> int:
    """The largest head offset in pixels (each axis) the idle and speaking motion can reach."""
    return max(1, round(1.6 * _scale(width, height)))


def _pixel_box(design_box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    s = _scale(width, height)
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


def mouth_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in pixels, even-aligned: the region that contains the mouth at every shape and head position.
    Outside it nothing changes when the mouth moves."""
    return _pixel_box(_MOUTH_DESIGN_BOX, width, height)


def eye_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in pixels, even-aligned: the region that contains both eyes (blinks, glances) at every
    head position."""
    return _pixel_box(_EYES_DESIGN_BOX, width, height)


# --------------------------------------------------------------------------------------------------------------------
# Drawing: anti-aliased implicit shapes on a float RGB canvas.


def _ellipse_d(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance (design units) to an ellipse: exact on the outline, good enough nearby."""
    u = (x - cx) / rx
    v = (y - cy) / ry
    f = u * u + v * v - 1.0
    grad = 2.0 * np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return f / np.maximum(grad, 1e-3)


def _circle_d(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


class _Painter:
    """Paints on `canvas` (float32 H x W x 3). Design point (x, y) sits at canvas pixel (ox + (x - 256) * s,
    oy + (y - 256) * s); shapes are given as signed-distance or implicit functions of design coordinates."""

    def __init__(self, canvas: np.ndarray, ox: float, oy: float, scale: float) -> None:
        self.canvas = canvas
        self.ox = ox
        self.oy = oy
        self.s = scale

    def window(self, box: tuple[float, float, float, float]):
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

    def paint(
        self,
        box: tuple[float, float, float, float],
        coverage: Callable[[np.ndarray, np.ndarray], np.ndarray],
        color: Color,
        alpha: float = 1.0,
    ) -> None:
        window = self.window(box)
        if window is None:
            return
        sl, x, y = window
        region = self.canvas[sl]
        cov = np.broadcast_to(coverage(x, y), region.shape[:2]).astype(np.float32, copy=False)
        if alpha != 1.0:
            cov = cov * alpha
        region += (np.asarray(color, dtype=np.float32) - region) * cov[..., None]


# --------------------------------------------------------------------------------------------------------------------
# Previews.


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an RGB uint8 image (no imaging library needed): for previews."""
    height, width = rgb.shape[:2]
    raw = b"".join(b"\x00" + np.ascontiguousarray(rgb[row], dtype=np.uint8).tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------------------------------
# The static picture.


def _draw_static(p: _Painter, style: Style, height_design: float, width_design: float) -> None:
    """Background, body, hair, face, brows and nose: everything that moves only with the whole head. Eyes and mouth
    are left out (drawn per frame); the eye crease and lower-lid shading stay here."""
    canvas = p.canvas
    h = canvas.shape[0]
    rows = (np.arange(h, dtype=np.float32) + 0.5 - p.oy) / p.s + CENTER
    t = np.clip(rows / DESIGN, 0.0, 1.0)[:, None, None]
    top = np.asarray(style.background_top, dtype=np.float32)
    bottom = np.asarray(style.background_bottom, dtype=np.float32)
    canvas[:] = top + (bottom - top) * t
    half_w = width_design / 2 + 8
    half_h = height_design / 2 + 8
    full = (CENTER - half_w, CENTER - half_h, CENTER + half_w, CENTER + half_h)
    # A soft light behind the head.
    p.paint(
        full,
        lambda x, y: np.exp(-(((x - CENTER) / 210.0) ** 2 + ((y - 230.0) / 230.0) ** 2)) * 0.35,
        (250, 250, 245),
    )

    skin, shadow = style.skin, style.skin_shadow
    # Back hair: a rounded bob that frames the face down to the jaw.
    p.paint((90, 60, 422, 366), lambda x, y: p.cov(_ellipse_d(x, y, CENTER, 220.0, 160.0, 142.0)), style.hair)
    p.paint(
        (90, 250, 422, 366),
        lambda x, y: p.cov(_ellipse_d(x, y, CENTER, 300.0, 118.0, 64.0), 30.0),
        style.hair_shadow,
        0.5,
    )

    # Body and neck.
    p.paint((-60, 400, 572, 640), lambda x, y: p.cov(_ellipse_d(x, y, CENTER, 585.0, 265.0, 165.0)), style.shirt)
    p.paint(
        (-60, 400, 572, 640),
        lambda x, y: (
            np.clip((np.abs(x - CENTER) - 120.0) / 140.0, 0, 1) * p.cov(_ellipse_d(x, y, CENTER, 585.0, 265.0, 165.0))
        ),
        style.shirt_shadow,
        0.6,
    )

    def neck(x, y):
        sides = np.abs(x - CENTER) - 44.0 - np.clip((y - 400.0) * 0.2, 0, None)
        return p.cov(np.maximum(sides, np.maximum(300.0 - y, y - 436.0)))

    p.paint((190, 300, 322, 452), neck, shadow)
    p.paint((200, 400, 312, 460), lambda x, y: p.cov(_ellipse_d(x, y, CENTER, 428.0, 50.0, 26.0)), shadow)
    # Neckline trim.
    p.paint(
        (190, 400, 322, 470),
        lambda x, y: p.cov(np.abs(_ellipse_d(x, y, CENTER, 428.0, 52.0, 28.0)) - 3.0) * (y > 426.0),
        style.shirt_shadow,
    )
    # Shadow under the chin.
    p.paint(
        (190, 350, 322, 420),
        lambda x, y: p.cov(_ellipse_d(x, y, CENTER, 372.0, 62.0, 30.0), 14.0),
        style.hair_shadow,
        0.18,
    )

    # Face: an egg, narrower at the jaw.
    def face_f(x, y):
        v = (y - 232.0) / 156.0
        taper = 1.0 - 0.2 * np.clip(v, 0, None) ** 2
        u = (x - CENTER) / (126.0 * taper)
        return u * u + v * v - 1.0

    p.paint(
        (120, 70, 392, 395), lambda x, y: p.cov_implicit(np.broadcast_to(face_f(x, y), np.broadcast(x, y).shape)), skin
    )
    # Soft shading towards the face's edge and the lower cheeks.
    p.paint(
        (120, 70, 392, 395),
        lambda x, y: (
            np.clip((face_f(x, y) + 0.45) / 0.45, 0, 1)
            * p.cov_implicit(np.broadcast_to(face_f(x, y), np.broadcast(x, y).shape))
        ),
        shadow,
        0.45,
    )
    # Blush.
    for side in (-1.0, 1.0):
        cx = CENTER + side * 78.0
        p.paint(
            (cx - 50, 270, cx + 50, 370),
            lambda x, y, cx=cx: np.exp(-(((x - cx) / 24.0) ** 2 + ((y - 316.0) / 16.0) ** 2)),
            style.blush,
            0.28,
        )

    # Front hair: a side-swept fringe over the forehead.
    def fringe(x, y):
        line = 146.0 + 0.0032 * (x - 318.0) ** 2 + 4.0 * np.sin((x - 150.0) / 20.0) * np.clip((320.0 - x) / 80.0, 0, 1)
        cap = _ellipse_d(x, y, CENTER, 206.0, 148.0, 142.0)
        return p.cov(np.maximum(cap, (y - line) * 0.8))

    p.paint((100, 56, 412, 260), fringe, style.hair)
    # Strands and a shine.
    for offset, alpha in ((-40.0, 0.5), (10.0, 0.45), (55.0, 0.4)):

        def strand(x, y, offset=offset):
            line = 110.0 + offset * 0.4 + 0.004 * (x - 300.0 - offset) ** 2
            band = np.abs(y - line) - 1.3
            inside = p.cov(
                np.maximum(_ellipse_d(x, y, CENTER, 206.0, 144.0, 138.0), y - 146.0 - 0.0032 * (x - 318.0) ** 2)
            )
            return p.cov(band) * inside * (np.abs(x - 240.0 - offset) < 70.0)

        p.paint((110, 60, 400, 240), strand, style.hair_shadow, alpha)
    p.paint(
        (150, 60, 330, 140),
        lambda x, y: (
            p.cov(np.abs(_ellipse_d(x, y, 250.0, 200.0, 112.0, 104.0)) - 5.0, 3.0)
            * np.clip((300.0 - x) / 60.0, 0, 1)
            * np.clip((x - 170.0) / 40.0, 0, 1)
        ),
        style.hair_highlight,
        0.55,
    )

    # Brows.
    for side in (-1.0, 1.0):
        cx = CENTER + side * EYE_DX

        def brow(x, y, cx=cx, side=side):
            t = (x - cx) / 27.0
            line = 222.0 - 7.0 * (1.0 - t * t) + side * 2.0 * t
            thickness = 6.0 * np.clip(1.0 - t**4, 0.0, 1.0) + 0.5
            return p.cov(np.abs(y - line) - thickness / 2) * (np.abs(t) < 1.0)

        p.paint((cx - 30, 205, cx + 30, 232), brow, style.hair_shadow)
        # Eye crease and a soft socket shadow (the eyes themselves are drawn per frame).
        p.paint(
            (cx - 30, EYE_Y - 34, cx + 30, EYE_Y + 6),
            lambda x, y, cx=cx: (
                p.cov(np.abs(_ellipse_d(x, y, cx, EYE_Y + 1.0, EYE_RX + 3.0, EYE_RY + 6.0)) - 0.8)
                * np.clip((EYE_Y - 16.0 - y) / 6.0, 0, 1)
            ),
            shadow,
            0.8,
        )

    # Nose: a soft side shadow, the tip, nostrils.
    p.paint((238, 262, 282, 322), lambda x, y: p.cov(_ellipse_d(x, y, 263.0, 298.0, 10.0, 20.0), 8.0), shadow, 0.45)
    p.paint((236, 296, 276, 322), lambda x, y: p.cov(_ellipse_d(x, y, CENTER, 310.0, 15.0, 8.0), 4.0), shadow, 0.55)
    for side in (-1.0, 1.0):
        p.paint(
            (CENTER + side * 8 - 6, 308, CENTER + side * 8 + 6, 318),
            lambda x, y, side=side: p.cov(_ellipse_d(x, y, CENTER + side * 7.5, 313.0, 3.6, 2.2), 1.0),
            style.hair_shadow,
            0.45,
        )
    p.paint(
        (244, 292, 264, 310), lambda x, y: p.cov(_ellipse_d(x, y, 253.0, 302.0, 4.5, 3.5), 3.0), (255, 255, 255), 0.35
    )


@dataclass
class _Base:
    """The static picture of one style at one size, as padded planes ready to crop at any head offset."""

    width: int
    height: int
    scale: float
    margin: int
    rgb: np.ndarray  # padded RGB uint8, for patch backgrounds
    y: np.ndarray  # padded luma
    chroma: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (row parity, col parity) -> (U, V)


_base_lock = threading.Lock()


def _get_base(style_name: str, width: int, height: int) -> _Base:
    """The shared static picture (drawn once per style and size, even when sessions open at the same time)."""
    with _base_lock:
        return _base(style_name, width, height)


@functools.lru_cache(maxsize=8)
def _base(style_name: str, width: int, height: int) -> _Base:
    style = STYLES[style_name]
    scale = _scale(width, height)
    margin = 2 * ((max_head_shift(width, height) + 1) // 2 + 1)
    canvas = np.zeros((height + 2 * margin, width + 2 * margin, 3), dtype=np.float32)
    painter = _Painter(canvas, margin + width / 2, margin + height / 2, scale)
    _draw_static(painter, style, canvas.shape[0] / scale, canvas.shape[1] / scale)
    rgb = to_u8(canvas)
    y, _, _ = rgb_to_i420_planes(rgb)
    chroma = {}
    for py in (0, 1):
        for px in (0, 1):
            h = (rgb.shape[0] - py) // 2 * 2
            w = (rgb.shape[1] - px) // 2 * 2
            _, u, v = rgb_to_i420_planes(rgb[py : py + h, px : px + w])
            chroma[(py, px)] = (u, v)
    for array in (rgb, y, *[plane for pair in chroma.values() for plane in pair]):
        array.setflags(write=False)
    return _Base(width, height, scale, margin, rgb, y, chroma)


# --------------------------------------------------------------------------------------------------------------------
# The moving parts.


def _draw_mouth(p: _Painter, style: Style, shape: MouthShape) -> None:
    """Lips, dark interior, teeth and tongue for a mouth shape, centred on (MOUTH_X, MOUTH_Y)."""
    open_ = min(max(shape.open, 0.0), 1.0)
    width = min(max(shape.width, 0.0), 1.0)
    round_ = min(max(shape.round, 0.0), 1.0)
    hw = MOUTH_HALF_WIDTH * (0.85 + 0.35 * width) * (1.0 - 0.35 * round_)
    gap = MOUTH_MAX_GAP * open_ * (1.0 + 0.15 * round_)
    ry = gap / 2.0
    vc = 0.2 * gap
    rx = hw * (0.86 - 0.3 * round_)
    lift = 3.5 * (1.0 - round_) * (0.6 + 0.6 * width) * (1.0 - 0.6 * open_)
    top_lip = 7.0 + 3.0 * round_
    bottom_lip = 9.0 + 3.0 * round_
    box = (
        MOUTH_X - hw - 6,
        MOUTH_Y - ry - top_lip - lift - 6 + vc,
        MOUTH_X + hw + 6,
        MOUTH_Y + vc + ry + bottom_lip + 6,
    )

    def coords(x, y):
        dx = x - MOUTH_X
        v = (y - MOUTH_Y) + lift * (dx / hw) ** 2
        return dx, v

    def outer_f(x, y):
        dx, v = coords(x, y)
        a = np.abs(dx) / hw
        bow = 1.0 + 0.18 * np.exp(-(((a - 0.3) / 0.16) ** 2)) - 0.22 * np.exp(-((a / 0.1) ** 2))
        ry_out = np.where(v < vc, ry + top_lip * bow, ry + bottom_lip)
        return (dx / hw) ** 2 + ((v - vc) / ry_out) ** 2 - 1.0

    def full(f):
        return lambda x, y: p.cov_implicit(np.broadcast_to(f(x, y), np.broadcast(x, y).shape))

    p.paint(box, full(outer_f), style.lips)
    p.paint(box, lambda x, y: full(outer_f)(x, y) * p.cov(coords(x, y)[1] - vc), style.lips_upper)
    # Shine on the lower lip.
    p.paint(
        box,
        lambda x, y: p.cov(
            _ellipse_d(*coords(x, y), 0.0, vc + ry + bottom_lip * 0.45, hw * 0.35, bottom_lip * 0.22), 2.0
        ),
        (255, 235, 235),
        0.3,
    )
    if ry * p.s > 0.15:

        def interior_f(x, y):
            dx, v = coords(x, y)
            return (dx / rx) ** 2 + ((v - vc) / ry) ** 2 - 1.0

        inside = full(interior_f)
        p.paint(box, inside, (72, 22, 34))
        if ry > 3.0:
            p.paint(
                box,
                lambda x, y: inside(x, y) * p.cov(_ellipse_d(*coords(x, y), 0.0, vc + ry * 0.85, rx * 0.62, ry * 0.5)),
                (196, 88, 100),
            )
        teeth = min(ry * 0.9, 5.5)
        p.paint(
            box,
            lambda x, y: (
                inside(x, y)
                * p.cov(coords(x, y)[1] - (vc - ry + teeth))
                * p.cov(np.abs(coords(x, y)[0]) - rx * 0.8, 2.0)
            ),
            (246, 244, 236),
        )
        if open_ > 0.5:
            p.paint(
                box,
                lambda x, y: (
                    inside(x, y)
                    * p.cov((vc + ry - 3.0) - coords(x, y)[1])
                    * p.cov(np.abs(coords(x, y)[0]) - rx * 0.55, 2.0)
                ),
                (235, 232, 225),
                0.7,
            )
    seam = 1.0 - min(1.0, ry / 1.5)
    if seam > 0:
        p.paint(
            box,
            lambda x, y: p.cov(np.abs(coords(x, y)[1]) - 0.7) * p.cov(np.abs(coords(x, y)[0]) - hw * 0.93, 3.0),
            (122, 44, 56),
            0.85 * seam,
        )
    # Corners.
    for side in (-1.0, 1.0):
        cx = MOUTH_X + side * (hw + 0.5)
        cy = MOUTH_Y - lift + vc
        p.paint(
            (cx - 4, cy - 4, cx + 4, cy + 4),
            lambda x, y, cx=cx, cy=cy: p.cov(_circle_d(x, y, cx, cy, 1.6), 1.5),
            style.skin_shadow,
            0.8,
        )


def _draw_eyes(p: _Painter, style: Style, lid: float, gaze: tuple[float, float]) -> None:
    """Both eyes: whites, iris, pupil, highlights, then the upper lid down to `lid` (0 open .. 1 closed)."""
    gx, gy = gaze
    for side in (-1.0, 1.0):
        cx = CENTER + side * EYE_DX
        cy = EYE_Y
        box = (cx - EYE_RX - 8, cy - EYE_RY - 6, cx + EYE_RX + 8, cy + EYE_RY + 4)

        def sclera_d(x, y, cx=cx, cy=cy):
            return _ellipse_d(x, y, cx, cy, EYE_RX, EYE_RY)

        def in_sclera(x, y, sclera_d=sclera_d):
            return p.cov(sclera_d(x, y))

        p.paint(box, in_sclera, (246, 246, 242))
        p.paint(
            box, lambda x, y, cy=cy, s=in_sclera: s(x, y) * np.clip((cy - y) / EYE_RY, 0, 1), style.skin_shadow, 0.35
        )
        ix, iy = cx + gx, cy + gy + 1.0
        p.paint(
            box,
            lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(_circle_d(x, y, ix, iy, 13.5)),
            tuple(c * 0.55 for c in style.iris),
        )
        p.paint(
            box, lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(_circle_d(x, y, ix, iy, 10.5), 3.0), style.iris
        )
        p.paint(
            box, lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(_circle_d(x, y, ix, iy, 6.2)), (22, 20, 26)
        )
        p.paint(
            box,
            lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(_circle_d(x, y, ix - 4.5, iy - 4.8, 3.2)),
            (255, 255, 255),
            0.95,
        )
        p.paint(
            box,
            lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(_circle_d(x, y, ix + 4.2, iy + 4.0, 1.5)),
            (255, 255, 255),
            0.7,
        )
        # Lower lid line.
        p.paint(
            box,
            lambda x, y, sclera_d=sclera_d, cy=cy: (
                p.cov(np.abs(sclera_d(x, y)) - 0.7) * np.clip((y - cy - 4.0) / 8.0, 0, 1)
            ),
            style.skin_shadow,
            0.7,
        )

        def lid_line(x, cx=cx, cy=cy):
            s = np.sqrt(np.clip(1.0 - ((x - cx) / EYE_RX) ** 2, 0.0, 1.0))
            return cy + EYE_RY * s * (2.0 * lid - 1.0)

        def lid_cover(x, y, sclera_d=sclera_d, lid_line=lid_line):
            return p.cov(sclera_d(x, y) - 1.2) * p.cov(y - lid_line(x))

        p.paint(box, lid_cover, style.skin)
        p.paint(
            box, lambda x, y, lc=lid_cover, ll=lid_line: lc(x, y) * p.cov(ll(x) - 5.0 - y, 6.0), style.skin_shadow, 0.5
        )

        def lashes(x, y, cx=cx, lid_line=lid_line, side=side):
            t = (x - cx) / EYE_RX
            thickness = 2.2 + 1.6 * np.clip(side * t, 0, 1)
            return p.cov(np.abs(y - lid_line(x)) - thickness / 2) * p.cov(np.abs(t) * EYE_RX - EYE_RX + 0.5, 1.5)

        p.paint(box, lashes, (44, 30, 36))


# --------------------------------------------------------------------------------------------------------------------


# LRU of rendered patches (Y, U, V) keyed by their quantized parameters, bounded in bytes.
_PatchCache = Lru[tuple, tuple[np.ndarray, ...]]


def _patch_bytes(planes: tuple[np.ndarray, ...]) -> int:
    return sum(plane.nbytes for plane in planes)


RESTING_LID = 0.14


@dataclass(frozen=True)
class _DrawnState:
    tracker: TrackerState


class DrawnRenderer(FrameByFrameRenderer):
    """One session's drawn avatar: its mouth tracker, and the avatar's idle loop (a function of the loop phase)."""

    def __init__(
        self, style: Style, width: int, height: int, fps: int, sample_rate_hz: int, loop: IdleLoop, seed: int
    ) -> None:
        super().__init__(width, height, fps)
        self.style = style
        self.sample_rate_hz = sample_rate_hz
        self.base = _get_base(style.name, width, height)
        self.tracker = MouthTracker(fps)
        self.loop = loop
        self.schedule = IdleSchedule(seed, loop.frames, fps)
        self.limit = max_head_shift(width, height)
        self.mouth_box = mouth_box(width, height)
        self.eye_box = eye_box(width, height)
        patch_bytes = 4 * 1024 * 1024
        self._mouths: _PatchCache = Lru(max_weight=patch_bytes, weigh=_patch_bytes)
        self._eyes: _PatchCache = Lru(max_weight=patch_bytes, weigh=_patch_bytes)

    @property
    def settle_frames(self) -> int:
        return self.tracker.settle_frames

    def snapshot(self) -> _DrawnState:
        return _DrawnState(self.tracker.state)

    def restore(self, state: _DrawnState) -> None:
        self.tracker.state = state.tracker

    def render_frame(self, drive: Drive) -> bytes:
        shape = self.tracker.step(drive.frame_index, drive.pcm, drive.phonemes)
        phase = self.loop.phase(drive.frame_index)
        hx, hy = self.schedule.sway(phase, self.limit, self.tracker.state.energy, drive.frame_index)
        lid = RESTING_LID + (1.0 - RESTING_LID) * self.schedule.blink(phase)
        gaze = self.schedule.gaze(phase)
        return self.compose(shape, lid, gaze, hx, hy)

    def compose(self, shape: MouthShape, lid: float, gaze: int, hx: float, hy: float) -> bytes:
        """The frame for explicit animation parameters (also used by previews and benchmarks).

        The picture moves by whole pixels (round(hx), round(hy)); the mouth is drawn at the exact offset (to a
        quarter pixel), so the lips glide instead of jumping a pixel at a time while the head sways."""
        dx, dy = round(hx), round(hy)
        fx, fy = round((hx - dx) * 4), round((hy - dy) * 4)
        base = self.base
        w, h = self.width, self.height
        ox = base.margin - dx
        oy = base.margin - dy
        out = np.empty(i420_size(w, h), dtype=np.uint8)
        y_plane, u_plane, v_plane = i420_planes(out, w, h)
        np.copyto(y_plane, base.y[oy : oy + h, ox : ox + w])
        u_src, v_src = base.chroma[(oy % 2, ox % 2)]
        np.copyto(u_plane, u_src[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2])
        np.copyto(v_plane, v_src[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2])

        mouth_q = (round(shape.open * 48), round(shape.width * 24), round(shape.round * 24))
        quantized = MouthShape(mouth_q[0] / 48, mouth_q[1] / 24, mouth_q[2] / 24)
        mouth = self._patch(
            self._mouths,
            ("mouth", *mouth_q, fx, fy),
            self.mouth_box,
            dx,
            dy,
            lambda p: _draw_mouth(p, self.style, quantized),
            (fx / 4, fy / 4),
        )
        lid_q = round(lid * 16)
        eyes = self._patch(
            self._eyes,
            ("eyes", lid_q, gaze),
            self.eye_box,
            dx,
            dy,
            lambda p: _draw_eyes(p, self.style, lid_q / 16, GAZES[gaze]),
        )
        for (x0, y0, x1, y1), (py, pu, pv) in ((self.mouth_box, mouth), (self.eye_box, eyes)):
            y_plane[y0:y1, x0:x1] = py
            u_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = pu
            v_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = pv
        return out.tobytes()

    def _patch(
        self,
        cache: _PatchCache,
        key: tuple,
        box: tuple[int, int, int, int],
        dx: int,
        dy: int,
        draw: Callable[[_Painter], None],
        sub: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (Y, U, V) planes of `box` with `draw` applied (moved by `sub` pixels), at head offset (dx, dy). The
        drawing is made once per key on the padded base (so every head offset is a crop of it); the planes are
        cached per offset."""
        planes = cache.get((*key, dx, dy))
        if planes is not None:
            return planes
        base = self.base
        x0, y0, x1, y1 = box
        drawn = cache.get(key)
        if drawn is None:
            margin = base.margin
            canvas = base.rgb[y0 : y1 + 2 * margin, x0 : x1 + 2 * margin].astype(np.float32)
            origin_x = margin + self.width / 2 - x0 + sub[0]
            origin_y = margin + self.height / 2 - y0 + sub[1]
            draw(_Painter(canvas, origin_x, origin_y, base.scale))
            drawn = (to_u8(canvas),)
            cache.put(key, drawn)
        ox = base.margin - dx
        oy = base.margin - dy
        planes = rgb_to_i420_planes(drawn[0][oy : oy + y1 - y0, ox : ox + x1 - x0])
        cache.put((*key, dx, dy), planes)
        return planes


class DrawnBackend(RendererBackend):
    """The drawn avatars: CPU only, a few milliseconds a frame."""

    name = "drawn"

    def avatars(self) -> list[AvatarInfo]:
        return [AvatarInfo(style.name, style.description, self.name) for style in STYLES.values()]

    def open(
        self, avatar: str, width: int, height: int, fps: int, sample_rate_hz: int, loop: IdleLoop
    ) -> AvatarRenderer:
        if avatar not in STYLES:
            raise KeyError(avatar)
        return DrawnRenderer(STYLES[avatar], width, height, fps, sample_rate_hz, loop, avatar_seed(avatar))

    def loop_key(self, avatar: str) -> str:
        return f"{self.name}/{avatar}/{LOOK_VERSION}"


def warm_up(width: int, height: int, avatar: str = DEFAULT_AVATAR) -> None:
    """Draws the static picture for a size ahead of the first session (optional)."""
    _get_base(avatar, width, height)
