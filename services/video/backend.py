"""The renderer backend interface: what the video service needs from anything that can animate an avatar.

Backends differ a lot in cost and shape: the drawn CPU face renders one frame in a few milliseconds, while a
diffusion model on a GPU renders chunks of ~81 frames and is slower than real time. So a renderer is an async
generator over drives: it may consume drives ahead of what it has emitted and emit frames in batches, as long as it
emits exactly one frame per (non-stale) drive, in frame order. `FrameByFrameRenderer` is the helper for the simple
case (one frame per drive, on a worker thread, with rewindable state).

Idle is a loop. A renderer's idle animation (blinks, glances, sway, breathing) repeats every `IdleLoop.frames`
frames and is a pure function of the loop phase, so the idle loop of an avatar is rendered and encoded once and
every idle session of that avatar replays it (each from its own phase offset); renderers only run for the frames
around speech. Two rules make the splice between rendered frames and the loop invisible: an idle drive renders
exactly the loop's frame for its phase, and `settle_frames` silent drives after speech bring the renderer back to
that exact state.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.lru import Lru


@dataclass(frozen=True)
class AvatarInfo:
    """One avatar a backend can render (what ListAvatars reports)."""

    name: str
    description: str
    backend: str


@dataclass(frozen=True)
class IdleLoop:
    """How a stream's idle animation repeats: frame n shows loop phase (n + phase_offset) mod `frames`."""

    frames: int
    phase_offset: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("an idle loop has at least one frame")

    def phase(self, frame_index: int) -> int:
        return (frame_index + self.phase_offset) % self.frames


@dataclass(frozen=True)
class PhonemeSpan:
    """A phoneme that starts in a drive's frame, in session-clock microseconds."""

    phoneme: str
    start_us: int
    end_us: int


@dataclass(frozen=True)
class Drive:
    """What one frame of the timeline must show.

    `pcm` is the mono int16 audio under the frame (exactly the frame's share of samples), or None for silence.
    `phonemes` are the marks whose start falls in this frame.
    """

    frame_index: int
    utterance_id: str = ""
    pcm: np.ndarray | None = None
    phonemes: tuple[PhonemeSpan, ...] = ()
    epoch: int = 0


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered frame: I420 (yuv420p) bytes of the renderer's width x height.

    `render_s` is the time the backend took for this frame (for metrics and pace; 0 when unknown) and `cpu_s` the
    CPU time it spent on it in this process (what capacity is measured in; 0 when unknown, e.g. on a GPU).
    """

    frame_index: int
    epoch: int
    data: bytes
    render_s: float = 0.0
    cpu_s: float = 0.0


class AvatarRenderer(ABC):
    """One session's renderer: owns the per-session animation state of one avatar at one size and rate."""

    width: int
    height: int
    fps: int

    @abstractmethod
    def render(self, drives: AsyncIterator[Drive]) -> AsyncIterator[RenderedFrame]:
        """Consumes drives and yields exactly one frame per drive, in frame order.

        The renderer may read drives ahead of what it has yielded (batching). Drives made stale by `reset` (older
        epoch, index at/after the reset point) must be dropped without a frame. When `drives` ends, the renderer
        yields the frames it still owes and returns.
        """

    @abstractmethod
    async def reset(self, from_frame_index: int, epoch: int) -> None:
        """Forgets all state at/after `from_frame_index`: drives of epochs older than `epoch` for those frames are
        stale and the session re-sends those frames with `epoch`. The animation continues from the state it had
        just before `from_frame_index` when the renderer still remembers it."""

    @property
    def lookahead_frames(self) -> int:
        """How many drives the renderer may hold before it emits their frames (1 for frame-by-frame renderers)."""
        return 1

    @property
    def frames_per_second_capacity(self) -> float:
        """Frames per second this renderer can sustain (measured when possible); what a worker can advertise."""
        return float(self.fps)

    @property
    def settle_frames(self) -> int:
        """Silent drives after speech after which the renderer draws exactly the idle loop's frames again."""
        return 0

    async def close(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Releases resources (threads, GPU memory). Called once when the stream ends."""


class RendererBackend(ABC):
    """A family of avatars rendered by one technique (drawn CPU face, photo-real head, diffusion on GPU)."""

    name: str

    @abstractmethod
    def avatars(self) -> list[AvatarInfo]:
        """The avatars this backend renders."""

    @abstractmethod
    def open(
        self, avatar: str, width: int, height: int, fps: int, sample_rate_hz: int, loop: IdleLoop
    ) -> AvatarRenderer:
        """Builds a renderer for one session (may be slow: called off the event loop). Its idle animation is the
        avatar's loop of `loop.frames` frames (the same for every session of the avatar), from `loop.phase_offset`."""

    def loop_key(self, avatar: str) -> str:
        """What the idle loop's pictures depend on besides size, rate and length: equal keys, equal loops (a
        renderer change that alters the pictures must change its backend's key)."""
        return f"{self.name}/{avatar}"


class PortraitBackend(RendererBackend):
    """A backend that also animates uploaded portraits (PrepareAvatar, a Render config's `portrait`): the video
    service hands uploads to the first backend of this kind."""

    @abstractmethod
    def prepare_portrait(self, data: bytes) -> AvatarInfo:
        """The avatar an uploaded portrait becomes, prepared (or found prepared); a ValueError (PortraitError: with
        `reason` and `message`) when it cannot be animated. Slow on a miss: called off the event loop."""


@dataclass
class _ResetRule:
    from_frame_index: int
    epoch: int


@dataclass
class StaleFilter:
    """Which (frame_index, epoch) pairs a reset has made stale: those of an older epoch at/after its from index."""

    resets: list[_ResetRule] = field(default_factory=list)
    max_rules: int = 256

    def add(self, from_frame_index: int, epoch: int) -> None:
        self.resets.append(_ResetRule(from_frame_index, epoch))
        if len(self.resets) > self.max_rules:
            del self.resets[: len(self.resets) - self.max_rules]

    def is_stale(self, frame_index: int, epoch: int) -> bool:
        return any(rule.epoch > epoch and frame_index >= rule.from_frame_index for rule in reversed(self.resets))


class FrameByFrameRenderer(AvatarRenderer):
    """Base for renderers that make one frame per drive on a worker thread and can snapshot their state.

    Subclasses implement `render_frame` (runs on a worker thread, under a lock), `snapshot` and `restore`.
    Before each frame the state is snapshotted, so `reset(F)` can restore the state as it was just before the first
    remembered frame at/after F; older history than `history_frames` is forgotten (the animation then just
    continues from where it is).
    """

    history_frames = 512

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self._lock = threading.Lock()
        self._stale = StaleFilter()
        self._history: Lru[int, Any] = Lru(self.history_frames)  # frame index -> the state before it
        self._avg_render_s = 0.0

    @abstractmethod
    def render_frame(self, drive: Drive) -> bytes:
        """Advances the animation by one frame and returns it as I420 bytes."""

    @abstractmethod
    def snapshot(self) -> Any:
        """The animation state (cheap, immutable or copied) before the next frame."""

    @abstractmethod
    def restore(self, state: Any) -> None:
        """Puts back a state returned by `snapshot`."""

    @property
    def frames_per_second_capacity(self) -> float:
        if self._avg_render_s <= 0:
            return float(self.fps)
        return 1.0 / self._avg_render_s

    async def render(self, drives: AsyncIterator[Drive]) -> AsyncIterator[RenderedFrame]:
        async for drive in drives:
            if self._stale.is_stale(drive.frame_index, drive.epoch):
                continue
            frame = await asyncio.to_thread(self.render_one, drive)
            if frame is not None:
                yield frame

    def render_one(self, drive: Drive) -> RenderedFrame | None:
        """Renders one drive on the calling thread (None when a reset made it stale): for a caller that runs a
        stream's frames on a thread of its own instead of `render`."""
        with self._lock:
            if self._stale.is_stale(drive.frame_index, drive.epoch):
                return None
            self._history.put(drive.frame_index, self.snapshot())
            started = time.perf_counter()
            cpu_started = time.thread_time()
            data = self.render_frame(drive)
            cpu = time.thread_time() - cpu_started
            elapsed = time.perf_counter() - started
        self._avg_render_s = elapsed if self._avg_render_s == 0 else 0.95 * self._avg_render_s + 0.05 * elapsed
        return RenderedFrame(drive.frame_index, drive.epoch, data, elapsed, cpu)

    async def reset(self, from_frame_index: int, epoch: int) -> None:
        # The rule takes effect at once (drives already pulled are re-checked under the lock); the rewind waits
        # for a frame in progress to finish.
        self._stale.add(from_frame_index, epoch)
        await asyncio.to_thread(self._rewind_locked, from_frame_index)

    def reset_now(self, from_frame_index: int, epoch: int) -> None:
        """`reset` on the calling thread (the counterpart of `render_one`)."""
        self._stale.add(from_frame_index, epoch)
        self._rewind_locked(from_frame_index)

    def _rewind_locked(self, from_frame_index: int) -> None:
        with self._lock:
            later = [index for index in self._history if index >= from_frame_index]
            if not later:
                return
            state = self._history.peek(min(later))
            for index in later:
                self._history.pop(index)
            self.restore(state)
