"""One session's Render stream once it is admitted: drives in, encoded chunks out to the packager.

A reader task validates requests; resets make older drives stale at once (the stale filter is checked before any
drive is rendered) and reach the renderer and the chunk assembler in order with the drives. Each rendered frame is
encoded as soon as it comes out and a finished chunk goes to the packager. What the frames cost (CPU time of
rendering and encoding) feeds the worker's capacity measurement.

Frame-by-frame renderers (the CPU avatars) run on a thread of the stream's own: it takes drives and resets from a
queue, renders and encodes each frame and hands the event loop only finished chunks, so a speaking stream costs one
cross-thread wake-up per drive instead of several executor round trips per frame, and an idle stream's thread just
sleeps. Other renderers (chunked models) are async generators and are driven on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from infinitetalk_live_client.avatar.v1 import video_pb2
from services.common.stream import InvalidRequest
from services.video.backend import AvatarRenderer, Drive, FrameByFrameRenderer, RenderedFrame
from services.video.capacity import CapacityMeter
from services.video.chunker import Chunk, ChunkAssembler
from services.video.clock_burn import burn_clock
from services.video.encoding import FrameEncoder
from services.video.publisher import VideoPublisher
from services.video.stream import STALE_FRAMES, DriveQueue, StreamState

log = logging.getLogger(__name__)

FRAMES_RENDERED = Counter("video_frames_rendered_total", "Frames rendered and encoded for sessions", ["backend"])
CHUNKS_PUBLISHED = Counter("video_chunks_published_total", "Encoded chunks sent to packagers")
RENDER_SECONDS = Histogram(
    "video_render_seconds",
    "Time to render one frame",
    ["backend"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.25, 0.5, 1.0, 2.0),
)
RESETS = Counter("video_resets_total", "Timeline resets received")
SPEAKING_HOLD_S = 1.0  # a stream counts as speaking this long after its last speech frame


def pace_of(renderer: AvatarRenderer) -> video_pb2.RenderStatus:
    return video_pb2.RenderStatus(
        frames_per_second=renderer.frames_per_second_capacity, lookahead_frames=renderer.lookahead_frames
    )


def pace_changed(before: video_pb2.RenderStatus, now: video_pb2.RenderStatus) -> bool:
    """Worth telling the session: the lookahead changed, or the pace moved by more than 10%."""
    if before.lookahead_frames != now.lookahead_frames:
        return True
    return abs(now.frames_per_second - before.frames_per_second) > 0.1 * max(before.frames_per_second, 1e-6)


@dataclass
class StreamParts:
    backend_name: str
    renderer: AvatarRenderer
    encoder: FrameEncoder
    publisher: VideoPublisher
    config: video_pb2.RenderConfig
    burn_clock: bool


@dataclass(frozen=True)
class _Reset:
    from_frame_index: int
    epoch: int


class RenderStream:
    def __init__(self, parts: StreamParts, meter: CapacityMeter, max_queued_frames: int) -> None:
        self.parts = parts
        self.meter = meter
        config = parts.config
        self.state = StreamState(config.fps, config.sample_rate_hz)
        self.max_queued_frames = max_queued_frames
        self.assembler = ChunkAssembler(config.chunk_frames, parts.encoder.encode)
        self._clock_epoch_ms: int | None = None
        self.last_speech_at = 0.0
        self.frames = 0
        self._loop = asyncio.get_running_loop()
        self._paces: asyncio.Queue[video_pb2.RenderStatus] = asyncio.Queue()
        self._reported = pace_of(parts.renderer)
        self._since_report = 0

    @property
    def speaking(self) -> bool:
        return time.monotonic() - self.last_speech_at < SPEAKING_HOLD_S

    async def run(self, requests: AsyncIterator[video_pb2.RenderRequest]) -> AsyncIterator[video_pb2.RenderStatus]:
        """Renders until the session ends the stream; yields the renderer's pace whenever it changes."""
        renderer = self.parts.renderer
        if isinstance(renderer, FrameByFrameRenderer):
            work = asyncio.ensure_future(self._run_threaded(renderer, requests))
        else:
            work = asyncio.ensure_future(self._run_async(renderer, requests))
        try:
            while True:
                pace = asyncio.ensure_future(self._paces.get())
                done, _ = await asyncio.wait({work, pace}, return_when=asyncio.FIRST_COMPLETED)
                if pace in done:
                    yield pace.result()
                    continue
                pace.cancel()
                while not self._paces.empty():
                    yield self._paces.get_nowait()
                work.result()
                break
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
        if self.state.failure is not None:
            raise self.state.failure
        if self.state.error is not None:
            raise self.state.error

    # -- per frame (on whichever thread renders) ------------------------------------------------------------------

    def _finish_frame(self, frame: RenderedFrame, publish: Callable[[Chunk], None]) -> None:
        """Encodes a rendered frame (clock burned in when asked); a finished chunk goes to `publish`."""
        data = frame.data
        config = self.parts.config
        if self.parts.burn_clock and self._clock_epoch_ms is not None:
            live_ms = self._clock_epoch_ms + frame.frame_index * 1000 // config.fps
            data = burn_clock(data, config.width, config.height, live_ms)
        started = time.thread_time()
        chunk = self.assembler.add(frame.frame_index, frame.epoch, data)
        self.meter.observe_frame(frame.cpu_s + time.thread_time() - started)
        self.frames += 1
        FRAMES_RENDERED.labels(self.parts.backend_name).inc()
        RENDER_SECONDS.labels(self.parts.backend_name).observe(frame.render_s)
        if chunk is not None:
            CHUNKS_PUBLISHED.inc()
            publish(chunk)
        self._since_report += 1
        if self._since_report >= config.fps:
            pace = pace_of(self.parts.renderer)
            if pace_changed(self._reported, pace):
                self._reported, self._since_report = pace, 0
                self._loop.call_soon_threadsafe(self._paces.put_nowait, pace)

    # -- frame-by-frame renderers: one thread per stream ------------------------------------------------------------

    async def _run_threaded(
        self, renderer: FrameByFrameRenderer, requests: AsyncIterator[video_pb2.RenderRequest]
    ) -> None:
        inbox: queue.SimpleQueue[Drive | _Reset | None] = queue.SimpleQueue()
        room = threading.Semaphore(self.max_queued_frames)
        finished: asyncio.Future[None] = self._loop.create_future()

        def settle(error: BaseException | None) -> None:
            if not finished.done():
                finished.set_exception(error) if error is not None else finished.set_result(None)

        def publish(chunk: Chunk) -> None:
            self._loop.call_soon_threadsafe(self.parts.publisher.send, chunk)

        def work() -> None:
            error: BaseException | None = None
            try:
                while (item := inbox.get()) is not None:
                    if isinstance(item, _Reset):
                        renderer.reset_now(item.from_frame_index, item.epoch)
                        self.assembler.reset(item.from_frame_index)
                        continue
                    try:
                        if self.state.stale.is_stale(item.frame_index, item.epoch):
                            STALE_FRAMES.inc()
                            continue
                        frame = renderer.render_one(item)
                        # A reset may have come while it was drawn: then it is not encoded.
                        if frame is not None and not self.state.stale.is_stale(frame.frame_index, frame.epoch):
                            self._finish_frame(frame, publish)
                    finally:
                        room.release()
            except BaseException as failure:  # surfaces in run()
                error = failure
            self._loop.call_soon_threadsafe(settle, error)

        thread = threading.Thread(target=work, name=f"render-{self.parts.config.session_id[:6]}", daemon=True)
        thread.start()

        async def put(drive: Drive) -> None:
            if not room.acquire(blocking=False):  # full: wait off the loop (back-pressure reaches the session)
                await asyncio.to_thread(room.acquire)
            inbox.put(drive)

        def reset(item: _Reset) -> None:
            inbox.put(item)

        try:
            await self._read(requests, put, reset)
        finally:
            inbox.put(None)
        await finished

    # -- other renderers: async generators on the event loop --------------------------------------------------------

    async def _run_async(self, renderer: AvatarRenderer, requests: AsyncIterator[video_pb2.RenderRequest]) -> None:
        drives = DriveQueue(self.max_queued_frames)
        resets: list[int] = []
        discard = False

        async def put(drive: Drive) -> None:
            await drives.put(drive)

        def reset(item: _Reset) -> None:
            resets.append(item.from_frame_index)

        async def read() -> None:
            nonlocal discard
            try:
                await self._read(requests, put, reset, renderer, drives)
            except BaseException:
                discard = True
                raise
            finally:
                await drives.close(discard=discard or self.state.error is not None or self.state.failure is not None)

        reader = asyncio.create_task(read(), name="render-reader")
        try:
            async with contextlib.aclosing(renderer.render(drives.drives(self.state.stale))) as frames:
                async for frame in frames:
                    if self.state.stale.is_stale(frame.frame_index, frame.epoch):
                        STALE_FRAMES.inc()
                        continue
                    pending, resets[:] = list(resets), []
                    for from_frame in pending:
                        self.assembler.reset(from_frame)
                    published: list[Chunk] = []
                    await asyncio.to_thread(self._finish_frame, frame, published.append)
                    for chunk in published:
                        self.parts.publisher.send(chunk)
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    # -- requests ---------------------------------------------------------------------------------------------------

    async def _read(
        self,
        requests: AsyncIterator[video_pb2.RenderRequest],
        put: Callable[[Drive], object],
        reset: Callable[[_Reset], None],
        renderer: AvatarRenderer | None = None,
        drives: DriveQueue | None = None,
    ) -> None:
        """Validates requests and hands drives and resets on; records why it stopped in `state`."""
        state = self.state
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "frame":
                    drive = state.accept_frame(request.frame)
                    if drive is None:
                        STALE_FRAMES.inc()
                        continue
                    if drive.utterance_id:
                        self.last_speech_at = time.monotonic()
                    await put(drive)  # type: ignore[misc]
                elif kind == "reset":
                    state.accept_reset(request.reset)
                    RESETS.inc()
                    reset(_Reset(request.reset.from_frame_index, request.reset.epoch))
                    if drives is not None and renderer is not None:
                        STALE_FRAMES.inc(await drives.purge(state.stale))
                        await renderer.reset(request.reset.from_frame_index, request.reset.epoch)
                elif kind == "clock":
                    epoch = request.clock.media_epoch
                    self._clock_epoch_ms = epoch.seconds * 1000 + epoch.nanos // 1_000_000
                elif kind == "config":
                    raise InvalidRequest("config", "config may only be sent once, as the first message of the stream")
                else:
                    raise InvalidRequest("request", "empty request: set frame, reset or clock")
        except InvalidRequest as bad:
            state.error = bad
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the request stream failed (e.g. an unparseable message): end the stream with it
            state.failure = error
