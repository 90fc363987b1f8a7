"""Rendered frames in, encoded chunks out: the unit the packager splices between idle-loop chunks.

Chunk k covers frames [k n, (k + 1) n). The session asks for every frame of the chunks it wants rendered, so frames
arrive consecutively; each is encoded as soon as it is rendered (spreading the work) and the chunk goes out when its
last frame is encoded, starting with an IDR frame. An interrupt (`reset` from frame f) changes only the frames from
f on: if f falls in the chunk being built, its frames before f are kept and encoding resumes at f with a new IDR
frame; if it falls in a chunk already sent, only the frames from f on are sent again (`first_frame_index` = f) and
the packager splices them onto what it holds. No raw frame is kept once encoded.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SENT_MEMORY = 4096  # chunk starts remembered as sent (a cut may land in any of them when a slow renderer runs ahead)


@dataclass(frozen=True)
class Chunk:
    start_frame_index: int
    first_frame_index: int
    epoch: int
    frames: tuple[bytes, ...]


@dataclass
class _Building:
    start: int
    base: int  # first frame this message will carry
    epoch: int = 0
    frames: list[bytes] = field(default_factory=list)

    @property
    def next_frame(self) -> int:
        return self.base + len(self.frames)


class ChunkAssembler:
    """`encode(i420, idr) -> access unit` does the encoding; one stream's frames, in order. Not thread-safe."""

    def __init__(self, chunk_frames: int, encode) -> None:
        self.chunk_frames = chunk_frames
        self._encode = encode
        self._building: _Building | None = None
        self._sent: deque[int] = deque(maxlen=SENT_MEMORY)
        self._sent_set: set[int] = set()
        self._idr_next = True
        self.abandoned = 0

    def add(self, frame_index: int, epoch: int, i420: bytes) -> Chunk | None:
        """Encodes one rendered frame; returns the chunk it completes, if any."""
        n = self.chunk_frames
        start = frame_index - frame_index % n
        building = self._building
        if building is not None and (building.start != start or building.next_frame != frame_index):
            self._abandon(f"frame {frame_index} does not continue chunk {building.start} (next {building.next_frame})")
            building = None
        if building is None:
            if frame_index != start:
                self._abandon(f"frame {frame_index} starts no chunk and continues none")
                return None
            building = self._building = _Building(start, start)
            self._idr_next = True
        building.frames.append(self._encode(i420, self._idr_next))
        self._idr_next = False
        building.epoch = max(building.epoch, epoch)
        if frame_index < start + n - 1:
            return None
        self._building = None
        self._remember(start)
        return Chunk(start, building.base, building.epoch, tuple(building.frames))

    def reset(self, from_frame_index: int) -> None:
        """Frames from `from_frame_index` on will be rendered again (or not at all)."""
        n = self.chunk_frames
        start = from_frame_index - from_frame_index % n
        building = self._building
        if building is not None and building.start > start:
            self._building = building = None  # a later chunk: entirely redone
        if building is not None and building.start == start:
            if from_frame_index >= building.base:
                del building.frames[from_frame_index - building.base :]
            else:  # an earlier cut than the one this update started at: the packager holds the frames before it
                building.base, building.frames = from_frame_index, []
        elif building is None and start in self._sent_set and from_frame_index > start:
            self._building = _Building(start, from_frame_index)
        for later in [s for s in self._sent_set if s > start or (s == start and from_frame_index == start)]:
            self._sent_set.discard(later)
        self._idr_next = True

    def _remember(self, start: int) -> None:
        if len(self._sent) == self._sent.maxlen:
            self._sent_set.discard(self._sent[0])
        self._sent.append(start)
        self._sent_set.add(start)

    def _abandon(self, why: str) -> None:
        if self._building is not None:
            self.abandoned += 1
            log.debug("incomplete chunk abandoned", extra={"chunk": self._building.start, "why": why})
        self._building = None
