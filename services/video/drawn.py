"""The CPU default avatar: a drawn, friendly face whose mouth follows the visemes, with blinks, glances and a little
breathing sway (the avatar's idle loop: a function of the loop phase, see `services.video.idle`). This module is the
backend and the per-session renderer; the picture itself is drawn by `drawn_static` (what moves only with the head)
and `drawn_parts` (mouth and eyes), with the painter of `drawn_painter`, the layout of `drawn_geometry` and the
palettes of `drawn_style`.

Cost model: everything static (background, body, hair, face, brows, nose) is drawn once per (style, size) with
anti-aliased implicit shapes in numpy and kept as padded I420 planes. A frame is then a crop of those planes at the
head's integer offset (that is the head motion; a pixel or two, on a smooth background) plus two small patches drawn
per frame and cached by their quantized parameters: the mouth and the eyes. All geometry is in a 512x512 design
space scaled to the output size, so any even size works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.common.lru import Lru
from services.video.backend import AvatarInfo, AvatarRenderer, Drive, FrameByFrameRenderer, IdleLoop, RendererBackend
from services.video.drawn_geometry import eye_box, max_head_shift, mouth_box
from services.video.drawn_painter import Painter
from services.video.drawn_parts import draw_eyes, draw_mouth
from services.video.drawn_static import get_base
from services.video.drawn_style import DEFAULT_AVATAR, STYLES, Style
from services.video.idle import GAZES, IdleSchedule, avatar_seed
from services.video.pixels import i420_planes, i420_size, rgb_to_i420_planes, to_u8
from services.video.visemes import MouthShape, MouthTracker, TrackerState

# Bump when the rendered pictures change (drawing, idle motion): encoded idle loops are keyed by it.
LOOK_VERSION = "drawn-look-2"

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
        self.base = get_base(style.name, width, height)
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
            lambda p: draw_mouth(p, self.style, quantized),
            (fx / 4, fy / 4),
        )
        lid_q = round(lid * 16)
        eyes = self._patch(
            self._eyes,
            ("eyes", lid_q, gaze),
            self.eye_box,
            dx,
            dy,
            lambda p: draw_eyes(p, self.style, lid_q / 16, GAZES[gaze]),
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
        draw: Callable[[Painter], None],
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
            draw(Painter(canvas, origin_x, origin_y, base.scale))
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
    get_base(avatar, width, height)
