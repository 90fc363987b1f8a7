"""The VideoService: one long-lived Render stream per session turns frame drives into avatar frames.

A reader task validates requests and feeds a bounded queue (back-pressure: when the renderer falls behind, the
queue fills, the reader stops reading and gRPC flow control slows the caller). The renderer consumes the queue on
worker threads, so several sessions in one process do not block each other or the event loop. A reset makes frames
of older epochs at/after its index stale: they are purged from the queue, skipped by the renderer and never emitted
after the reset has been read.

Uploaded portraits: PrepareAvatar (and a Render config carrying `portrait`) hand the bytes to the first backend
that can prepare portraits (decode + face landmarks, off the event loop, a few at a time). The backend caches by
content hash, so a stream that brings the same bytes after PrepareAvatar, on this worker or after a reconnection,
costs little; a worker that never saw them prepares them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from avatar.v1 import media_pb2, video_pb2, video_pb2_grpc
from services.common.errors import abort_failed_precondition, abort_invalid_argument, abort_resource_exhausted
from services.common.logs import session_id_var
from services.video.backend import AvatarInfo, AvatarRenderer, Drive, PhonemeSpan, RendererBackend, StaleFilter
from services.video.drawn import DEFAULT_AVATAR, DrawnBackend

log = logging.getLogger(__name__)

FRAMES_RENDERED = Counter("video_frames_rendered_total", "Frames rendered and sent", ["backend"])
RENDER_SECONDS = Histogram(
    "video_render_seconds",
    "Compute time per rendered frame",
    ["backend"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.25, 0.5, 1.0, 2.0),
)
STALE_FRAMES = Counter("video_stale_frames_dropped_total", "Drives or frames dropped because a reset superseded them")
RESETS = Counter("video_resets_total", "Timeline resets received")
ACTIVE_STREAMS = Gauge("video_active_streams", "Render streams in progress (sessions on this worker)")
STREAM_CAPACITY = Gauge("video_stream_capacity", "Render streams this worker accepts at once")
PORTRAITS = Counter(
    "video_portraits_prepared_total", "Portrait preparations by outcome (ok or the refusal reason)", ["outcome"]
)
PREPARE_SECONDS = Histogram(
    "video_portrait_prepare_seconds",
    "Time to prepare an uploaded portrait (a cache hit is fast)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

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
MAX_SESSION_ID_CHARS = 128
MAX_CONCURRENT_PREPARES = 2  # each decode of a large photo can hold ~100 MB and a core for a while


class BadRequest(Exception):
    """A request the stream cannot accept: ends the stream with INVALID_ARGUMENT naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def samples_in_frame(frame_index: int, sample_rate_hz: int, fps: int) -> int:
    """Samples of audio under one frame (exact even when sample_rate_hz / fps is not an integer)."""
    return (frame_index + 1) * sample_rate_hz // fps - frame_index * sample_rate_hz // fps


def check_config(config: video_pb2.RenderConfig, avatars: Sequence[str], default_avatar: str) -> None:
    """Raises BadRequest for a config the service cannot honour."""
    if len(config.session_id) > MAX_SESSION_ID_CHARS:
        raise BadRequest("config.session_id", f"session_id is longer than {MAX_SESSION_ID_CHARS} characters")
    for name, value in (("width", config.width), ("height", config.height)):
        if value % 2 or not MIN_SIZE <= value <= MAX_SIZE:
            raise BadRequest(
                f"config.{name}", f"{name} must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {value}"
            )
    if not MIN_FPS <= config.fps <= MAX_FPS:
        raise BadRequest("config.fps", f"fps must be from {MIN_FPS} to {MAX_FPS}, got {config.fps}")
    if not MIN_SAMPLE_RATE_HZ <= config.sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise BadRequest(
            "config.sample_rate_hz",
            f"sample_rate_hz must be from {MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ}, got {config.sample_rate_hz}",
        )
    if config.pixel_format not in (media_pb2.PIXEL_FORMAT_UNSPECIFIED, media_pb2.PIXEL_FORMAT_I420):
        try:
            name = media_pb2.PixelFormat.Name(config.pixel_format)
        except ValueError:
            name = str(config.pixel_format)
        raise BadRequest("config.pixel_format", f"pixel format {name} is not supported; use PIXEL_FORMAT_I420")
    if config.portrait and config.avatar:
        raise BadRequest(
            "config.portrait", "set either avatar or portrait, not both: a portrait becomes the stream's avatar"
        )
    if config.avatar and config.avatar not in avatars:
        if config.avatar.startswith("portrait-"):
            raise BadRequest(
                "config.avatar",
                f"{config.avatar!r} is an uploaded portrait: send its bytes in config.portrait (avatar left empty)",
            )
        raise BadRequest(
            "config.avatar",
            f"unknown avatar {config.avatar!r}; choose one of: {', '.join(avatars)} (empty selects {default_avatar})",
        )


@dataclass
class _StreamState:
    """What the reader knows about the stream's timeline: epochs, frame order, resets, and how it ended."""

    fps: int
    sample_rate_hz: int
    epoch: int | None = None
    last_index: int = -1
    error: BadRequest | None = None
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        self.stale = StaleFilter()

    def accept_frame(self, frame: video_pb2.FrameDrive) -> Drive | None:
        """The validated drive, or None when a reset already made it stale."""
        index = frame.frame_index
        if not 0 <= index <= MAX_FRAME_INDEX:
            raise BadRequest("frame.frame_index", f"frame_index must be from 0 to {MAX_FRAME_INDEX}, got {index}")
        if self.epoch is None or frame.epoch > self.epoch:
            # A newer epoch without a reset (e.g. a new stream replaying frames written before and after a cut):
            # nothing sent so far is at or after this index, so there is nothing to invalidate.
            self.epoch = frame.epoch
        elif frame.epoch < self.epoch and self.stale.is_stale(index, frame.epoch):
            return None
        if index <= self.last_index:
            raise BadRequest(
                "frame.frame_index",
                f"frame_index {index} does not follow {self.last_index}: frame indices must strictly increase "
                "(after a reset, from its from_frame_index on)",
            )
        expected = samples_in_frame(index, self.sample_rate_hz, self.fps)
        size = len(frame.pcm_s16le)
        if size not in (0, 2 * expected):
            raise BadRequest(
                "frame.pcm_s16le",
                f"frame {index} carries {size} bytes of audio; it needs exactly {2 * expected} bytes ({expected} "
                f"samples of s16le at {self.sample_rate_hz} Hz / {self.fps} fps) or none for silence",
            )
        if len(frame.utterance_id) > MAX_UTTERANCE_ID_CHARS:
            raise BadRequest("frame.utterance_id", f"utterance_id is longer than {MAX_UTTERANCE_ID_CHARS} characters")
        if len(frame.phonemes) > MAX_PHONEMES_PER_FRAME:
            raise BadRequest(
                "frame.phonemes", f"frame {index} has {len(frame.phonemes)} phonemes; at most {MAX_PHONEMES_PER_FRAME}"
            )
        phonemes = []
        for mark in frame.phonemes:
            if len(mark.phoneme) > MAX_PHONEME_CHARS:
                raise BadRequest("frame.phonemes.phoneme", f"phoneme is longer than {MAX_PHONEME_CHARS} characters")
            phonemes.append(PhonemeSpan(mark.phoneme, mark.start_us, max(mark.start_us, mark.end_us)))
        self.last_index = index
        pcm = np.frombuffer(frame.pcm_s16le, dtype="<i2") if size else None
        return Drive(index, frame.utterance_id, pcm, tuple(phonemes), frame.epoch)

    def accept_reset(self, reset: video_pb2.ResetTimeline) -> None:
        if not 0 <= reset.from_frame_index <= MAX_FRAME_INDEX:
            raise BadRequest(
                "reset.from_frame_index",
                f"from_frame_index must be from 0 to {MAX_FRAME_INDEX}, got {reset.from_frame_index}",
            )
        if self.epoch is not None and reset.epoch <= self.epoch:
            raise BadRequest(
                "reset.epoch", f"reset epoch {reset.epoch} must be greater than the stream's epoch {self.epoch}"
            )
        if self.epoch is not None:
            self.stale.add(reset.from_frame_index, reset.epoch)
        self.epoch = reset.epoch
        self.last_index = min(self.last_index, reset.from_frame_index - 1)


def _pace(renderer: AvatarRenderer) -> video_pb2.RenderStatus:
    return video_pb2.RenderStatus(
        frames_per_second=renderer.frames_per_second_capacity, lookahead_frames=renderer.lookahead_frames
    )


def _pace_changed(before: video_pb2.RenderStatus, now: video_pb2.RenderStatus) -> bool:
    """Worth telling the session: the lookahead changed, or the pace moved by more than 10%."""
    if before.lookahead_frames != now.lookahead_frames:
        return True
    return abs(now.frames_per_second - before.frames_per_second) > 0.1 * max(before.frames_per_second, 1e-6)


class _DriveQueue:
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


class VideoServicer(video_pb2_grpc.VideoServiceServicer):
    """Render streams over pluggable renderer backends (the drawn CPU avatar by default)."""

    def __init__(
        self,
        backends: Sequence[RendererBackend] | None = None,
        default_avatar: str = DEFAULT_AVATAR,
        max_queued_frames: int = 50,
        max_streams: int = 16,
        max_concurrent_prepares: int = MAX_CONCURRENT_PREPARES,
    ) -> None:
        self.backends = list(backends) if backends is not None else [DrawnBackend()]
        self._avatars: dict[str, tuple[RendererBackend, video_pb2.Avatar]] = {}
        for backend in self.backends:
            for info in backend.avatars():
                self._avatars.setdefault(
                    info.name,
                    (backend, video_pb2.Avatar(name=info.name, description=info.description, backend=info.backend)),
                )
        if default_avatar not in self._avatars:
            raise ValueError(f"default avatar {default_avatar!r} is not one of: {', '.join(self._avatars)}")
        self.default_avatar = default_avatar
        self.max_queued_frames = max_queued_frames
        self.max_streams = max_streams
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._fps = 0.0
        STREAM_CAPACITY.set(max_streams)
        self._active = 0
        self._photo = next((b for b in self.backends if callable(getattr(b, "prepare_portrait", None))), None)
        self._prepares = asyncio.Semaphore(max_concurrent_prepares)

    async def _prepare(self, data: bytes) -> AvatarInfo:
        """The prepared portrait (PortraitError when it cannot be animated); off the event loop, a few at a time."""
        assert self._photo is not None
        async with self._prepares:
            started = time.perf_counter()
            try:
                info = await asyncio.to_thread(self._photo.prepare_portrait, data)  # type: ignore[attr-defined]
            except ValueError as error:
                PORTRAITS.labels(getattr(error, "reason", "invalid")).inc()
                raise
            PORTRAITS.labels("ok").inc()
            PREPARE_SECONDS.observe(time.perf_counter() - started)
            return info

    async def _prepare_or_abort(self, data: bytes, field: str, context: grpc.aio.ServicerContext) -> AvatarInfo:
        if self._photo is None:
            await abort_failed_precondition(
                context, "video.portraits", "this video service cannot animate portraits (no photo renderer)"
            )
        try:
            return await self._prepare(data)
        except ValueError as error:  # PortraitError: a file we cannot animate, and why
            reason = getattr(error, "reason", "")
            message = getattr(error, "message", str(error))
            log.info("portrait refused", extra={"reason": reason, "bytes": len(data)})
            await abort_invalid_argument(context, field, message, reason=reason)

    async def PrepareAvatar(
        self, request: video_pb2.PrepareAvatarRequest, context: grpc.aio.ServicerContext
    ) -> video_pb2.PrepareAvatarResponse:
        info = await self._prepare_or_abort(request.image, "image", context)
        return video_pb2.PrepareAvatarResponse(
            avatar=video_pb2.Avatar(name=info.name, description=info.description, backend=info.backend)
        )

    async def GetWorkerStatus(
        self, request: video_pb2.GetWorkerStatusRequest, context: grpc.aio.ServicerContext
    ) -> video_pb2.GetWorkerStatusResponse:
        return video_pb2.GetWorkerStatusResponse(
            capacity=self.max_streams,
            active_streams=self._active,
            worker_id=self.worker_id,
            frames_per_second=self._fps,
        )

    async def ListAvatars(
        self, request: video_pb2.ListAvatarsRequest, context: grpc.aio.ServicerContext
    ) -> video_pb2.ListAvatarsResponse:
        return video_pb2.ListAvatarsResponse(
            avatars=[avatar for _, avatar in self._avatars.values()], default_avatar=self.default_avatar
        )

    async def Render(
        self, request_iterator: AsyncIterator[video_pb2.RenderRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[video_pb2.RenderResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("request") != "config":
            await abort_invalid_argument(context, "config", "the first message of a Render stream must be config")
        config = first.config
        try:
            check_config(config, list(self._avatars), self.default_avatar)
        except BadRequest as bad:
            await abort_invalid_argument(context, bad.field, bad.message)
        if not session_id_var.get() and config.session_id:
            session_id_var.set(config.session_id[:64])
        if self._active >= self.max_streams:
            await abort_resource_exhausted(
                context, "video.streams", f"this video service already renders {self.max_streams} streams; retry later"
            )
        if config.portrait:
            backend = self._photo
            avatar = (await self._prepare_or_abort(config.portrait, "config.portrait", context)).name
        else:
            avatar = config.avatar or self.default_avatar
            backend, _ = self._avatars[avatar]
        seed = zlib.crc32((config.session_id or session_id_var.get() or "video").encode())
        self._active += 1
        ACTIVE_STREAMS.inc()
        renderer: AvatarRenderer | None = None
        reader: asyncio.Task | None = None
        sent = 0
        try:
            renderer = await asyncio.to_thread(
                backend.open, avatar, config.width, config.height, config.fps, config.sample_rate_hz, seed
            )
            log.info(
                "render stream started",
                extra={"avatar": avatar, "width": config.width, "height": config.height, "fps": config.fps},
            )
            state = _StreamState(config.fps, config.sample_rate_hz)
            queue = _DriveQueue(self.max_queued_frames)
            reader = asyncio.create_task(self._read(request_iterator, state, queue, renderer))
            reported = _pace(renderer)
            since_report = 0
            yield video_pb2.RenderResponse(status=reported)
            async with contextlib.aclosing(renderer.render(queue.drives(state.stale))) as frames:
                async for frame in frames:
                    if state.stale.is_stale(frame.frame_index, frame.epoch):
                        STALE_FRAMES.inc()
                        continue
                    FRAMES_RENDERED.labels(backend.name).inc()
                    RENDER_SECONDS.labels(backend.name).observe(frame.render_s)
                    self._fps = renderer.frames_per_second_capacity
                    since_report += 1
                    pace = _pace(renderer)
                    if since_report >= config.fps and _pace_changed(reported, pace):
                        reported, since_report = pace, 0
                        yield video_pb2.RenderResponse(status=pace)
                    sent += 1
                    yield video_pb2.RenderResponse(
                        frame=media_pb2.VideoFrame(
                            frame_index=frame.frame_index,
                            pts_us=frame.frame_index * 1_000_000 // config.fps,
                            width=config.width,
                            height=config.height,
                            pixel_format=media_pb2.PIXEL_FORMAT_I420,
                            data=frame.data,
                            epoch=frame.epoch,
                        )
                    )
            await reader
            if state.failure is not None:
                raise state.failure
            if state.error is not None:
                await abort_invalid_argument(context, state.error.field, state.error.message)
        finally:
            if reader is not None and not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if renderer is not None:
                await renderer.close()
            self._active -= 1
            ACTIVE_STREAMS.dec()
            log.info("render stream ended", extra={"frames_sent": sent})

    async def _read(
        self,
        requests: AsyncIterator[video_pb2.RenderRequest],
        state: _StreamState,
        queue: _DriveQueue,
        renderer: AvatarRenderer,
    ) -> None:
        """Validates requests and feeds the queue; records why it stopped in `state`."""
        discard = False
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "frame":
                    drive = state.accept_frame(request.frame)
                    if drive is None:
                        STALE_FRAMES.inc()
                    else:
                        await queue.put(drive)
                elif kind == "reset":
                    state.accept_reset(request.reset)
                    RESETS.inc()
                    STALE_FRAMES.inc(await queue.purge(state.stale))
                    await renderer.reset(request.reset.from_frame_index, request.reset.epoch)
                elif kind == "config":
                    raise BadRequest("config", "config may only be sent once, as the first message of the stream")
                else:
                    raise BadRequest("request", "empty request: set frame or reset")
        except BadRequest as bad:
            state.error = bad
            discard = True
        except asyncio.CancelledError:
            discard = True
            raise
        except Exception as error:  # the request stream failed (e.g. an unparseable message): end the stream with it
            state.failure = error
            discard = True
        finally:
            await queue.close(discard=discard)
