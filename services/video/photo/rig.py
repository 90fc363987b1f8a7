"""A portrait prepared for animation at one output size: the framed picture and the face geometry that moves.

Geometry lives in the face frame: `u` along the eye line, `v` perpendicular to it (down the face), both in output
pixels, with the origin between the mouth corners. Lips and eyelids are curves v(u) sampled from the landmarks, so
the warp can evaluate them for every pixel with one `np.interp`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from services.video.photo import landmarks as lm
from services.video.photo.landmarks import Face, FaceLandmarker

FRAMING = 2.8  # output width = this many face widths (head and shoulders)
FACE_CENTER_DROP = 0.22  # the face centre sits this many face widths above the frame centre
CLOSED_GAP = 0.2  # an inner-lip gap below this many mouth half-widths counts as closed lips


@dataclass(frozen=True)
class Curve:
    """v as a piecewise-linear function of u (flat beyond its ends)."""

    u: np.ndarray
    v: np.ndarray

    @staticmethod
    def through(u: np.ndarray, v: np.ndarray) -> Curve:
        order = np.argsort(u)
        su, sv = u[order], v[order]
        keep = np.concatenate([[True], np.diff(su) > 1e-3])
        return Curve(su[keep].astype(np.float32), sv[keep].astype(np.float32))

    def __call__(self, u: np.ndarray | float) -> np.ndarray:
        return np.interp(u, self.u, self.v).astype(np.float32, copy=False)


@dataclass(frozen=True)
class EyeRig:
    """One eye in its own frame (origin at the eye's centre, axes of the face frame)."""

    center: np.ndarray  # output pixels
    half_width: float
    upper: Curve  # upper lid edge
    lower: Curve  # lower lid edge
    brow: Curve  # where the lid skin's stretch starts (below the brow)
    box: tuple[int, int, int, int]  # output-pixel box the blink can change


@dataclass(frozen=True)
class MouthRig:
    """The mouth and jaw in the face frame."""

    origin: np.ndarray  # output pixels: midpoint of the mouth corners
    half_width: float  # W: half the corner-to-corner distance
    seam: Curve  # upper lip's inner edge (where closed lips meet)
    lower_inner: Curve  # lower lip's inner edge in the photo (below `seam` when the photo shows teeth)
    lower_outer: Curve
    nose_v: float  # base of the nose
    chin_v: float
    jaw_half_width: float
    box: tuple[int, int, int, int]  # output-pixel box the mouth and jaw animation can change


@dataclass(frozen=True)
class FaceRig:
    """Everything a renderer needs: the picture (RGB, output size) and the movable parts."""

    image: np.ndarray
    face: Face  # landmarks in output pixels
    axis_u: np.ndarray
    axis_v: np.ndarray
    mouth: MouthRig
    eyes: tuple[EyeRig, ...]
    face_width: float
    pivot: np.ndarray  # where the head turns (below the chin, at the neck)

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]

    def to_face(self, x: np.ndarray, y: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates -> face-frame (u, v) about `origin`."""
        dx, dy = x - float(origin[0]), y - float(origin[1])
        ux, uy = float(self.axis_u[0]), float(self.axis_u[1])
        return dx * ux + dy * uy, dy * ux - dx * uy

    def to_image(self, u: np.ndarray, v: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ux, uy = float(self.axis_u[0]), float(self.axis_u[1])
        return float(origin[0]) + u * ux - v * uy, float(origin[1]) + u * uy + v * ux


def frame_portrait(rgb: np.ndarray, face: Face, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A head-and-shoulders crop of the photo at the output size, and the 2x3 matrix mapping photo pixels to it.

    The crop is as wide as FRAMING face widths (less when the photo is too small), keeps the output's aspect ratio,
    and stays inside the photo."""
    ih, iw = rgb.shape[:2]
    aspect = width / height
    face_width = face.width()
    center = face.xy[list(lm.FACE_OVAL)].mean(axis=0)
    crop_w = FRAMING * face_width
    crop_h = crop_w / aspect
    shrink = min(1.0, iw / crop_w, ih / crop_h)
    crop_w, crop_h = crop_w * shrink, crop_h * shrink
    cx = float(np.clip(center[0], crop_w / 2, iw - crop_w / 2))
    cy = float(np.clip(center[1] + FACE_CENTER_DROP * crop_w, crop_h / 2, ih - crop_h / 2))
    scale = width / crop_w
    matrix = np.array([[scale, 0.0, width / 2 - scale * cx], [0.0, scale, height / 2 - scale * cy]])
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    framed = cv2.warpAffine(rgb, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return framed, matrix


def build_rig(rgb: np.ndarray, face: Face, width: int, height: int, landmarker: FaceLandmarker) -> FaceRig:
    """Frames the photo for the output size and measures the face there (landmarks re-run on the framed picture,
    which is what the viewer sees)."""
    framed, matrix = frame_portrait(rgb, face, width, height)
    moved = Face(
        np.concatenate([face.xy @ matrix[:, :2].T + matrix[:, 2], face.points[:, 2:] * matrix[0, 0]], axis=1),
        face.presence,
    )
    measured = landmarker.track(framed, moved)
    if measured.presence < lm.MIN_FACE_PRESENCE:
        measured = moved
    return rig_from_face(framed, measured)


def rig_from_face(image: np.ndarray, face: Face) -> FaceRig:
    xy = face.xy.astype(np.float64)
    roll = face.roll()
    axis_u = np.array([math.cos(roll), math.sin(roll)])
    axis_v = np.array([-math.sin(roll), math.cos(roll)])
    h, w = image.shape[:2]

    def frame(indices, origin):
        rel = xy[list(indices)] - origin
        return rel @ axis_u, rel @ axis_v

    origin = (xy[lm.MOUTH_RIGHT] + xy[lm.MOUTH_LEFT]) / 2
    corner_u, _ = frame((lm.MOUTH_RIGHT, lm.MOUTH_LEFT), origin)
    half_width = float(abs(corner_u[1] - corner_u[0]) / 2)
    seam = Curve.through(*frame(lm.UPPER_INNER_LIP, origin))
    lower_inner_u, lower_inner_v = frame(lm.LOWER_INNER_LIP, origin)
    lower_inner = Curve.through(lower_inner_u, np.maximum(lower_inner_v, seam(lower_inner_u)))
    if float(lower_inner(0.0) - seam(0.0)) < CLOSED_GAP * half_width:
        # The model reads closed lips as slightly apart: what lies between is lip, not an open mouth.
        lower_inner = seam
    lower_outer = Curve.through(*frame(lm.LOWER_OUTER_LIP, origin))
    _, nose_v = frame((2,), origin)
    _, chin_v = frame((lm.CHIN,), origin)
    oval_u, oval_v = frame(lm.FACE_OVAL, origin)
    near_mouth = (oval_v > -0.5 * half_width) & (oval_v < 0.7 * float(chin_v[0]))
    jaw_half_width = float(np.abs(oval_u[near_mouth]).max()) if near_mouth.any() else 2.0 * half_width
    face_width = face.width()
    chin = float(chin_v[0])
    # The mouth warp reaches from the nose to below the chin (the jaw's drop fades out down the neck).
    reach_u = jaw_half_width * 1.15 + 4
    corners = [
        origin + axis_u * su * reach_u + axis_v * sv
        for su in (-1, 1)
        for sv in (float(nose_v[0]) - 0.3 * half_width, chin + 1.1 * chin + 4)
    ]
    mouth = MouthRig(
        origin=origin,
        half_width=half_width,
        seam=seam,
        lower_inner=lower_inner,
        lower_outer=lower_outer,
        nose_v=float(nose_v[0]),
        chin_v=chin,
        jaw_half_width=jaw_half_width,
        box=_box(np.array(corners), w, h, margin=4),
    )
    eyes = []
    for upper_ids, lower_ids, brow_ids in (
        (lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER, lm.RIGHT_BROW),
        (lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER, lm.LEFT_BROW),
    ):
        contour = xy[list(upper_ids) + list(lower_ids)]
        center = contour.mean(axis=0)
        up_u, up_v = frame(upper_ids, center)
        lo_u, lo_v = frame(lower_ids, center)
        brow_u, brow_v = frame(brow_ids, center)
        half = float((up_u.max() - up_u.min()) / 2)
        upper = Curve.through(up_u, up_v)
        lower = Curve.through(lo_u, np.maximum(lo_v, upper(lo_u)))
        # The lid skin stretches from a line between the lid and the brow's lower edge.
        brow_line = Curve.through(brow_u, brow_v)
        stretch_from = Curve.through(up_u, upper(up_u) + 0.55 * (brow_line(up_u) - upper(up_u)))
        top = float(min(stretch_from.v.min(), up_v.min())) - 2
        bottom = float(lo_v.max()) + 2
        corners = [center + axis_u * su * (half + 3) + axis_v * sv for su in (-1, 1) for sv in (top, bottom)]
        eyes.append(EyeRig(center, half, upper, lower, stretch_from, _box(np.array(corners), w, h, margin=3)))
    pivot = origin + axis_v * (chin + 0.6 * (chin - float(nose_v[0])))
    return FaceRig(image, face, axis_u, axis_v, mouth, tuple(eyes), face_width, pivot)


def _box(points: np.ndarray, width: int, height: int, margin: int) -> tuple[int, int, int, int]:
    x0 = max(0, math.floor(points[:, 0].min()) - margin)
    y0 = max(0, math.floor(points[:, 1].min()) - margin)
    x1 = min(width, math.ceil(points[:, 0].max()) + margin)
    y1 = min(height, math.ceil(points[:, 1].max()) + margin)
    return x0, y0, x1, y1
