"""One frame of a photo avatar: a backward warp of the portrait for a mouth shape, eyelids and head pose, plus
the mouth's interior where the lips part, straight into I420.

The warp is a backward map (for each output pixel, where to sample the photo), built in three layers:
head and body (a small rotation and shift that fades out down the neck; breathing moves the shoulders), then, in
the face frame, the mouth and jaw (lips part along the seam, the jaw drops and the chin with it, the corners spread
or round) and the eyelids (the upper lid slides down over the eye and the lid skin above it stretches). The mouth
and eyelid fields are written as explicit forward displacements that are smooth away from the lip seam, and
inverted per pixel with a few fixed-point steps (they are contractions: displacement slopes stay below 1).

Cost: the portrait is converted to Y, U and V planes once per rig (chroma at full resolution), so a frame is one
`cv2.remap` of the Y plane with the full map and one each of U and V with the map of every 2x2 block's top-left
pixel (the sample `rgb_to_i420` keeps), written into the output buffer; no RGB frame exists. The maps are built by
compiled loops: the head map over the frame (`frame_kernels`), the mouth only in its box (`kernels`, tables of u for
the lip curves), the eyelids only in their boxes while blinking (`frame_kernels`), and the interior is painted only
where it shows. The same pose always gives the same bytes (the idle loop relies on it).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from services.video.photo.rig import Curve, EyeRig, FaceRig
from services.video.pixels import i420_planes, i420_size, i420_to_rgb, rgb_to_yuv444
from services.video.visemes import MouthShape

MAX_GAP = 0.7  # inner-lip gap at fully open, in mouth half-widths
UPPER_LIP_SHARE = 0.2  # share of the gap from the upper lip rising
CHIN_DROP = 0.6  # chin drop per unit of gap
SPREAD = 0.13  # corner movement at full spread, in mouth half-widths
ROUNDING = 0.24  # corner movement inwards at full rounding
INVERSE_STEPS = 4  # fixed-point steps that invert the mouth's fields (kernels._lift and _drop hard-code them)
TABLE_STEPS_PER_PIXEL = 8  # resolution of the curve tables (the mouth reads the nearest entry)
HEAD_REACH_PX = 6.0  # head motion and rounding margin around boxes, in pixels at 512 (scaled)

# The compiled loops (services.video.photo.kernels: the mouth, where the interior's colours are too;
# services.video.photo.frame_kernels: head map, eyelids, chroma maps, paint), imported with the first PhotoWarp:
# importing numba takes a moment that processes without photo avatars need not spend.
kernels: Any = None
frame_kernels: Any = None


def _import_kernels() -> None:
    global kernels, frame_kernels
    if kernels is None or frame_kernels is None:
        from services.video.photo import frame_kernels as frame_module
        from services.video.photo import kernels as mouth_module

        kernels = mouth_module
        frame_kernels = frame_module


assert UPPER_LIP_SHARE == 0.2, "kernels._SHARE hard-codes the upper lip's share"


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


def _grid(low: float, high: float) -> tuple[np.ndarray, float, float]:
    """A regular grid covering [low, high] for a curve table: (values, origin, inverse step)."""
    steps = TABLE_STEPS_PER_PIXEL
    count = max(2, math.ceil((high - low) * steps) + 2)
    return low + np.arange(count, dtype=np.float64) / steps, low, float(steps)


def _curve(curve: Curve, u: np.ndarray) -> np.ndarray:
    return np.interp(u, curve.u.astype(np.float64), curve.v.astype(np.float64))


@dataclass(frozen=True)
class _Eye:
    box: np.ndarray  # x0, y0, x1, y1
    params: np.ndarray  # centre x, y, axis ux, uy, half width, table origin, inverse step
    curves: np.ndarray  # upper lid, lower lid, stretch start: per table entry


class Frame:
    """One renderer's working memory for `PhotoWarp.render_i420` (maps, tables, the output buffer): a renderer
    owns one, so renderers sharing a `PhotoWarp` can render at the same time."""

    def __init__(self, warp: PhotoWarp) -> None:
        h, w = warp.rig.height, warp.rig.width
        self.map_x = np.empty((h, w), np.float32)
        self.map_y = np.empty((h, w), np.float32)
        self.chroma_x = np.empty((h // 2, w // 2), np.float32)
        self.chroma_y = np.empty((h // 2, w // 2), np.float32)
        self.out = np.empty(i420_size(w, h), np.uint8)
        self.plane_y, self.plane_u, self.plane_v = i420_planes(self.out, w, h)
        x0, y0, x1, y1 = warp.mouth_box
        self.params = warp.mouth_params.copy()
        self.table = np.empty((warp.mouth_rig_table.shape[0], kernels.MOUTH_COLUMNS), np.float32)
        self.bounds = np.zeros(2, np.float64)
        self.rows = np.zeros(kernels.ROW_FIELDS * kernels.ROW_STRIDE, np.float32)
        self.paint = np.zeros((4, y1 - y0, x1 - x0), np.float32)  # the interior's coverage, Y, U, V
        self.painted = np.zeros(4, np.int64)


class PhotoWarp:
    """Per-size precomputation for one rig (shared by every session of the avatar at that size): the portrait's
    Y, U and V planes, the row weights of the head motion and the tables of the mouth and eyelid curves."""

    def __init__(self, rig: FaceRig) -> None:
        _import_kernels()
        self.rig = rig
        h, w = rig.height, rig.width
        if h % 2 or w % 2:
            raise ValueError(f"I420 frames need an even width and height, not {w}x{h}")
        self.xs = np.arange(w, dtype=np.float32)
        self.ys = np.arange(h, dtype=np.float32)
        self.plane_y, self.plane_u, self.plane_v = _yuv444(rig.image)
        mouth = rig.mouth
        chin_y = float(rig.to_image(np.float32(0), np.float32(mouth.chin_v), mouth.origin)[1])
        # The head moves rigidly down to the chin, the neck blends, the shoulders follow the breath only.
        fade = _smoothstep((self.ys - chin_y) / max(1.0, 0.6 * rig.face_width))
        self.head_weight = (1.0 - fade).astype(np.float32)
        self.body_weight = fade.astype(np.float32)
        self.source_gap_mid = float(mouth.lower_inner(0.0) - mouth.seam(0.0))
        self._prepare_mouth()
        self.eyes = tuple(self._prepare_eye(eye) for eye in rig.eyes)
        _load_kernels(self)

    # -- preparation ------------------------------------------------------------------------------------------------
    def _face_extent(self, box: tuple[int, int, int, int], origin: np.ndarray) -> tuple[float, float, float, float]:
        """The (u, v) range of a pixel box in the face frame about `origin`, widened by the head's reach."""
        x0, y0, x1, y1 = box
        xs = np.array([x0, x1, x0, x1], dtype=np.float64)
        ys = np.array([y0, y0, y1, y1], dtype=np.float64)
        u, v = self.rig.to_face(xs, ys, origin)
        reach = HEAD_REACH_PX * min(self.rig.width, self.rig.height) / 512.0 + 2.0
        return float(u.min()) - reach, float(u.max()) + reach, float(v.min()) - reach, float(v.max()) + reach

    def _prepare_mouth(self) -> None:
        rig = self.rig
        mouth = rig.mouth
        half_w = mouth.half_width
        self.mouth_box = np.array(mouth.box, dtype=np.int64)
        u_low, u_high, _, _ = self._face_extent(mouth.box, mouth.origin)
        spread_reach = (SPREAD + ROUNDING) * half_w + 1.0  # u_src may lie this far beyond u
        u, u0, u_inv = _grid(u_low - spread_reach, u_high + spread_reach)
        across = np.clip(1.0 - (u / half_w) ** 2, 0.0, 1.0)
        with np.errstate(divide="ignore"):
            log_across = np.where(across > 0.0, np.log(np.maximum(across, 1e-300)), -np.inf)
        table = np.zeros((len(u), kernels.RIG_COLUMNS), np.float64)
        table[:, kernels.RIG_SEAM] = _curve(mouth.seam, u)
        table[:, kernels.RIG_LOWER] = _curve(mouth.lower_inner, u)
        table[:, kernels.RIG_LOG_ACROSS] = log_across
        table[:, kernels.RIG_JAW] = np.exp(-((u / (0.9 * mouth.jaw_half_width)) ** 4))
        table[:, kernels.RIG_ACROSS] = across
        table[:, kernels.RIG_TEETH] = across**0.35
        self.mouth_rig_table = table
        params = np.zeros(kernels.MOUTH_PARAMS, np.float64)
        params[kernels.P_OX], params[kernels.P_OY] = float(mouth.origin[0]), float(mouth.origin[1])
        params[kernels.P_UX], params[kernels.P_UY] = float(rig.axis_u[0]), float(rig.axis_u[1])
        params[kernels.P_HALF_W] = half_w
        params[kernels.P_CHIN] = mouth.chin_v
        params[kernels.P_NECK] = max(4.0, mouth.chin_v)
        params[kernels.P_NOSE] = mouth.nose_v
        params[kernels.P_TEETH_CAP] = 0.16 * half_w
        params[kernels.P_U0], params[kernels.P_U_INV] = u0, u_inv
        self.mouth_params = params

    def _prepare_eye(self, eye: EyeRig) -> _Eye:
        u_low, u_high, _, _ = self._face_extent(eye.box, eye.center)
        u, u0, u_inv = _grid(max(u_low, -eye.half_width - 2.0), min(u_high, eye.half_width + 2.0))
        curves = np.stack([_curve(eye.upper, u), _curve(eye.lower, u), _curve(eye.brow, u)], axis=1)
        rig = self.rig
        params = np.array(
            [eye.center[0], eye.center[1], rig.axis_u[0], rig.axis_u[1], eye.half_width, u0, u_inv], np.float64
        )
        return _Eye(np.array(eye.box, dtype=np.int64), params, np.ascontiguousarray(curves))

    # -- rendering --------------------------------------------------------------------------------------------------
    def render_i420(self, pose: Pose, frame: Frame | None = None) -> bytes:
        """The frame as I420 bytes (BT.601 limited range, as `rgb_to_i420` writes)."""
        frame = frame or Frame(self)
        self._head_map(pose, frame)
        painted = self._mouth(pose.mouth, frame)
        if pose.blink > 0.02:
            for eye in self.eyes:
                frame_kernels.eyelid_warp(frame.map_x, frame.map_y, eye.box, eye.params, eye.curves, float(pose.blink))
        frame_kernels.chroma_maps(frame.map_x, frame.map_y, frame.chroma_x, frame.chroma_y)
        replicate = cv2.BORDER_REPLICATE
        cv2.remap(self.plane_y, frame.map_x, frame.map_y, cv2.INTER_LINEAR, frame.plane_y, replicate)
        cv2.remap(self.plane_u, frame.chroma_x, frame.chroma_y, cv2.INTER_LINEAR, frame.plane_u, replicate)
        cv2.remap(self.plane_v, frame.chroma_x, frame.chroma_y, cv2.INTER_LINEAR, frame.plane_v, replicate)
        if painted:
            frame_kernels.paint(frame.plane_y, frame.plane_u, frame.plane_v, self.mouth_box, frame.painted, frame.paint)
        return frame.out.tobytes()

    def render(self, pose: Pose) -> np.ndarray:
        """The frame as RGB uint8 (decoded from the I420 the renderer sends)."""
        return i420_to_rgb(self.render_i420(pose), self.rig.width, self.rig.height)

    def _head_map(self, pose: Pose, frame: Frame) -> None:
        """Backward map of the head (rotation about the neck pivot and shift) and the breathing body.

        A head pixel's forward displacement is the shift plus a small rotation about the pivot (inverted to first
        order): its x part depends only on the row and its y part only on the column, so the maps are sums of
        row and column vectors."""
        px, py = self.rig.pivot
        theta = np.float32(pose.head_roll)
        hx = np.float32(pose.head_dx) - theta * (self.ys - np.float32(py))
        hy = np.float32(pose.head_dy) + theta * (self.xs - np.float32(px))
        row_x = self.head_weight * hx
        row_y = self.ys - self.body_weight * np.float32(pose.breath_dy)
        frame_kernels.head_maps(row_x, row_y, self.head_weight, hy, frame.map_x, frame.map_y)

    def _mouth(self, shape: MouthShape, frame: Frame) -> bool:
        """Applies the mouth and jaw warp inside the mouth box (in place); True when there is interior to paint."""
        half_w = self.rig.mouth.half_width
        open_ = min(max(float(shape.open), 0.0), 1.0)
        spread = min(max(float(shape.width), 0.0), 1.0) - 0.5
        round_ = min(max(float(shape.round), 0.0), 1.0)
        corner_shift = half_w * (SPREAD * 2.0 * spread - ROUNDING * round_)
        gap_max = MAX_GAP * half_w * open_
        if gap_max < 0.05 and abs(corner_shift) < 0.05 and self.source_gap_mid < 0.5:
            return False
        params = frame.params
        params[kernels.P_CORNER] = corner_shift
        params[kernels.P_SPREAD_ON] = 1.0 if abs(corner_shift) > 0.01 else 0.0
        params[kernels.P_PAINT_ON] = 1.0 if gap_max >= 0.3 else 0.0
        params[kernels.P_OPEN] = open_
        params[kernels.P_GAP_MAX] = gap_max
        params[kernels.P_JAW_AMP] = CHIN_DROP * gap_max
        # Below the jaw's reach (chin + neck) nothing moves, but for the corners' spread: where it is under 0.005 px.
        mouth = self.rig.mouth
        spread_reach = 0.9 * half_w * math.sqrt(max(0.0, math.log(max(abs(corner_shift), 1e-9) / 0.005)))
        params[kernels.P_FAR] = max(mouth.chin_v + max(4.0, mouth.chin_v), spread_reach)
        kernels.mouth_table(self.mouth_rig_table, gap_max, 0.7 - 0.35 * round_, frame.table, frame.bounds)
        kernels.mouth_warp(
            frame.map_x,
            frame.map_y,
            self.mouth_box,
            params,
            frame.table,
            frame.bounds,
            frame.rows,
            frame.paint,
            frame.painted,
        )
        return gap_max >= 0.3 and frame.painted[3] > frame.painted[1]


_kernels_lock = threading.Lock()
_kernels_loaded = False


def _load_kernels(warp: PhotoWarp) -> None:
    """Compiles (or loads from numba's cache) every kernel once per process, with the argument types rendering uses,
    while a warp is being prepared (slow anyway) rather than on a stream's first blink or first open mouth."""
    global _kernels_loaded
    with _kernels_lock:
        if _kernels_loaded:
            return
        frame = Frame(warp)
        warp.render_i420(Pose(MouthShape(0.8, 0.8, 0.4), blink=1.0), frame)
        frame_kernels.paint(frame.plane_y, frame.plane_u, frame.plane_v, warp.mouth_box, frame.painted, frame.paint)
        _kernels_loaded = True


def _yuv444(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U and V planes of an RGB picture, all at full resolution (services.video.pixels), read-only."""
    planes = rgb_to_yuv444(rgb)
    for plane in planes:
        plane.setflags(write=False)
    return planes[0], planes[1], planes[2]
