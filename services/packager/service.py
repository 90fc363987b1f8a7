"""PackagerService: one Publish stream per session turns frames + PCM into a live fMP4 HLS playlist.

Each stream has its own encoder on its own worker thread (a one-thread executor: jobs run in order, nothing blocks
the event loop). Jobs are submitted as frames arrive; their results are put on the HLS store and reported to the
caller from done-callbacks on the loop, so a segment is on the playlist before its SegmentPublished goes out, and
nothing is lost when the caller goes away mid-stream. However the stream stops (end, half-close, error, cancel,
server shutdown) the partial segment is flushed, the playlist gets ENDLIST and the encoder is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from avatar.v1 import media_pb2, packager_pb2, packager_pb2_grpc
from services.common.errors import abort_invalid_argument, abort_resource_exhausted
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.packager.clock_burn import burn_clock
from services.packager.config import PackagerConfig
from services.packager.encoder import AAC_SAMPLE_RATES, EncodedSegment, EncoderSettings, SessionEncoder
from services.packager.playlist import segment_uri
from services.packager.store import HlsStore, HlsStream, StreamExists, valid_session_id

log = logging.getLogger(__name__)

MAX_IN_FLIGHT_FRAMES = 8  # frames accepted but not yet encoded, per stream (then gRPC flow control pushes back)
SHUTDOWN_WAIT_S = 5.0

FRAMES_IN = Counter("packager_frames_total", "Frames received for encoding")
SEGMENTS_PUBLISHED = Counter("packager_segments_total", "Media segments put on playlists")
SEGMENT_BYTES = Counter("packager_segment_bytes_total", "Bytes of media segments produced")
ENCODE_SECONDS = Histogram(
    "packager_encode_seconds",
    "Encode time of one frame (video + audio + segment cut)",
    buckets=(0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256),
)
LIVE_STREAMS = Gauge("packager_live_streams", "Publish streams holding an encoder")


def playlist_path(session_id: str) -> str:
    return f"/hls/{session_id}/index.m3u8"


class InvalidRequest(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def settings_from_config(config: packager_pb2.PublishConfig, defaults: PackagerConfig) -> EncoderSettings:
    """Validates a PublishConfig; raises InvalidRequest naming the first bad field."""
    if not valid_session_id(config.session_id):
        raise InvalidRequest("config.session_id", "session_id must be 16-64 characters from A-Z a-z 0-9 _ -")
    for name, value in (("width", config.width), ("height", config.height)):
        if not 64 <= value <= 1920 or value % 2:
            raise InvalidRequest(f"config.{name}", f"{name} must be an even number from 64 to 1920, got {value}")
    if not 1 <= config.fps <= 60:
        raise InvalidRequest("config.fps", f"fps must be 1 to 60, got {config.fps}")
    rate = config.sample_rate_hz
    if not 8000 <= rate <= 48000 or rate not in AAC_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in sorted(AAC_SAMPLE_RATES))
        raise InvalidRequest("config.sample_rate_hz", f"sample_rate_hz must be one of {rates}, got {rate}")
    if rate % config.fps:
        raise InvalidRequest(
            "config.sample_rate_hz",
            f"sample_rate_hz {rate} is not a whole number of samples per frame at {config.fps} fps",
        )
    duration_ms = config.segment_duration_ms
    if not 200 <= duration_ms <= 1000:
        raise InvalidRequest(
            "config.segment_duration_ms", f"segment_duration_ms must be 200 to 1000, got {duration_ms}"
        )
    if duration_ms * config.fps % 1000:
        raise InvalidRequest(
            "config.segment_duration_ms",
            f"segment_duration_ms {duration_ms} is not a whole number of frames at {config.fps} fps",
        )
    if not config.HasField("media_epoch") or config.media_epoch.seconds <= 0:
        raise InvalidRequest("config.media_epoch", "media_epoch (wall-clock time of media time 0) is required")
    return EncoderSettings(
        width=config.width,
        height=config.height,
        fps=config.fps,
        sample_rate=rate,
        frames_per_segment=duration_ms * config.fps // 1000,
        crf=defaults.crf,
        max_kbps=defaults.max_kbps,
        audio_bit_rate=defaults.audio_bit_rate,
        threads=defaults.encoder_threads,
    )


def check_frame(frame: packager_pb2.MediaFrame, expected_index: int, settings: EncoderSettings) -> bool:
    """Validates one MediaFrame; returns whether the video is RGB24 (else I420). Raises InvalidRequest."""
    if not frame.HasField("video"):
        raise InvalidRequest("frame.video", f"frame {expected_index} has no video")
    video = frame.video
    if video.frame_index != expected_index:
        raise InvalidRequest(
            "frame.video.frame_index",
            f"frame_index {video.frame_index} is out of order: expected {expected_index} (consecutive from 0)",
        )
    if video.width != settings.width or video.height != settings.height:
        raise InvalidRequest(
            "frame.video",
            f"frame {expected_index} is {video.width}x{video.height}, the stream is {settings.width}x{settings.height}",
        )
    if video.pixel_format == media_pb2.PIXEL_FORMAT_I420:
        rgb24, size = False, settings.i420_bytes
    elif video.pixel_format == media_pb2.PIXEL_FORMAT_RGB24:
        rgb24, size = True, settings.width * settings.height * 3
    else:
        raise InvalidRequest("frame.video.pixel_format", f"frame {expected_index}: pixel_format must be I420 or RGB24")
    if len(video.data) != size:
        raise InvalidRequest(
            "frame.video.data", f"frame {expected_index} has {len(video.data)} bytes of video, expected {size}"
        )
    pcm_bytes = 2 * settings.samples_per_frame
    if len(frame.pcm_s16le) != pcm_bytes:
        raise InvalidRequest(
            "frame.pcm_s16le",
            f"frame {expected_index} has {len(frame.pcm_s16le)} bytes of PCM, expected {pcm_bytes} "
            f"({settings.samples_per_frame} samples s16le)",
        )
    return rgb24


@dataclass(frozen=True)
class _Ready:
    pass


@dataclass(frozen=True)
class _Ended:
    segment_count: int


@dataclass(frozen=True)
class _Failed:
    """The encoder failed (INTERNAL)."""

    error: BaseException


@dataclass(frozen=True)
class _ReaderFailed:
    """Reading the request stream failed or found a bad request."""

    error: BaseException


@dataclass(frozen=True)
class _Shutdown:
    pass


_Event = _Ready | EncodedSegment | _Ended | _Failed | _ReaderFailed | _Shutdown


class _Publication:
    """One Publish stream: its encoder (touched only on the worker thread), the HLS stream and the event queue."""

    def __init__(self, settings: EncoderSettings, stream: HlsStream, store: HlsStore, on_done: Callable[[], None]):
        self.settings = settings
        self.stream = stream
        self.store = store
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT_FRAMES)
        self.done = asyncio.Event()
        self.finishing = False
        self._on_done = on_done
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"packager-{stream.session_id[:8]}")
        self._encoder: SessionEncoder | None = None
        self._failed = False
        self._frames = 0
        self.clock_epoch_us: int | None = None  # set: burn each frame's live wall-clock time into it

    # -- loop side ------------------------------------------------------------------------------------------------

    def _submit(self, job: Callable[..., Any], on_done: Callable[[Future], None], *args: Any) -> None:
        def hand_back(future: Future) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed (process exit): nobody to tell
                self._loop.call_soon_threadsafe(on_done, future)

        self._executor.submit(job, *args).add_done_callback(hand_back)

    def open(self) -> None:
        self._submit(self._open_job, self._opened)

    def frame(self, video: bytes, pcm: bytes, speech: bool, rgb24: bool) -> None:
        self._submit(self._frame_job, self._encoded, video, pcm, speech, rgb24)

    def finish(self) -> None:
        """Flushes the partial segment, ends the playlist and frees the encoder, after the frames already queued."""
        if self.finishing:
            return
        self.finishing = True
        self._submit(self._finish_job, self._finished)

    def _opened(self, future: Future) -> None:
        error = future.exception()
        if error is not None:
            self._fail(error)
            return
        self.store.set_init(self.stream, future.result())
        self.events.put_nowait(_Ready())

    def _encoded(self, future: Future) -> None:
        self.slots.release()
        error = future.exception()
        if error is not None:
            self._fail(error)
            return
        self._publish(future.result())

    def _finished(self, future: Future) -> None:
        try:
            error = future.exception()
            if error is None:
                self._publish(future.result())
            else:
                log.error("final flush failed", exc_info=error, extra={"session_id": self.stream.session_id})
        finally:
            self.store.end(self.stream)
            self._executor.shutdown(wait=False)
            self.events.put_nowait(_Ended(self.stream.playlist.next_sequence))
            self.done.set()
            self._on_done()

    def _publish(self, segments: list[EncodedSegment]) -> None:
        for segment in segments:
            if self._failed:
                return
            try:
                self.store.add_segment(
                    self.stream, segment.sequence, segment.start_us, segment.duration_us, segment.data
                )
            except ValueError as error:
                self._fail(error)
                return
            SEGMENTS_PUBLISHED.inc()
            SEGMENT_BYTES.inc(len(segment.data))
            self.events.put_nowait(segment)

    def _fail(self, error: BaseException) -> None:
        if not self._failed:
            self._failed = True
            log.error("encoding failed", exc_info=error, extra={"session_id": self.stream.session_id})
            self.events.put_nowait(_Failed(error))

    # -- worker thread side -----------------------------------------------------------------------------------------

    def _open_job(self) -> bytes:
        self._encoder = SessionEncoder(self.settings)
        return self._encoder.init_segment

    def _frame_job(self, video: bytes, pcm: bytes, speech: bool, rgb24: bool) -> list[EncodedSegment]:
        if self._encoder is None or self._failed:
            return []
        started = time.perf_counter()
        if self.clock_epoch_us is not None and not rgb24:
            settings = self.settings
            live_us = self.clock_epoch_us + self._frames * 1_000_000 // settings.fps
            video = burn_clock(video, settings.width, settings.height, live_us // 1000)
        self._frames += 1
        segments = self._encoder.add_frame(video, pcm, speech, rgb24)
        ENCODE_SECONDS.observe(time.perf_counter() - started)
        return segments

    def _finish_job(self) -> list[EncodedSegment]:
        encoder, self._encoder = self._encoder, None
        if encoder is None:
            return []
        try:
            return [] if self._failed else encoder.finish()
        finally:
            encoder.close()


class PackagerServicer(packager_pb2_grpc.PackagerServiceServicer):
    def __init__(self, config: PackagerConfig, store: HlsStore) -> None:
        self.config = config
        self.store = store
        self._publications: dict[str, _Publication] = {}
        self._shutting_down = False

    @property
    def live_streams(self) -> int:
        return len(self._publications)

    async def Publish(
        self, request_iterator: AsyncIterator[packager_pb2.PublishRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[packager_pb2.PublishResponse]:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            await abort_invalid_argument(context, "config", "the stream ended before its first message (config)")
        if first.WhichOneof("request") != "config":
            await abort_invalid_argument(context, "config", "the first message of a Publish stream must be config")
        try:
            settings = settings_from_config(first.config, self.config)
        except InvalidRequest as problem:
            await abort_invalid_argument(context, problem.field, problem.message)
        session_id = first.config.session_id
        caller_id = dict(context.invocation_metadata() or ()).get(SESSION_ID_METADATA_KEY)
        if caller_id and caller_id != session_id:
            await abort_invalid_argument(
                context, "config.session_id", f"config.session_id differs from the {SESSION_ID_METADATA_KEY} metadata"
            )
        if self._shutting_down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the packager is shutting down")
        if self.store.get(session_id) is not None:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} already has a playlist (live or recently ended)"
            )
        if len(self._publications) >= self.config.max_streams:
            await abort_resource_exhausted(
                context, "packager streams", f"the packager already has {self.config.max_streams} streams; try later"
            )
        epoch = first.config.media_epoch
        try:
            stream = self.store.open(
                session_id,
                epoch.seconds * 1_000_000 + epoch.nanos // 1000,
                settings.frames_per_segment * 1_000_000 // settings.fps,
            )
        except StreamExists:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} already has a playlist (live or recently ended)"
            )

        publication = _Publication(settings, stream, self.store, lambda: self._closed(publication))
        if self.config.burn_clock:
            publication.clock_epoch_us = epoch.seconds * 1_000_000 + epoch.nanos // 1000
        self._publications[session_id] = publication
        LIVE_STREAMS.inc()
        log.info(
            "publish started",
            extra={
                "width": settings.width,
                "height": settings.height,
                "fps": settings.fps,
                "frames_per_segment": settings.frames_per_segment,
            },
        )
        reader: asyncio.Task[None] | None = None
        try:
            publication.open()
            while True:
                event = await publication.events.get()
                if isinstance(event, _Ready):
                    yield packager_pb2.PublishResponse(
                        ready=packager_pb2.PlaylistReady(playlist_path=playlist_path(session_id))
                    )
                    reader = asyncio.create_task(
                        self._read(requests, publication), name=f"packager-read-{session_id[:8]}"
                    )
                elif isinstance(event, EncodedSegment):
                    yield packager_pb2.PublishResponse(segment=_segment_message(event))
                elif isinstance(event, _Ended):
                    log.info("publish ended", extra={"segments": event.segment_count})
                    yield packager_pb2.PublishResponse(
                        ended=packager_pb2.PlaylistEnded(segment_count=event.segment_count)
                    )
                    return
                elif isinstance(event, _Shutdown):
                    if reader is not None:
                        reader.cancel()
                    publication.finish()
                elif isinstance(event, _ReaderFailed):
                    if isinstance(event.error, InvalidRequest):
                        await abort_invalid_argument(context, event.error.field, event.error.message)
                    raise event.error
                elif isinstance(event, _Failed):
                    await context.abort(grpc.StatusCode.INTERNAL, "encoding failed; the playlist was ended")
        finally:
            if reader is not None:
                reader.cancel()
            publication.finish()

    async def _read(self, requests: AsyncIterator[packager_pb2.PublishRequest], publication: _Publication) -> None:
        """Validates frames and hands them to the encoder; at `end` (or half-close) it asks for the final flush."""
        expected = 0
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "frame":
                    rgb24 = check_frame(request.frame, expected, publication.settings)
                    await publication.slots.acquire()
                    if publication.finishing:
                        return
                    publication.frame(request.frame.video.data, request.frame.pcm_s16le, request.frame.speech, rgb24)
                    FRAMES_IN.inc()
                    expected += 1
                elif kind == "end":
                    break
                elif kind == "config":
                    raise InvalidRequest("config", "config may be sent only once, as the first message")
                else:
                    raise InvalidRequest("request", "empty request: set config, frame or end")
            publication.finish()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # handed to the RPC handler, which aborts or re-raises it
            publication.events.put_nowait(_ReaderFailed(error))

    def _closed(self, publication: _Publication) -> None:
        session_id = publication.stream.session_id
        if self._publications.get(session_id) is publication:
            del self._publications[session_id]
            LIVE_STREAMS.dec()

    async def shutdown(self) -> None:
        """Ends every playlist (ENDLIST) with its frames so far; waits a little for the flushes."""
        self._shutting_down = True
        publications = list(self._publications.values())
        for publication in publications:
            publication.events.put_nowait(_Shutdown())
        if publications:
            waits = [asyncio.create_task(publication.done.wait()) for publication in publications]
            _, pending = await asyncio.wait(waits, timeout=SHUTDOWN_WAIT_S)
            for task in pending:
                task.cancel()
            # A stream whose handler is gone but whose flush has not run: end its playlist anyway.
            for publication in publications:
                self.store.end(publication.stream)


def _segment_message(segment: EncodedSegment) -> packager_pb2.SegmentPublished:
    return packager_pb2.SegmentPublished(
        sequence=segment.sequence,
        uri=segment_uri(segment.sequence),
        start_frame_index=segment.start_frame_index,
        frame_count=segment.frame_count,
        start_us=segment.start_us,
        duration_us=segment.duration_us,
        has_speech=segment.has_speech,
    )
