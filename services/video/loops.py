"""Each avatar's idle loop, rendered and encoded once per worker and shared by every session of that avatar.

A loop is `frames` frames (a whole number of chunks) of idle drives rendered by a fresh renderer from phase 0 and
encoded chunk by chunk, each chunk starting with an IDR frame. Its id is a hash of the encoded content
(`services.common.h264.loop_content_id`), which is how the packager names it too. Building one costs a few seconds
of one core on first use of an avatar at a size; loops are kept (least recently used out) and built one at a time,
and two sessions asking for the same loop share one build.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import Counter

from services.common.h264 import loop_content_id
from services.common.lru import Lru
from services.video.backend import Drive, IdleLoop, RendererBackend
from services.video.chunker import ChunkAssembler
from services.video.encoding import EncoderSettings, FrameEncoder

log = logging.getLogger(__name__)

LOOPS_BUILT = Counter("video_idle_loops_built_total", "Idle loops rendered and encoded (once per avatar and size)")


@dataclass(frozen=True)
class EncodedLoop:
    loop_id: str
    frames: int
    chunk_frames: int
    sps: bytes
    pps: bytes
    chunks: tuple[tuple[bytes, ...], ...]
    build_seconds: float

    @property
    def size(self) -> int:
        return sum(len(frame) for chunk in self.chunks for frame in chunk)


@dataclass(frozen=True)
class LoopSpec:
    backend: RendererBackend
    avatar: str
    sample_rate_hz: int
    frames: int
    chunk_frames: int
    encoder: EncoderSettings

    @property
    def key(self) -> tuple:
        e = self.encoder
        return (self.backend.loop_key(self.avatar), e.width, e.height, e.fps, self.frames, self.chunk_frames, e.key)


async def build_loop(spec: LoopSpec) -> EncodedLoop:
    """Renders and encodes one loop (CPU work on worker threads)."""
    started = time.process_time()
    settings = spec.encoder
    renderer = await asyncio.to_thread(
        spec.backend.open,
        spec.avatar,
        settings.width,
        settings.height,
        settings.fps,
        spec.sample_rate_hz,
        IdleLoop(spec.frames, 0),
    )
    encoder = FrameEncoder(settings)
    assembler = ChunkAssembler(spec.chunk_frames, encoder.encode)
    chunks: list[tuple[bytes, ...]] = []

    async def idle_drives() -> AsyncIterator[Drive]:
        for index in range(spec.frames):
            yield Drive(index)

    try:
        async for frame in renderer.render(idle_drives()):
            chunk = await asyncio.to_thread(assembler.add, frame.frame_index, frame.epoch, frame.data)
            if chunk is not None:
                chunks.append(chunk.frames)
    finally:
        await renderer.close()
    if len(chunks) * spec.chunk_frames != spec.frames:
        raise RuntimeError(
            f"the idle loop came out {len(chunks)} chunks long, expected {spec.frames // spec.chunk_frames}"
        )
    loop_id = loop_content_id(
        settings.width, settings.height, settings.fps, spec.chunk_frames, encoder.sps, encoder.pps, chunks
    )
    loop = EncodedLoop(
        loop_id, spec.frames, spec.chunk_frames, encoder.sps, encoder.pps, tuple(chunks), time.process_time() - started
    )
    log.info(
        "idle loop built",
        extra={"avatar": spec.avatar, "loop": loop_id, "frames": spec.frames, "bytes": loop.size},
    )
    return loop


class LoopCache:
    """Built loops by spec, least recently used out past `max_loops`; one build at a time."""

    def __init__(self, max_loops: int = 32) -> None:
        self._loops: Lru[tuple, EncodedLoop] = Lru(max_loops)
        self._building: dict[tuple, asyncio.Task[EncodedLoop]] = {}
        self._one_at_a_time = asyncio.Semaphore(1)
        self.builds = 0

    @property
    def max_loops(self) -> int | None:
        return self._loops.max_items

    @max_loops.setter
    def max_loops(self, value: int) -> None:
        self._loops.max_items = value

    async def get(self, spec: LoopSpec) -> EncodedLoop:
        key = spec.key
        loop = self._loops.get(key)
        if loop is not None:
            return loop
        task = self._building.get(key)
        if task is None:
            task = self._building[key] = asyncio.create_task(self._build(key, spec), name="idle-loop-build")
        return await asyncio.shield(task)

    async def _build(self, key: tuple, spec: LoopSpec) -> EncodedLoop:
        try:
            async with self._one_at_a_time:
                loop = await build_loop(spec)
            self.builds += 1
            LOOPS_BUILT.inc()
            self._loops.put(key, loop)
            return loop
        finally:
            self._building.pop(key, None)
