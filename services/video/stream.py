"""One Render stream's requests: the config checked field by field, drives validated in order, resets tracked, and the
bounded queue of drives between the stream's reader and its renderer (back-pressure: when the renderer falls behind,
the queue fills, the reader stops reading and gRPC flow control slows the session).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from infinitetalk_live_client.avatar.v1 import video_pb2
from services.common.stream import InvalidRequest
from services.video.backend import Drive, PhonemeSpan, StaleFilter

STALE_FRAMES = Counter("video_stale_frames_dropped_total", "Drives or frames dropped because a reset superseded them")

MIN_SIZE = 64
MAX_SIZE = 1920
MIN_FPS = 1
MAX_FPS = 60
MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000
MAX_FRAME_INDEX = 1 << 40
MAX_PHONEMES_PER_FRAME = 64
MAX_PHONEME_CHARS = 32
MAX_UTTERANCE_ID_CHARS = 256
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what the packager accepts too
MAX_CHUNK_FRAMES = 60
MAX_ADDRESS_CHARS = 256
TOKEN_CHARS = (16, 128)
ADDRESS_PATTERN = re.compile(r"[A-Za-z0-9._-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}")


def samples_in_frame(frame_index: int, sample_rate_hz: int, fps: int) -> int:
    """Samples of audio under one frame (exact even when sample_rate_hz / fps is not an integer)."""
    return (frame_index + 1) * sample_rate_hz // fps - frame_index * sample_rate_hz // fps


def check_config(config: video_pb2.RenderConfig, avatars: Sequence[str], default_avatar: str) -> None:
    """Raises InvalidRequest for a config the service cannot honour."""
    if not SESSION_ID_PATTERN.fullmatch(config.session_id):
        raise InvalidRequest("config.session_id", "session_id must be 16-64 characters from A-Z a-z 0-9 _ -")
    for name, value in (("width", config.width), ("height", config.height)):
        if value % 2 or not MIN_SIZE <= value <= MAX_SIZE:
            raise InvalidRequest(
                f"config.{name}", f"{name} must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {value}"
            )
    if not MIN_FPS <= config.fps <= MAX_FPS:
        raise InvalidRequest("config.fps", f"fps must be from {MIN_FPS} to {MAX_FPS}, got {config.fps}")
    if not MIN_SAMPLE_RATE_HZ <= config.sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise InvalidRequest(
            "config.sample_rate_hz",
            f"sample_rate_hz must be from {MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ}, got {config.sample_rate_hz}",
        )
    if not 1 <= config.chunk_frames <= MAX_CHUNK_FRAMES:
        raise InvalidRequest(
            "config.chunk_frames", f"chunk_frames must be from 1 to {MAX_CHUNK_FRAMES}, got {config.chunk_frames}"
        )
    if config.idle_phase_offset < 0 or config.idle_phase_offset % config.chunk_frames:
        raise InvalidRequest(
            "config.idle_phase_offset",
            f"idle_phase_offset must be a non-negative multiple of chunk_frames ({config.chunk_frames})",
        )
    if len(config.packager_address) > MAX_ADDRESS_CHARS or not ADDRESS_PATTERN.fullmatch(config.packager_address):
        raise InvalidRequest("config.packager_address", "packager_address must be host:port (the session's packager)")
    if not TOKEN_CHARS[0] <= len(config.publish_token) <= TOKEN_CHARS[1]:
        raise InvalidRequest(
            "config.publish_token", f"publish_token must be {TOKEN_CHARS[0]} to {TOKEN_CHARS[1]} characters"
        )
    if config.portrait and config.avatar:
        raise InvalidRequest(
            "config.portrait", "set either avatar or portrait, not both: a portrait becomes the stream's avatar"
        )
    if config.avatar and config.avatar not in avatars:
        if config.avatar.startswith("portrait-"):
            raise InvalidRequest(
                "config.avatar",
                f"{config.avatar!r} is an uploaded portrait: send its bytes in config.portrait (avatar left empty)",
            )
        raise InvalidRequest(
            "config.avatar",
            f"unknown avatar {config.avatar!r}; choose one of: {', '.join(avatars)} (empty selects {default_avatar})",
        )


@dataclass
class StreamState:
    """What the reader knows about the stream's timeline: epochs, frame order, resets, and how it ended."""

    fps: int
    sample_rate_hz: int
    epoch: int | None = None
    last_index: int = -1
    error: InvalidRequest | None = None
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        self.stale = StaleFilter()

    def accept_frame(self, frame: video_pb2.FrameDrive) -> Drive | None:
        """The validated drive, or None when a reset already made it stale."""
        index = frame.frame_index
        if not 0 <= index <= MAX_FRAME_INDEX:
            raise InvalidRequest("frame.frame_index", f"frame_index must be from 0 to {MAX_FRAME_INDEX}, got {index}")
        if self.epoch is None or frame.epoch > self.epoch:
            # A newer epoch without a reset (e.g. a new stream replaying frames written before and after a cut):
            # nothing sent so far is at or after this index, so there is nothing to invalidate.
            self.epoch = frame.epoch
        elif frame.epoch < self.epoch and self.stale.is_stale(index, frame.epoch):
            return None
        if index <= self.last_index:
            raise InvalidRequest(
                "frame.frame_index",
                f"frame_index {index} does not follow {self.last_index}: frame indices must strictly increase "
                "(after a reset, from its from_frame_index on)",
            )
        expected = samples_in_frame(index, self.sample_rate_hz, self.fps)
        size = len(frame.pcm_s16le)
        if size not in (0, 2 * expected):
            raise InvalidRequest(
                "frame.pcm_s16le",
                f"frame {index} carries {size} bytes of audio; it needs exactly {2 * expected} bytes ({expected} "
                f"samples of s16le at {self.sample_rate_hz} Hz / {self.fps} fps) or none for silence",
            )
        if len(frame.utterance_id) > MAX_UTTERANCE_ID_CHARS:
            raise InvalidRequest(
                "frame.utterance_id", f"utterance_id is longer than {MAX_UTTERANCE_ID_CHARS} characters"
            )
        if len(frame.phonemes) > MAX_PHONEMES_PER_FRAME:
            raise InvalidRequest(
                "frame.phonemes", f"frame {index} has {len(frame.phonemes)} phonemes; at most {MAX_PHONEMES_PER_FRAME}"
            )
        phonemes = []
        for mark in frame.phonemes:
            if len(mark.phoneme) > MAX_PHONEME_CHARS:
                raise InvalidRequest("frame.phonemes.phoneme", f"phoneme is longer than {MAX_PHONEME_CHARS} characters")
            phonemes.append(PhonemeSpan(mark.phoneme, mark.start_us, max(mark.start_us, mark.end_us)))
        self.last_index = index
        pcm = np.frombuffer(frame.pcm_s16le, dtype="<i2") if size else None
        return Drive(index, frame.utterance_id, pcm, tuple(phonemes), frame.epoch)

    def accept_reset(self, reset: video_pb2.ResetTimeline) -> None:
        if not 0 <= reset.from_frame_index <= MAX_FRAME_INDEX:
            raise InvalidRequest(
                "reset.from_frame_index",
                f"from_frame_index must be from 0 to {MAX_FRAME_INDEX}, got {reset.from_frame_index}",
            )
        if self.epoch is not None and reset.epoch <= self.epoch:
            raise InvalidRequest(
                "reset.epoch", f"reset epoch {reset.epoch} must be greater than the stream's epoch {self.epoch}"
            )
        if self.epoch is not None:
            self.stale.add(reset.from_frame_index, reset.epoch)
        self.epoch = reset.epoch
        self.last_index = min(self.last_index, reset.from_frame_index - 1)


class DriveQueue:
    """A bounded FIFO of drives that a reset can purge; `close` ends the consumer's iteration."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Drive] = deque()
        self._maxsize = maxsize
        self._changed = asyncio.Condition()
        self._closed = False

    async def put(self, drive: Drive) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._items) < self._maxsize or self._closed)
            if not self._closed:
                self._items.append(drive)
                self._changed.notify_all()

    async def purge(self, stale: StaleFilter) -> int:
        async with self._changed:
            kept = deque(drive for drive in self._items if not stale.is_stale(drive.frame_index, drive.epoch))
            dropped = len(self._items) - len(kept)
            self._items = kept
            self._changed.notify_all()
            return dropped

    async def close(self, discard: bool = False) -> None:
        async with self._changed:
            self._closed = True
            if discard:
                self._items.clear()
            self._changed.notify_all()

    async def drives(self, stale: StaleFilter) -> AsyncIterator[Drive]:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._items or self._closed)
                if not self._items:
                    return
                drive = self._items.popleft()
                self._changed.notify_all()
            if stale.is_stale(drive.frame_index, drive.epoch):
                STALE_FRAMES.inc()
                continue
            yield drive
