"""The chunks a session's video worker rendered, held until the session commits them.

The worker renders ahead of playout and sends each chunk as soon as it is encoded; an interrupt may then change a
chunk's later frames, and the worker sends only those (from an IDR frame on), which are spliced onto the frames kept
from the version sent before. A commit asks for the chunk of one timeline epoch: it is handed over at once when it is
here, waited for until a deadline when it is not, and given up on ("late", or "lost" when no video stream feeds the
session) so that the loop can show instead. What a session may hold is bounded in bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.packager.loops import LoopError, check_chunk
from services.packager.muxer import VideoChunk


@dataclass(frozen=True)
class _Version:
    epoch: int
    chunk: VideoChunk

    @property
    def size(self) -> int:
        return sum(len(frame) for frame in self.chunk.frames)


class ChunkRejected(ValueError):
    """A rendered chunk that cannot be held; the message says why."""


class RenderedChunks:
    def __init__(self, chunk_frames: int, max_bytes: int) -> None:
        self.chunk_frames = chunk_frames
        self.max_bytes = max_bytes
        self.size = 0
        self.committed_until = 0  # frames before this were committed: their chunks are no longer wanted
        self.sources = 0  # video streams feeding this session now
        self._versions: dict[int, _Version] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._versions)

    def put(self, start: int, first: int, epoch: int, frames: Sequence[bytes]) -> bool:
        """Holds a chunk (or the later part of one); False when its commit has already passed. ChunkRejected when
        it is malformed, has nothing to splice onto, or would exceed the session's budget."""
        size = self.chunk_frames
        if start % size or not start <= first < start + size:
            raise ChunkRejected(f"chunk {start}/{first} does not line up with {size}-frame chunks")
        if start < self.committed_until:
            return False
        if len(frames) != start + size - first:
            raise ChunkRejected(f"chunk {start} from frame {first} needs {start + size - first} frames")
        if first > start:
            held = self._versions.get(start)
            if held is None:
                raise ChunkRejected(f"chunk {start} changed from frame {first}, but nothing of it was sent before")
            keep = first - start
            frames = [*held.chunk.frames[:keep], *frames]
        try:
            chunk = check_chunk(frames, size)
        except LoopError as error:
            raise ChunkRejected(str(error)) from None
        version = _Version(epoch, chunk)
        previous = self._versions.get(start)
        grown = version.size - (previous.size if previous else 0)
        if self.size + grown > self.max_bytes:
            raise ChunkRejected(
                f"the session already holds {self.size // 2**20} MiB of rendered chunks not yet due "
                f"(limit {self.max_bytes // 2**20} MiB)"
            )
        self._versions[start] = version
        self.size += grown
        self._changed.set()
        return True

    def wake(self) -> None:
        """Something changed for waiters (e.g. the video stream ended)."""
        self._changed.set()

    async def take(self, start: int, epoch: int, wait_s: float) -> VideoChunk | str:
        """The chunk at `start` of timeline `epoch`, or why not ("late", "lost") after waiting up to `wait_s`. Marks
        everything before the chunk's end as committed either way."""
        deadline = time.monotonic() + wait_s
        try:
            while True:
                version = self._versions.get(start)
                if version is not None and version.epoch == epoch:
                    return version.chunk
                if self.sources == 0:
                    return "lost"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "late"
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return "late"
        finally:
            self._commit(start + self.chunk_frames)

    def _commit(self, until: int) -> None:
        self.committed_until = max(self.committed_until, until)
        for old in [s for s in self._versions if s < self.committed_until]:
            self.size -= self._versions.pop(old).size
