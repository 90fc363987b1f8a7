"""Face landmarks from MediaPipe's face-mesh models, run with the LiteRT interpreter.

The models (BlazeFace short-range detector and the 468-point face-landmark network) ship inside the `mediapipe`
wheel (0.10.x), so nothing is fetched at run time. We do not import `mediapipe` itself: its Python side pins an old
protobuf that our generated code cannot use. We only read its model files (located without importing the package)
and run them with `ai-edge-litert`, doing the detector's anchor decoding and the landmark crop ourselves, as
MediaPipe's face-mesh graph does.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MODEL_DIR_ENV = "FACE_MODEL_DIR"
DETECTOR_FILE = "face_detection/face_detection_short_range.tflite"
LANDMARK_FILE = "face_landmark/face_landmark.tflite"

DETECTOR_SIZE = 128
LANDMARK_SIZE = 192
NUM_LANDMARKS = 468
MIN_DETECTION_SCORE = 0.5
MIN_FACE_PRESENCE = 0.5
ROI_SCALE = 1.5  # the landmark crop is 1.5x the face box, as in MediaPipe's face-mesh graph

# Landmark indices (MediaPipe canonical face mesh); "right"/"left" are the subject's.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
UPPER_LIP_INNER_MID, LOWER_LIP_INNER_MID = 13, 14
CHIN = 152
FOREHEAD = 10
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_EYE_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip


class FaceModelsMissing(RuntimeError):
    """The face models are not installed (an installation problem, not a bad portrait)."""


def model_dir() -> Path:
    """Where the .tflite files are: $FACE_MODEL_DIR, else the `modules/` folder of the installed mediapipe wheel."""
    configured = os.environ.get(MODEL_DIR_ENV, "")
    if configured:
        return Path(configured)
    spec = importlib.util.find_spec("mediapipe")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsMissing(
            "the face landmark models are missing: install them with `pip install --no-deps mediapipe==0.10.14` "
            f"(the wheel ships them) or point {MODEL_DIR_ENV} at a folder holding {DETECTOR_FILE} and {LANDMARK_FILE}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "modules"


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    if not path.is_file():
        raise FaceModelsMissing(f"face model file {path} is missing (see {MODEL_DIR_ENV})")
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres of the short-range BlazeFace model in [0, 1] (strides 8, 16, 16, 16; 2 anchors per
    layer and cell; the three stride-16 layers share a grid)."""
    centers = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = DETECTOR_SIZE // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centers.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centers).astype(np.float32)


@dataclass(frozen=True)
class Detection:
    """A detected face in image pixels: box centre and size, eye centres, and the detector's score."""

    center: tuple[float, float]
    size: float
    right_eye: tuple[float, float]
    left_eye: tuple[float, float]
    score: float


@dataclass(frozen=True)
class Face:
    """468 landmarks (x, y in image pixels; z in roughly the same scale, negative towards the camera)."""

    points: np.ndarray
    presence: float

    @property
    def xy(self) -> np.ndarray:
        return self.points[:, :2]

    def eye_distance(self) -> float:
        """Distance between the eyes' outer corners: the face's scale."""
        return float(np.linalg.norm(self.xy[LEFT_EYE_OUTER] - self.xy[RIGHT_EYE_OUTER]))

    def width(self) -> float:
        """Face width at the cheekbones (the face oval's widest span), in pixels."""
        oval = self.xy[list(FACE_OVAL)]
        axis = self.xy[LEFT_EYE_OUTER] - self.xy[RIGHT_EYE_OUTER]
        axis = axis / max(np.linalg.norm(axis), 1e-6)
        along = oval @ axis
        return float(along.max() - along.min())

    def mouth_opening(self) -> float:
        """Inner-lip gap at the middle of the mouth, relative to the eye distance (0 = closed)."""
        gap = np.linalg.norm(self.xy[LOWER_LIP_INNER_MID] - self.xy[UPPER_LIP_INNER_MID])
        return float(gap / max(self.eye_distance(), 1e-6))

    def roll(self) -> float:
        """Head roll in radians (0 = eyes level)."""
        dx, dy = self.xy[LEFT_EYE_OUTER] - self.xy[RIGHT_EYE_OUTER]
        return math.atan2(dy, dx)


@dataclass(frozen=True)
class _Roi:
    center: tuple[float, float]
    size: float
    rotation: float


class FaceLandmarker:
    """Finds the most prominent face and its 468 landmarks in RGB images. One instance per thread (LiteRT
    interpreters are not thread-safe); `shared()` gives each thread its own."""

    _local = threading.local()

    def __init__(self, models: Path | None = None) -> None:
        folder = models or model_dir()
        self._detector = _interpreter(folder / DETECTOR_FILE)
        self._landmarker = _interpreter(folder / LANDMARK_FILE)
        self._anchors = _ssd_anchors()
        det_in = self._detector.get_input_details()[0]["index"]
        det_out = {d["name"]: d["index"] for d in self._detector.get_output_details()}
        self._det_io = (det_in, det_out["regressors"], det_out["classificators"])
        lm_out = sorted(self._landmarker.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
        self._lm_io = (self._landmarker.get_input_details()[0]["index"], lm_out[0]["index"], lm_out[1]["index"])

    @classmethod
    def shared(cls) -> FaceLandmarker:
        """This thread's landmarker (models load once per thread)."""
        landmarker = getattr(cls._local, "landmarker", None)
        if landmarker is None:
            landmarker = cls._local.landmarker = cls()
        return landmarker

    def detect(self, rgb: np.ndarray) -> Detection | None:
        """The highest-scoring face, or None. The image is letterboxed to the detector's square input."""
        h, w = rgb.shape[:2]
        side = max(h, w)
        scale = DETECTOR_SIZE / side
        resized = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((DETECTOR_SIZE, DETECTOR_SIZE, 3), dtype=np.float32)
        oy = (DETECTOR_SIZE - resized.shape[0]) // 2
        ox = (DETECTOR_SIZE - resized.shape[1]) // 2
        canvas[oy : oy + resized.shape[0], ox : ox + resized.shape[1]] = resized.astype(np.float32) / 127.5 - 1.0
        index_in, index_boxes, index_scores = self._det_io
        self._detector.set_tensor(index_in, canvas[None])
        self._detector.invoke()
        raw = self._detector.get_tensor(index_boxes)[0]
        logits = np.clip(self._detector.get_tensor(index_scores)[0, :, 0].astype(np.float64), -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        best = int(np.argmax(scores))
        if scores[best] < MIN_DETECTION_SCORE:
            return None
        # Average the boxes that overlap the best one (MediaPipe's weighted non-max suppression, for one face).
        anchor = self._anchors
        cx = raw[:, 0] / DETECTOR_SIZE + anchor[:, 0]
        cy = raw[:, 1] / DETECTOR_SIZE + anchor[:, 1]
        bw = raw[:, 2] / DETECTOR_SIZE
        bh = raw[:, 3] / DETECTOR_SIZE
        overlap = _iou(cx, cy, bw, bh, best)
        group = (scores >= MIN_DETECTION_SCORE) & (overlap > 0.3)
        weights = scores[group] / scores[group].sum()

        def mean(values: np.ndarray) -> float:
            return float((values[group] * weights).sum())

        def to_image(x: float, y: float) -> tuple[float, float]:
            return ((x * DETECTOR_SIZE - ox) / scale, (y * DETECTOR_SIZE - oy) / scale)

        eyes = [
            to_image(
                mean(raw[:, 4 + 2 * k] / DETECTOR_SIZE + anchor[:, 0]),
                mean(raw[:, 5 + 2 * k] / DETECTOR_SIZE + anchor[:, 1]),
            )
            for k in (0, 1)
        ]
        return Detection(
            center=to_image(mean(cx), mean(cy)),
            size=max(mean(bw), mean(bh)) * DETECTOR_SIZE / scale,
            right_eye=eyes[0],
            left_eye=eyes[1],
            score=float(scores[best]),
        )

    def landmarks_in(self, rgb: np.ndarray, roi: _Roi) -> Face:
        """Landmarks of the face inside a rotated square region of the image."""
        cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
        k = LANDMARK_SIZE / roi.size
        # Image -> crop: rotate by -rotation about the roi centre, scale, and centre in the crop.
        matrix = np.array(
            [
                [k * cos, k * sin, LANDMARK_SIZE / 2 - k * (cos * roi.center[0] + sin * roi.center[1])],
                [-k * sin, k * cos, LANDMARK_SIZE / 2 - k * (-sin * roi.center[0] + cos * roi.center[1])],
            ],
            dtype=np.float64,
        )
        crop = cv2.warpAffine(
            rgb, matrix, (LANDMARK_SIZE, LANDMARK_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        index_in, index_points, index_presence = self._lm_io
        self._landmarker.set_tensor(index_in, (crop.astype(np.float32) / 255.0)[None])
        self._landmarker.invoke()
        raw = self._landmarker.get_tensor(index_points).reshape(NUM_LANDMARKS, 3).astype(np.float64)
        presence = 1.0 / (
            1.0 + math.exp(-float(np.clip(self._landmarker.get_tensor(index_presence).ravel()[0], -50, 50)))
        )
        inverse = cv2.invertAffineTransform(matrix)
        xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = raw[:, 2:] / k
        return Face(np.concatenate([xy, z], axis=1), presence)

    def find(self, rgb: np.ndarray, refine: bool = True) -> Face | None:
        """The most prominent face's landmarks, or None when there is no face."""
        detection = self.detect(rgb)
        if detection is None:
            return None
        dx = detection.left_eye[0] - detection.right_eye[0]
        dy = detection.left_eye[1] - detection.right_eye[1]
        # The subject's right eye is on the image's left; rotation levels the eyes.
        roi = _Roi(detection.center, detection.size * ROI_SCALE, math.atan2(dy, dx))
        face = self.landmarks_in(rgb, roi)
        if refine and face.presence >= MIN_FACE_PRESENCE:
            face = self.track(rgb, face)
        return face if face.presence >= MIN_FACE_PRESENCE else None

    def track(self, rgb: np.ndarray, previous: Face) -> Face:
        """Landmarks in a region placed from a previous face (video: skips detection; stills: a tighter crop)."""
        return self.landmarks_in(rgb, roi_from_face(previous))


def roi_from_face(face: Face) -> _Roi:
    """The landmark model's region for a face: its landmarks' box (in the eye-levelled frame), scaled 1.5x."""
    rotation = face.roll()
    cos, sin = math.cos(rotation), math.sin(rotation)
    xy = face.xy
    u = xy[:, 0] * cos + xy[:, 1] * sin
    v = -xy[:, 0] * sin + xy[:, 1] * cos
    cu, cv = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    size = max(u.max() - u.min(), v.max() - v.min()) * ROI_SCALE
    center = (cu * cos - cv * sin, cu * sin + cv * cos)
    return _Roi(center, size, rotation)


def _iou(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray, best: int) -> np.ndarray:
    x0, x1 = cx - w / 2, cx + w / 2
    y0, y1 = cy - h / 2, cy + h / 2
    iw = np.clip(np.minimum(x1, x1[best]) - np.maximum(x0, x0[best]), 0, None)
    ih = np.clip(np.minimum(y1, y1[best]) - np.maximum(y0, y0[best]), 0, None)
    inter = iw * ih
    return inter / np.maximum(w * h + w[best] * h[best] - inter, 1e-9)
