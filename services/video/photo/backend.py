"""The photo backend: built-in portraits and uploaded ones, prepared once and shared by every session using them.

Preparation (decode, find the face, frame head and shoulders, measure lips and eyelids) is cached at two levels:
the portrait by content hash (a framed source crop at most SOURCE_MAX_SIDE pixels and its landmarks), and the rig
per output size. Uploaded portraits are private: they are never listed, and a session reaches one only through the
bytes it uploaded (their hash names the avatar).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from services.common.lru import Lru
from services.video.backend import AvatarInfo, AvatarRenderer, IdleLoop, PortraitBackend
from services.video.idle import avatar_seed
from services.video.photo.landmarks import Face, FaceLandmarker
from services.video.photo.portrait import MIN_FACE_PIXELS, PortraitError, decode_portrait
from services.video.photo.renderer import PhotoRenderer
from services.video.photo.rig import build_rig
from services.video.photo.warp import PhotoWarp

SOURCE_MAX_SIDE = 1024  # the kept source crop's longest side: enough for 720p and 1080p heads
SOURCE_FRAMING = 4.0  # the kept crop spans this many face widths (room for any output aspect ratio)
PORTRAIT_PREFIX = "portrait-"
# Bump when the rendered pictures change (rig, warp, idle motion): encoded idle loops are keyed by it.
LOOK_VERSION = "photo-look-2"


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@dataclass(frozen=True)
class BuiltinPortrait:
    name: str
    description: str
    load: Callable[[], np.ndarray]


BUILTINS: dict[str, BuiltinPortrait] = {
    p.name: p
    for p in (
        BuiltinPortrait(
            "astronaut",
            "Eileen: a photo of astronaut Eileen Collins (NASA, public domain), animated on CPU in real time",
            _astronaut,
        ),
    )
}
DEFAULT_PHOTO_AVATAR = "astronaut"


@dataclass(frozen=True)
class PreparedPortrait:
    """A portrait ready to frame at any size: a crop around the face and the face's landmarks in it."""

    name: str
    description: str
    image: np.ndarray
    face: Face


def portrait_name(data: bytes) -> str:
    """The avatar name of uploaded bytes: content-addressed, so the same photo is prepared once."""
    return PORTRAIT_PREFIX + hashlib.sha256(data).hexdigest()[:32]


def prepare(rgb: np.ndarray, name: str, description: str, landmarker: FaceLandmarker) -> PreparedPortrait:
    """Finds the face and keeps a crop around it (PortraitError when there is no usable face)."""
    scale = min(1.0, SOURCE_MAX_SIDE * 1.5 / max(rgb.shape[:2]))
    if scale < 1.0:  # very large photos: find the face on a smaller copy first
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    face = landmarker.find(rgb)
    if face is None:
        raise PortraitError(
            "no_face",
            "no face found in the portrait: use a photo of one person looking at the camera, the face filling at "
            "least a fifth of the picture",
        )
    width = face.width() / scale
    if width < MIN_FACE_PIXELS:
        raise PortraitError(
            "face_too_small",
            f"the face in the portrait is {width:.0f} pixels wide; at least {MIN_FACE_PIXELS} are needed: use a "
            "larger or closer photo",
        )
    center = face.xy.mean(axis=0)
    half = SOURCE_FRAMING * face.width() / 2
    x0 = int(max(0, center[0] - half))
    y0 = int(max(0, center[1] - half))
    x1 = int(min(rgb.shape[1], center[0] + half))
    y1 = int(min(rgb.shape[0], center[1] + 1.3 * half))
    crop = rgb[y0:y1, x0:x1]
    shrink = min(1.0, SOURCE_MAX_SIDE / max(crop.shape[:2]))
    if shrink < 1.0:
        crop = cv2.resize(crop, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    points = face.points.copy()
    points[:, 0] = (points[:, 0] - x0) * shrink
    points[:, 1] = (points[:, 1] - y0) * shrink
    points[:, 2] *= shrink
    crop = np.ascontiguousarray(crop)
    crop.setflags(write=False)
    return PreparedPortrait(name, description, crop, Face(points, face.presence))


class PhotoBackend(PortraitBackend):
    """Photo avatars on CPU."""

    name = "photo"

    def __init__(self, max_uploads: int = 16, max_rigs: int = 16) -> None:
        # One OpenCV thread per call: sessions already render on their own threads, and a 2-core box serving
        # several sessions gains nothing from each frame fanning out over every core.
        cv2.setNumThreads(1)
        self._lock = threading.Lock()
        self._prepared: dict[str, PreparedPortrait] = {}
        self._uploads: Lru[str, PreparedPortrait] = Lru(max_uploads)
        self._warps: Lru[tuple[str, int, int], PhotoWarp] = Lru(max_rigs)
        self._preparing: dict[str, threading.Lock] = {}

    def avatars(self) -> list[AvatarInfo]:
        return [AvatarInfo(p.name, p.description, self.name) for p in BUILTINS.values()]

    def prepare_portrait(self, data: bytes) -> AvatarInfo:
        """Prepares an uploaded portrait (or finds it prepared). Slow on a miss: call off the event loop."""
        name = portrait_name(data)
        prepared = self._lookup(name)
        if prepared is None:
            with self._name_lock(name):
                prepared = self._lookup(name)
                if prepared is None:
                    rgb = decode_portrait(data)
                    prepared = prepare(rgb, name, "an uploaded portrait", FaceLandmarker.shared())
                    with self._lock:
                        self._uploads.put(name, prepared)
        return AvatarInfo(prepared.name, prepared.description, self.name)

    def prepared(self, avatar: str) -> PreparedPortrait:
        """A built-in (prepared on first use) or an uploaded portrait prepared before (KeyError otherwise)."""
        prepared = self._lookup(avatar)
        if prepared is not None:
            return prepared
        if avatar not in BUILTINS:
            raise KeyError(avatar)
        with self._name_lock(avatar):
            prepared = self._lookup(avatar)
            if prepared is None:
                builtin = BUILTINS[avatar]
                prepared = prepare(builtin.load(), builtin.name, builtin.description, FaceLandmarker.shared())
                with self._lock:
                    self._prepared[avatar] = prepared
        return prepared

    def warp(self, avatar: str, width: int, height: int) -> PhotoWarp:
        """The shared per-size rig and warp of an avatar."""
        key = (avatar, width, height)
        with self._lock:
            warp = self._warps.get(key)
        if warp is not None:
            return warp
        prepared = self.prepared(avatar)
        with self._name_lock(f"{avatar}@{width}x{height}"):
            with self._lock:
                warp = self._warps.get(key)
            if warp is None:
                rig = build_rig(prepared.image, prepared.face, width, height, FaceLandmarker.shared())
                warp = PhotoWarp(rig)
                with self._lock:
                    self._warps.put(key, warp)
        return warp

    def open(
        self, avatar: str, width: int, height: int, fps: int, sample_rate_hz: int, loop: IdleLoop
    ) -> AvatarRenderer:
        return PhotoRenderer(self.warp(avatar, width, height), fps, loop, avatar_seed(avatar))

    def loop_key(self, avatar: str) -> str:
        return f"{self.name}/{avatar}/{LOOK_VERSION}"

    def _lookup(self, name: str) -> PreparedPortrait | None:
        with self._lock:
            return self._prepared.get(name) or self._uploads.get(name)

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            lock = self._preparing.get(name)
            if lock is None:
                if len(self._preparing) > 256:
                    self._preparing.clear()
                lock = self._preparing[name] = threading.Lock()
            return lock
