"""The drawn avatar's static picture: background, body, hair, face, brows and nose, drawn once per (style, size).

Why apart: this is most of the drawing and none of the animation. Everything here moves only with the whole head, so
it is drawn once with the painter on a canvas padded by the largest head shift and kept as read-only RGB, Y and
chroma planes (`Base`, one chroma pair per row and column parity of the crop). A frame then starts as a crop of
these planes at the head's integer offset; the eyes and mouth (`drawn_parts`) are drawn over it per frame.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

from services.video.drawn_geometry import CENTER, DESIGN, EYE_DX, EYE_RX, EYE_RY, EYE_Y, design_scale, max_head_shift
from services.video.drawn_painter import Painter, ellipse_d
from services.video.drawn_style import STYLES, Style
from services.video.pixels import rgb_to_i420_planes, to_u8


def draw_static(p: Painter, style: Style, height_design: float, width_design: float) -> None:
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
    p.paint((90, 60, 422, 366), lambda x, y: p.cov(ellipse_d(x, y, CENTER, 220.0, 160.0, 142.0)), style.hair)
    p.paint(
        (90, 250, 422, 366),
        lambda x, y: p.cov(ellipse_d(x, y, CENTER, 300.0, 118.0, 64.0), 30.0),
        style.hair_shadow,
        0.5,
    )

    # Body and neck.
    p.paint((-60, 400, 572, 640), lambda x, y: p.cov(ellipse_d(x, y, CENTER, 585.0, 265.0, 165.0)), style.shirt)
    p.paint(
        (-60, 400, 572, 640),
        lambda x, y: (
            np.clip((np.abs(x - CENTER) - 120.0) / 140.0, 0, 1) * p.cov(ellipse_d(x, y, CENTER, 585.0, 265.0, 165.0))
        ),
        style.shirt_shadow,
        0.6,
    )

    def neck(x, y):
        sides = np.abs(x - CENTER) - 44.0 - np.clip((y - 400.0) * 0.2, 0, None)
        return p.cov(np.maximum(sides, np.maximum(300.0 - y, y - 436.0)))

    p.paint((190, 300, 322, 452), neck, shadow)
    p.paint((200, 400, 312, 460), lambda x, y: p.cov(ellipse_d(x, y, CENTER, 428.0, 50.0, 26.0)), shadow)
    # Neckline trim.
    p.paint(
        (190, 400, 322, 470),
        lambda x, y: p.cov(np.abs(ellipse_d(x, y, CENTER, 428.0, 52.0, 28.0)) - 3.0) * (y > 426.0),
        style.shirt_shadow,
    )
    # Shadow under the chin.
    p.paint(
        (190, 350, 322, 420),
        lambda x, y: p.cov(ellipse_d(x, y, CENTER, 372.0, 62.0, 30.0), 14.0),
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
        cap = ellipse_d(x, y, CENTER, 206.0, 148.0, 142.0)
        return p.cov(np.maximum(cap, (y - line) * 0.8))

    p.paint((100, 56, 412, 260), fringe, style.hair)
    # Strands and a shine.
    for offset, alpha in ((-40.0, 0.5), (10.0, 0.45), (55.0, 0.4)):

        def strand(x, y, offset=offset):
            line = 110.0 + offset * 0.4 + 0.004 * (x - 300.0 - offset) ** 2
            band = np.abs(y - line) - 1.3
            inside = p.cov(
                np.maximum(ellipse_d(x, y, CENTER, 206.0, 144.0, 138.0), y - 146.0 - 0.0032 * (x - 318.0) ** 2)
            )
            return p.cov(band) * inside * (np.abs(x - 240.0 - offset) < 70.0)

        p.paint((110, 60, 400, 240), strand, style.hair_shadow, alpha)
    p.paint(
        (150, 60, 330, 140),
        lambda x, y: (
            p.cov(np.abs(ellipse_d(x, y, 250.0, 200.0, 112.0, 104.0)) - 5.0, 3.0)
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
                p.cov(np.abs(ellipse_d(x, y, cx, EYE_Y + 1.0, EYE_RX + 3.0, EYE_RY + 6.0)) - 0.8)
                * np.clip((EYE_Y - 16.0 - y) / 6.0, 0, 1)
            ),
            shadow,
            0.8,
        )

    # Nose: a soft side shadow, the tip, nostrils.
    p.paint((238, 262, 282, 322), lambda x, y: p.cov(ellipse_d(x, y, 263.0, 298.0, 10.0, 20.0), 8.0), shadow, 0.45)
    p.paint((236, 296, 276, 322), lambda x, y: p.cov(ellipse_d(x, y, CENTER, 310.0, 15.0, 8.0), 4.0), shadow, 0.55)
    for side in (-1.0, 1.0):
        p.paint(
            (CENTER + side * 8 - 6, 308, CENTER + side * 8 + 6, 318),
            lambda x, y, side=side: p.cov(ellipse_d(x, y, CENTER + side * 7.5, 313.0, 3.6, 2.2), 1.0),
            style.hair_shadow,
            0.45,
        )
    p.paint(
        (244, 292, 264, 310), lambda x, y: p.cov(ellipse_d(x, y, 253.0, 302.0, 4.5, 3.5), 3.0), (255, 255, 255), 0.35
    )


@dataclass
class Base:
    """The static picture of one style at one size, as padded planes ready to crop at any head offset."""

    width: int
    height: int
    scale: float
    margin: int
    rgb: np.ndarray  # padded RGB uint8, for patch backgrounds
    y: np.ndarray  # padded luma
    chroma: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (row parity, col parity) -> (U, V)


_base_lock = threading.Lock()


def get_base(style_name: str, width: int, height: int) -> Base:
    """The shared static picture (drawn once per style and size, even when sessions open at the same time)."""
    with _base_lock:
        return _base(style_name, width, height)


@functools.lru_cache(maxsize=8)
def _base(style_name: str, width: int, height: int) -> Base:
    style = STYLES[style_name]
    scale = design_scale(width, height)
    margin = 2 * ((max_head_shift(width, height) + 1) // 2 + 1)
    canvas = np.zeros((height + 2 * margin, width + 2 * margin, 3), dtype=np.float32)
    painter = Painter(canvas, margin + width / 2, margin + height / 2, scale)
    draw_static(painter, style, canvas.shape[0] / scale, canvas.shape[1] / scale)
    rgb = to_u8(canvas)
    y, _, _ = rgb_to_i420_planes(rgb)
    chroma: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for py in (0, 1):
        for px in (0, 1):
            h = (rgb.shape[0] - py) // 2 * 2
            w = (rgb.shape[1] - px) // 2 * 2
            _, u, v = rgb_to_i420_planes(rgb[py : py + h, px : px + w])
            chroma[(py, px)] = (u, v)
    for array in (rgb, y, *[plane for pair in chroma.values() for plane in pair]):
        array.setflags(write=False)
    return Base(width, height, scale, margin, rgb, y, chroma)
