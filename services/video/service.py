"""The VideoService: one long-lived Render stream per session; renders and encodes only what differs from idle.

Opening a stream admits it against the worker's measured capacity, prepares the avatar (an uploaded portrait is
prepared as PrepareAvatar does: cached by content, so any worker can serve any session), gets the avatar's idle loop
(built on first use, then shared), opens the session's PublishVideo stream to its packager (which receives the loop
once) and answers `ready`. From then on the session drives only the chunks around speech (`RenderStream`).

Uploaded portraits: PrepareAvatar (and a Render config carrying `portrait`) hand the bytes to the backends that can
prepare portraits (decode + face landmarks, off the event loop, a few at a time, in a pool of their own whose
permits last as long as the work: services.video.portraits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence

import grpc
from prometheus_client import Counter, Gauge, Histogram

from avatar.v1 import packager_pb2_grpc, video_pb2_grpc
from infinitetalk_live_client.avatar.v1 import video_pb2
from services.common.errors import abort_failed_precondition, abort_invalid_argument, abort_resource_exhausted
from services.common.lru import Lru
from services.common.stream import bidi_stream
from services.video.backend import AvatarInfo, AvatarRenderer, IdleLoop, PortraitBackend, RendererBackend
from services.video.capacity import CapacityMeter, available_cores
from services.video.drawn import DEFAULT_AVATAR, DrawnBackend
from services.video.encoding import EncoderSettings, FrameEncoder
from services.video.idle import loop_frames
from services.video.loops import LoopCache, LoopSpec
from services.video.portraits import PortraitPool
from services.video.publisher import PublishFailed, VideoPublisher
from services.video.render_stream import RenderStream, StreamParts, pace_of
from services.video.stream import check_config

log = logging.getLogger(__name__)

ACTIVE_STREAMS = Gauge("video_active_streams", "Render streams in progress (sessions on this worker)")
STREAM_CAPACITY = Gauge("video_stream_capacity", "Render streams this worker accepts at once (measured)")
SPEAKING_CAPACITY = Gauge("video_speaking_capacity", "Streams that may speak at once (measured)")
LOAD = Gauge(
    "video_load",
    "Share of the measured capacity in use: the larger of sessions / capacity and speaking / speaking capacity",
)
PORTRAITS = Counter(
    "video_portraits_prepared_total", "Portrait preparations by outcome (ok or the refusal reason)", ["outcome"]
)
PREPARE_SECONDS = Histogram(
    "video_portrait_prepare_seconds",
    "Time to prepare an uploaded portrait (a cache hit is fast)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

MAX_CONCURRENT_PREPARES = 2  # each decode of a large photo can hold ~100 MB and a core for a while
READY_TIMEOUT_S = 30.0  # building a new avatar's idle loop and handing it to the packager
MAX_PACKAGER_CHANNELS = 64
CHANNEL_OPTIONS = (("grpc.max_send_message_length", 16 * 2**20), ("grpc.max_receive_message_length", 16 * 2**20))


class VideoServicer(video_pb2_grpc.VideoServiceServicer):
    """Render streams over pluggable renderer backends (the drawn CPU avatar by default)."""

    def __init__(
        self,
        backends: Sequence[RendererBackend] | None = None,
        default_avatar: str = DEFAULT_AVATAR,
        max_queued_frames: int = 50,
        meter: CapacityMeter | None = None,
        max_concurrent_prepares: int = MAX_CONCURRENT_PREPARES,
        crf: int = 23,
        max_kbps: int = 3000,
        burn_clock: bool = False,
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
        self.meter = meter or CapacityMeter(
            budget_cores=0.75 * available_cores(), fps=25, speaking_share=0.25, max_streams=64, frame_cpu_s=0.008
        )
        self.crf = crf
        self.max_kbps = max_kbps
        self.burn_clock = burn_clock
        self.loops = LoopCache()
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._fps = 0.0
        self._streams: set[RenderStream] = set()
        self._opening = 0
        self._photo = [b for b in self.backends if isinstance(b, PortraitBackend)]
        self.portraits = PortraitPool(max_concurrent_prepares)
        self._packagers: Lru[str, packager_pb2_grpc.PackagerServiceStub] = Lru(
            MAX_PACKAGER_CHANNELS, on_evict=self._close_channel
        )
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def active(self) -> int:
        return len(self._streams) + self._opening

    @property
    def speaking_streams(self) -> int:
        return sum(1 for stream in self._streams if stream.speaking)

    def _update_gauges(self) -> tuple[int, int]:
        capacity, speaking = self.meter.capacity(), self.meter.speaking_capacity(self.active)
        STREAM_CAPACITY.set(capacity)
        SPEAKING_CAPACITY.set(speaking)
        ACTIVE_STREAMS.set(self.active)
        LOAD.set(max(self.active / max(capacity, 1), self.speaking_streams / max(speaking, 1)))
        return capacity, speaking

    # -- portraits ------------------------------------------------------------------------------------------------

    async def _prepare(self, data: bytes) -> AvatarInfo:
        """The prepared portrait (PortraitError when it cannot be animated); in the portrait pool, a few at a time."""
        return await self.portraits.run(self._prepare_blocking, data)

    def _prepare_blocking(self, data: bytes) -> AvatarInfo:
        """In a pool thread: counted by its real outcome, even when the request that asked has been cancelled."""
        started = time.perf_counter()
        try:
            info = self._photo[0].prepare_portrait(data)
        except ValueError as error:
            PORTRAITS.labels(getattr(error, "reason", "invalid")).inc()
            raise
        PORTRAITS.labels("ok").inc()
        PREPARE_SECONDS.observe(time.perf_counter() - started)
        return info

    async def _prepare_or_abort(self, data: bytes, field: str, context: grpc.aio.ServicerContext) -> AvatarInfo:
        if not self._photo:
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

    # -- status ---------------------------------------------------------------------------------------------------

    async def GetWorkerStatus(
        self, request: video_pb2.GetWorkerStatusRequest, context: grpc.aio.ServicerContext
    ) -> video_pb2.GetWorkerStatusResponse:
        meter = self.meter
        capacity, speaking_capacity = self._update_gauges()
        return video_pb2.GetWorkerStatusResponse(
            capacity=capacity,
            active_streams=self.active,
            worker_id=self.worker_id,
            frames_per_second=self._fps,
            speaking_capacity=speaking_capacity,
            speaking_streams=self.speaking_streams,
            cpu_budget_cores=meter.budget_cores,
            speaking_stream_cores=meter.speaking_stream_cores,
            idle_stream_cores=meter.idle_stream_cores,
        )

    async def ListAvatars(
        self, request: video_pb2.ListAvatarsRequest, context: grpc.aio.ServicerContext
    ) -> video_pb2.ListAvatarsResponse:
        return video_pb2.ListAvatarsResponse(
            avatars=[avatar for _, avatar in self._avatars.values()], default_avatar=self.default_avatar
        )

    # -- rendering ------------------------------------------------------------------------------------------------

    def _packager(self, address: str) -> packager_pb2_grpc.PackagerServiceStub:
        stub = self._packagers.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
            stub = packager_pb2_grpc.PackagerServiceStub(channel)
            self._packagers.put(address, stub)
        return stub

    def _close_channel(self, address: str, _stub: packager_pb2_grpc.PackagerServiceStub) -> None:
        asyncio.get_running_loop().create_task(self._channels.pop(address).close())

    @bidi_stream("Render")
    async def Render(
        self,
        config: video_pb2.RenderConfig,
        requests: AsyncIterator[video_pb2.RenderRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[video_pb2.RenderResponse]:
        check_config(config, list(self._avatars), self.default_avatar)
        capacity = self.meter.capacity()
        if self.active >= capacity:
            await abort_resource_exhausted(
                context,
                "video.streams",
                f"this video worker already serves {self.active} sessions, its measured capacity ({capacity} for "
                f"{self.meter.budget_cores:.1f} CPU cores); retry later",
            )
        self._opening += 1
        renderer: AvatarRenderer | None = None
        publisher: VideoPublisher | None = None
        stream: RenderStream | None = None
        try:
            if config.portrait:
                avatar = (await self._prepare_or_abort(config.portrait, "config.portrait", context)).name
                backend = self._photo[0]
            else:
                avatar = config.avatar or self.default_avatar
                backend, _ = self._avatars[avatar]
            settings = EncoderSettings(config.width, config.height, config.fps, self.crf, self.max_kbps)
            frames = loop_frames(config.fps, config.chunk_frames)
            spec = LoopSpec(backend, avatar, config.sample_rate_hz, frames, config.chunk_frames, settings)
            started = time.process_time()
            loop = await asyncio.wait_for(self.loops.get(spec), READY_TIMEOUT_S)
            self.meter.observe_work(time.process_time() - started)
            renderer = await asyncio.to_thread(
                backend.open,
                avatar,
                config.width,
                config.height,
                config.fps,
                config.sample_rate_hz,
                IdleLoop(frames, config.idle_phase_offset % frames),
            )
            encoder = FrameEncoder(settings)
            if (encoder.sps, encoder.pps) != (loop.sps, loop.pps):
                raise RuntimeError("the encoder's parameter sets differ from the idle loop's")
            publisher = VideoPublisher(
                self._packager(config.packager_address),
                config.stream_id or config.session_id,
                config.publish_token,
                loop,
                config.width,
                config.height,
                config.fps,
            )
            try:
                await publisher.open(READY_TIMEOUT_S)
            except PublishFailed as failure:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(failure))
            parts = StreamParts(backend.name, renderer, encoder, publisher, config, self.burn_clock)
            stream = RenderStream(parts, self.meter, self.max_queued_frames)
            self._streams.add(stream)
            self._opening -= 1
            self._changed()
            log.info(
                "render stream started",
                extra={"avatar": avatar, "width": config.width, "height": config.height, "loop": loop.loop_id},
            )
            ready = video_pb2.RenderReady(
                idle_loop_id=loop.loop_id,
                idle_loop_frames=frames,
                settle_frames=renderer.settle_frames,
                render_every_chunk=self.burn_clock,
            )
            yield video_pb2.RenderResponse(ready=ready)
            yield video_pb2.RenderResponse(status=pace_of(renderer))
            async for pace in stream.run(requests):
                self._fps = pace.frames_per_second
                yield video_pb2.RenderResponse(status=pace)
        finally:
            if stream is None:
                self._opening -= 1
            else:
                self._streams.discard(stream)
            self._changed()
            if publisher is not None:
                await publisher.close()
            if renderer is not None:
                with contextlib.suppress(Exception):
                    await renderer.close()
            log.info("render stream ended", extra={"frames_rendered": stream.frames if stream else 0})

    async def keep_gauges_fresh(self, every_s: float = 5.0) -> None:
        """Re-measures capacity and load now and then, so what an autoscaler scrapes is current."""
        while True:
            self._update_gauges()
            await asyncio.sleep(every_s)

    def _changed(self) -> None:
        self.meter.streams_changed(self.active)
        self._update_gauges()

    async def close(self) -> None:
        self.portraits.shutdown()
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
