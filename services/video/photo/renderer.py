"""One session's photo avatar: the mouth follows the visemes, the eyes blink, the head sways and breathes."""

from __future__ import annotations

from dataclasses import dataclass

from services.video.backend import Drive, FrameByFrameRenderer, IdleLoop
from services.video.idle import IdleSchedule
from services.video.photo.warp import Frame, PhotoWarp, Pose
from services.video.visemes import MouthShape, MouthTracker, TrackerState

HEAD_SHIFT_PX = 1.6  # largest head shift at 512 px (scaled with the output size)
BREATH_PX = 0.7


@dataclass(frozen=True)
class _PhotoState:
    tracker: TrackerState


class PhotoRenderer(FrameByFrameRenderer):
    """Renders frames of one prepared portrait (`PhotoWarp`, shared between sessions) with this session's
    animation state (mouth tracker) and the avatar's idle loop (blinks, sway: a function of the loop phase, the
    same for every session of the avatar; `seed` picks the schedule)."""

    def __init__(self, warp: PhotoWarp, fps: int, loop: IdleLoop, seed: int) -> None:
        super().__init__(warp.rig.width, warp.rig.height, fps)
        self.warp = warp
        self.loop = loop
        self.tracker = MouthTracker(fps)
        self.schedule = IdleSchedule(seed, loop.frames, fps)
        scale = min(self.width, self.height) / 512.0
        self.head_limit = HEAD_SHIFT_PX * scale
        self.breath_px = BREATH_PX * scale
        self._frame = Frame(warp)

    @property
    def settle_frames(self) -> int:
        return self.tracker.settle_frames

    def snapshot(self) -> _PhotoState:
        return _PhotoState(self.tracker.state)

    def restore(self, state: _PhotoState) -> None:
        self.tracker.state = state.tracker

    def pose(self, frame_index: int, shape: MouthShape) -> Pose:
        """The full pose of a frame for a mouth shape (blink, head and breath come from the idle loop's phase; the
        speech energy adds nods)."""
        energy = self.tracker.state.energy
        phase = self.loop.phase(frame_index)
        schedule = self.schedule
        dx, dy = schedule.sway(phase, self.head_limit, energy, frame_index)
        return Pose(
            mouth=shape,
            blink=schedule.blink(phase),
            head_dx=dx,
            head_dy=dy,
            head_roll=schedule.tilt(phase, energy, frame_index),
            breath_dy=self.breath_px * schedule.breath(phase),
        )

    def render_frame(self, drive: Drive) -> bytes:
        shape = self.tracker.step(drive.frame_index, drive.pcm, drive.phonemes)
        return self.warp.render_i420(self.pose(drive.frame_index, shape), self._frame)
