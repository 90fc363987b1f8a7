"""The drawn avatar's moving parts: the mouth for a mouth shape, and the eyes for a lid closure and a gaze.

Why apart: these are the only parts drawn per frame (as small patches the renderer caches by their quantized
parameters), so this is where lip sync and blinks look right or wrong. Each function paints over a patch of the
static picture; positions come from `drawn_geometry`, colours from the `Style`.
"""

from __future__ import annotations

import numpy as np

from services.video.drawn_geometry import (
    CENTER,
    EYE_DX,
    EYE_RX,
    EYE_RY,
    EYE_Y,
    MOUTH_HALF_WIDTH,
    MOUTH_MAX_GAP,
    MOUTH_X,
    MOUTH_Y,
)
from services.video.drawn_painter import Painter, circle_d, ellipse_d
from services.video.drawn_style import Style
from services.video.visemes import MouthShape


def draw_mouth(p: Painter, style: Style, shape: MouthShape) -> None:
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
            ellipse_d(*coords(x, y), 0.0, vc + ry + bottom_lip * 0.45, hw * 0.35, bottom_lip * 0.22), 2.0
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
                lambda x, y: inside(x, y) * p.cov(ellipse_d(*coords(x, y), 0.0, vc + ry * 0.85, rx * 0.62, ry * 0.5)),
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
            lambda x, y, cx=cx, cy=cy: p.cov(circle_d(x, y, cx, cy, 1.6), 1.5),
            style.skin_shadow,
            0.8,
        )


def draw_eyes(p: Painter, style: Style, lid: float, gaze: tuple[float, float]) -> None:
    """Both eyes: whites, iris, pupil, highlights, then the upper lid down to `lid` (0 open .. 1 closed)."""
    gx, gy = gaze
    for side in (-1.0, 1.0):
        cx = CENTER + side * EYE_DX
        cy = EYE_Y
        box = (cx - EYE_RX - 8, cy - EYE_RY - 6, cx + EYE_RX + 8, cy + EYE_RY + 4)

        def sclera_d(x, y, cx=cx, cy=cy):
            return ellipse_d(x, y, cx, cy, EYE_RX, EYE_RY)

        def in_sclera(x, y, sclera_d=sclera_d):
            return p.cov(sclera_d(x, y))

        p.paint(box, in_sclera, (246, 246, 242))
        p.paint(
            box, lambda x, y, cy=cy, s=in_sclera: s(x, y) * np.clip((cy - y) / EYE_RY, 0, 1), style.skin_shadow, 0.35
        )
        ix, iy = cx + gx, cy + gy + 1.0
        p.paint(
            box,
            lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(circle_d(x, y, ix, iy, 13.5)),
            tuple(c * 0.55 for c in style.iris),
        )
        p.paint(
            box, lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(circle_d(x, y, ix, iy, 10.5), 3.0), style.iris
        )
        p.paint(box, lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(circle_d(x, y, ix, iy, 6.2)), (22, 20, 26))
        p.paint(
            box,
            lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(circle_d(x, y, ix - 4.5, iy - 4.8, 3.2)),
            (255, 255, 255),
            0.95,
        )
        p.paint(
            box,
            lambda x, y, s=in_sclera, ix=ix, iy=iy: s(x, y) * p.cov(circle_d(x, y, ix + 4.2, iy + 4.0, 1.5)),
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
