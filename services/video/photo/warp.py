"""One frame of a photo avatar: a backward warp of the portrait for a mouth shape, eyelids and head pose, plus
the mouth's interior where the lips part.

The warp is a backward map (for each output pixel, where to sample the photo), built in three layers:
head and body (a small rotation and shift that fades out down the neck; breathing moves the shoulders), then, in
the face frame, the mouth and jaw (lips part along the seam, the jaw drops and the chin with it, the corners spread
or round) and the eyelids (the upper lid slides down over the eye and the lid skin above it stretches). The mouth
and eyelid fields are written as explicit forward displacements that are smooth away from the lip seam, and
inverted per pixel with a few fixed-point steps (they are contractions: displacement slopes stay below 1). A single
`cv2.remap` then resamples the photo; only the face's small boxes pay for the face warps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.video.photo.rig import EyeRig, FaceRig, MouthRig
from services.video.visemes import MouthShape

MAX_GAP = 0.7  # inner-lip gap at fully open, in mouth half-widths
UPPER_LIP_SHARE = 0.2  # share of the gap from the upper lip rising
CHIN_DROP = 0.6  # chin drop per unit of gap
SPREAD = 0.13  # corner movement at full spread, in mouth half-widths
ROUNDING = 0.24  # corner movement inwards at full rounding
INVERSE_STEPS = 4

CAVITY = np.array([38.0, 15.0, 17.0], dtype=np.float32)
TONGUE = np.array([122.0, 56.0, 60.0], dtype=np.float32)
TEETH = np.array([232.0, 226.0, 214.0], dtype=np.float32)


@dataclass(frozen=True)
class Pose:
    """What one frame shows: mouth shape, eyelid closure (0 open .. 1 closed), head pose and breathing."""

    mouth: MouthShape
    blink: float = 0.0
    head_dx: float = 0.0
    head_dy: float = 0.0
    head_roll: float = 0.0  # radians
    breath_dy: float = 0.0


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class PhotoWarp:
    """Per-size precomputation for one rig: pixel grids and the row weights of the head motion."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        h, w = rig.height, rig.width
        self.xs = np.tile(np.arange(w, dtype=np.float32), (h, 1))
        self.ys = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
        mouth = rig.mouth
        chin_y = float(rig.to_image(np.float32(0), np.float32(mouth.chin_v), mouth.origin)[1])
        # The head moves rigidly down to the chin, the neck blends, the shoulders follow the breath only.
        fade = _smoothstep((np.arange(h, dtype=np.float32) - chin_y) / max(1.0, 0.6 * rig.face_width))
        self.head_weight = (1.0 - fade)[:, None].astype(np.float32)
        self.body_weight = fade[:, None].astype(np.float32)

    def render(self, pose: Pose) -> np.ndarray:
        """The frame as RGB uint8."""
        map_x, map_y = self._head_map(pose)
        cavity = self._mouth(map_x, map_y, pose.mouth)
        for eye in self.rig.eyes:
            if pose.blink > 0.02:
                self._eyelid(map_x, map_y, eye, pose.blink)
        frame = cv2.remap(self.rig.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if cavity is not None:
            (x0, y0, x1, y1), alpha, color = cavity
            region = frame[y0:y1, x0:x1].astype(np.float32)
            region += (color - region) * alpha[..., None]
            frame[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        return frame

    def _head_map(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """Backward map of the head (rotation about the neck pivot and shift) and the breathing body.

        A head pixel's forward displacement is the shift plus a small rotation about the pivot (inverted to first
        order): its x part depends only on the row and its y part only on the column, so the maps are sums of
        row and column vectors."""
        px, py = self.rig.pivot
        theta = np.float32(pose.head_roll)
        rows = self.ys[:, :1]
        cols = self.xs[:1, :]
        hx = np.float32(pose.head_dx) - theta * (rows - np.float32(py))
        hy = np.float32(pose.head_dy) + theta * (cols - np.float32(px))
        map_x = self.xs - self.head_weight * hx
        map_y = (self.ys - self.body_weight * np.float32(pose.breath_dy)) - self.head_weight * hy
        return map_x, map_y

    # ----------------------------------------------------------------------------------------------------------------

    def _mouth(self, map_x: np.ndarray, map_y: np.ndarray, shape: MouthShape):
        """Applies the mouth and jaw warp inside the mouth box (in place); returns the interior to paint, if open."""
        rig = self.rig
        mouth: MouthRig = rig.mouth
        open_ = float(np.clip(shape.open, 0.0, 1.0))
        spread = float(np.clip(shape.width, 0.0, 1.0)) - 0.5
        round_ = float(np.clip(shape.round, 0.0, 1.0))
        half_w = mouth.half_width
        corner_shift = half_w * (SPREAD * 2.0 * spread - ROUNDING * round_)
        gap_max = MAX_GAP * half_w * open_
        source_gap_mid = float(mouth.lower_inner(0.0) - mouth.seam(0.0))
        if gap_max < 0.05 and abs(corner_shift) < 0.05 and source_gap_mid < 0.5:
            return None
        x0, y0, x1, y1 = mouth.box
        mx = map_x[y0:y1, x0:x1]
        my = map_y[y0:y1, x0:x1]
        u, v = rig.to_face(mx, my, mouth.origin)

        # Horizontal: corners spread (or round inwards), fading out beyond the corners and away from the lips.
        if abs(corner_shift) > 0.01:

            def spread_field(uu: np.ndarray) -> np.ndarray:
                beyond = np.maximum(np.abs(uu) - half_w, 0.0) / (0.7 * half_w)
                return corner_shift * np.clip(uu / half_w, -1.0, 1.0) * np.exp(-beyond * beyond) * vertical

            vertical = np.exp(-((v / (0.9 * half_w)) ** 2))
            u_src = u - spread_field(u)
            u_src = u - spread_field(u_src)
        else:
            u_src = u

        # Vertical, per source column: where the lips are in the photo and where they go.
        across = np.clip(1.0 - (u_src / half_w) ** 2, 0.0, 1.0)
        gap = gap_max * across ** (0.7 - 0.35 * round_)
        seam = mouth.seam(u_src)
        lower_src = mouth.lower_inner(u_src)
        upper_dst = seam - UPPER_LIP_SHARE * gap
        lower_dst = upper_dst + gap
        jaw = CHIN_DROP * gap_max * np.exp(-((u_src / (0.9 * mouth.jaw_half_width)) ** 4))
        lower_shift = lower_dst - lower_src
        chin_v = np.float32(mouth.chin_v)
        neck = max(4.0, mouth.chin_v)

        # Below the lower lip: the lip's shift blends into the jaw's drop at the chin and fades down the neck.
        def drop(vv: np.ndarray) -> np.ndarray:
            s = _smoothstep((vv - lower_src) / np.maximum(chin_v - lower_src, 1.0))
            fade = 1.0 - _smoothstep((vv - chin_v) / neck)
            return (lower_shift * (1.0 - s) + jaw * s) * fade

        below_v = v - drop(v)
        for _ in range(INVERSE_STEPS - 1):
            below_v = v - drop(below_v)
        below_v = np.maximum(below_v, lower_src)

        # Above the seam: the upper lip rises a little, fading out at the nose.
        rise = UPPER_LIP_SHARE * gap
        nose_v = np.float32(mouth.nose_v)

        def lift(vv: np.ndarray) -> np.ndarray:
            return rise * _smoothstep((vv - nose_v) / np.maximum(seam - nose_v, 1.0))

        above_v = v + lift(v)
        for _ in range(INVERSE_STEPS - 1):
            above_v = v + lift(above_v)
        above_v = np.minimum(above_v, seam)

        # Between the lips: the photo's own interior (teeth) hangs from the upper lip at its natural size.
        inside_v = seam + (v - upper_dst)
        v_src = np.where(v <= upper_dst, above_v, np.where(v >= lower_dst, below_v, np.minimum(inside_v, lower_src)))
        sx, sy = rig.to_image(u_src, v_src, mouth.origin)
        mx[...] = sx
        my[...] = sy

        if gap_max < 0.3:
            return None
        # Paint the interior where the opening is deeper than the photo's own (anti-aliased, 1 px edges).
        source_gap = lower_src - seam
        depth = v - upper_dst
        inside = np.clip(depth + 0.5, 0.0, 1.0) * np.clip(lower_dst - v + 0.5, 0.0, 1.0) * (np.abs(u_src) < half_w)
        # Thin slits (towards the corners) stay partly lip-coloured: a 1-px black line reads as a crack, not a mouth.
        painted = inside * np.clip(depth - source_gap + 0.5, 0.0, 1.0) * np.clip(gap / 4.0, 0.0, 1.0)
        if not painted.any():
            return None
        t = np.clip(depth / np.maximum(gap, 1.0), 0.0, 1.0)
        color = CAVITY + (TONGUE - CAVITY) * (np.clip((t - 0.55) / 0.45, 0.0, 1.0) * min(1.0, open_ * 1.4))[..., None]
        # Upper teeth just under the lip when the photo shows none, shaded towards the corners.
        teeth_h = np.minimum(0.42 * gap, 0.16 * half_w)
        teeth = _smoothstep((teeth_h - depth) / 1.5 + 0.5) * (source_gap < 1.0) * across**0.35
        color = color + (TEETH * (0.75 + 0.25 * across[..., None]) - color) * teeth[..., None]
        return (x0, y0, x1, y1), painted.astype(np.float32), color.astype(np.float32)

    # ----------------------------------------------------------------------------------------------------------------

    def _eyelid(self, map_x: np.ndarray, map_y: np.ndarray, eye: EyeRig, blink: float) -> None:
        """The upper lid slides down to the lower lid; the skin above it stretches (in place, inside the eye box)."""
        rig = self.rig
        x0, y0, x1, y1 = eye.box
        mx = map_x[y0:y1, x0:x1]
        my = map_y[y0:y1, x0:x1]
        u, v = rig.to_face(mx, my, eye.center)
        upper = eye.upper(u)
        lid = upper + np.float32(min(blink, 1.0)) * (eye.lower(u) - upper)
        start = eye.brow(u)
        stretch = (upper - start) / np.maximum(lid - start, 1e-3)
        inside = (v > start) & (v < lid) & (np.abs(u) < eye.half_width)
        v_src = np.where(inside, start + (v - start) * stretch, v)
        sx, sy = rig.to_image(u, v_src, eye.center)
        mx[...] = sx
        my[...] = sy
