"""The idle loops this packager holds: each avatar's idle animation, H.264-encoded once by a video worker, shared by
every idle session of that avatar on this packager.

A loop is named by a hash of its content (parameter sets, size, rate, chunking and every access unit), so a loop id
can only ever mean one picture sequence: the packager recomputes the hash of an upload and refuses a mismatch, and a
second worker uploading the same loop changes nothing. Loops in use (pinned by a live session or video stream) stay;
unused ones are kept, least recently used first out, within a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.h264 import loop_content_id, sample_nal_types
from services.packager.muxer import VideoChunk

NAL_IDR = 5


class LoopError(ValueError):
    """An uploaded loop that cannot be used; the message says why."""


def check_chunk(frames: Sequence[bytes], chunk_frames: int) -> VideoChunk:
    """Validates a chunk's access units (AVC sample format, the first an IDR frame); LoopError says what is wrong."""
    if len(frames) != chunk_frames:
        raise LoopError(f"a chunk has {chunk_frames} frames, this one {len(frames)}")
    sync: list[bool] = []
    for index, frame in enumerate(frames):
        try:
            types = sample_nal_types(frame)
        except ValueError as error:
            raise LoopError(f"frame {index} of the chunk: {error}") from None
        sync.append(NAL_IDR in types)
    if not sync[0]:
        raise LoopError("a chunk must start with an IDR frame")
    return VideoChunk(tuple(frames), tuple(sync))


@dataclass
class StoredLoop:
    loop_id: str
    width: int
    height: int
    fps: int
    chunk_frames: int
    sps: bytes
    pps: bytes
    chunks: tuple[VideoChunk, ...]
    pins: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = sum(len(frame) for chunk in self.chunks for frame in chunk.frames)

    def chunk(self, index: int) -> VideoChunk:
        return self.chunks[index % len(self.chunks)]


class LoopUpload:
    """A loop arriving chunk by chunk on one video stream."""

    def __init__(
        self, loop_id: str, width: int, height: int, fps: int, chunk_frames: int, sps: bytes, pps: bytes, count: int
    ) -> None:
        if not 1 <= count <= 10_000:
            raise LoopError(f"a loop has 1 to 10000 chunks, not {count}")
        self.loop_id = loop_id
        self.geometry = (width, height, fps, chunk_frames)
        self.sps = sps
        self.pps = pps
        self.chunks: list[VideoChunk | None] = [None] * count
        self.size = 0

    @property
    def complete(self) -> bool:
        return all(chunk is not None for chunk in self.chunks)

    def add(self, index: int, frames: Sequence[bytes], max_bytes: int) -> None:
        if not 0 <= index < len(self.chunks):
            raise LoopError(f"loop chunk {index} is out of range (0..{len(self.chunks) - 1})")
        if self.chunks[index] is not None:
            raise LoopError(f"loop chunk {index} arrived twice")
        chunk = check_chunk(frames, self.geometry[3])
        self.size += sum(len(frame) for frame in frames)
        if self.size > max_bytes:
            raise LoopError(f"the loop is larger than {max_bytes // 2**20} MiB")
        self.chunks[index] = chunk

    def finish(self) -> StoredLoop:
        chunks = tuple(chunk for chunk in self.chunks if chunk is not None)
        width, height, fps, chunk_frames = self.geometry
        actual = loop_content_id(
            width, height, fps, chunk_frames, self.sps, self.pps, [chunk.frames for chunk in chunks]
        )
        if actual != self.loop_id:
            raise LoopError(f"the loop's content does not match its id {self.loop_id}")
        return StoredLoop(self.loop_id, width, height, fps, chunk_frames, self.sps, self.pps, chunks)


class IdleLoops:
    """Loops by id; pinned ones stay, unpinned ones are evicted least recently used first past `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._loops: OrderedDict[str, StoredLoop] = OrderedDict()

    def __len__(self) -> int:
        return len(self._loops)

    @property
    def size(self) -> int:
        return sum(loop.size for loop in self._loops.values())

    def get(self, loop_id: str) -> StoredLoop | None:
        loop = self._loops.get(loop_id)
        if loop is not None:
            self._loops.move_to_end(loop_id)
        return loop

    def add_pinned(self, loop: StoredLoop) -> StoredLoop:
        """Stores a verified loop (or finds the copy already stored) and pins it for the caller."""
        stored = self.get(loop.loop_id)
        if stored is None:
            stored = self._loops[loop.loop_id] = loop
        stored.pins += 1
        self._evict()
        return stored

    def pin(self, loop: StoredLoop) -> None:
        loop.pins += 1

    def unpin(self, loop: StoredLoop) -> None:
        loop.pins = max(0, loop.pins - 1)
        self._evict()

    def _evict(self) -> None:
        total = self.size
        for loop_id in list(self._loops):
            if total <= self.max_bytes:
                return
            loop = self._loops[loop_id]
            if loop.pins == 0:
                total -= loop.size
                del self._loops[loop_id]
