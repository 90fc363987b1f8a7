"""The video service with a real packager, in-process: a video worker renders and encodes what a test session drives
and publishes it to the packager, the test session commits chunks on the packager's Publish stream, and the playlist
that comes out is fetched over HTTP and decoded (PyAV).

`running_packager()` and `running_video()` start one server each on 127.0.0.1:0 (`running_stack()` both);
`Session.open()` plays the session service's part: a Render stream with a valid config, `ready`, `clock`, then the
packager's Publish stream with the same token and the ready's idle loop. Its helpers drive chunks (idle or speech),
reset, commit (rendered or loop, with the idle chunk index and epoch a session would compute), end, and decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import aiohttp
import av
import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from avatar.v1 import packager_pb2, packager_pb2_grpc, video_pb2_grpc
from infinitetalk_live_client.avatar.v1 import media_pb2, video_pb2
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.common.server import create_server
from services.packager.config import PackagerConfig
from services.packager.service import PackagerServicer
from services.packager.store import HlsStore
from services.video.backend import RendererBackend
from services.video.calibration import speech_drives
from services.video.capacity import CapacityMeter
from services.video.drawn_style import DEFAULT_AVATAR
from services.video.service import VideoServicer
from tests.packager_media import CHANNEL_OPTIONS, read_all, serve_packager

FPS = 25
RATE = 24_000
SPF = RATE // FPS  # samples per frame
CHUNK = 12  # frames per chunk
SEGMENT_MS = 480  # one chunk per segment
EPOCH_S = 1_750_000_000
VIDEO_SERVICE = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name
WAIT_S = 20.0  # the longest any helper waits for something that should happen


def new_session_id(tag: str = "video") -> str:
    """A session id the packager accepts (16-64 characters of A-Z a-z 0-9 _ -)."""
    return f"test-{tag}-{secrets.token_hex(8)}"[:64]


def new_token() -> str:
    return secrets.token_urlsafe(24)  # 32 characters


def roomy_meter(max_streams: int = 8) -> CapacityMeter:
    """A meter whose capacity is `max_streams` whatever the measurements do (a budget far beyond them)."""
    return CapacityMeter(budget_cores=1000.0, fps=FPS, speaking_share=0.25, max_streams=max_streams, frame_cpu_s=0.004)


async def wait_until(condition, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.01)


# -- servers --------------------------------------------------------------------------------------------------------


class ObservedPackager(PackagerServicer):
    """The real packager, observing its PublishVideo streams: how many opened, how often it asked a video worker for
    an idle loop, and every encoded chunk each session's worker sent."""

    def __init__(self, config: PackagerConfig, store: HlsStore) -> None:
        super().__init__(config, store)
        self.loops_wanted = 0
        self.video_streams_opened = 0
        # Per session, every EncodedChunk its video streams sent: (start, first frame carried, epoch, frames).
        self.chunks_received: dict[str, list[tuple[int, int, int, int]]] = {}

    async def _observe(self, requests) -> AsyncIterator[packager_pb2.PublishVideoRequest]:
        session_id = ""
        async for request in requests:
            kind = request.WhichOneof("request")
            if kind == "config":
                session_id = request.config.stream_id
            elif kind == "chunk":
                chunk = request.chunk
                received = self.chunks_received.setdefault(session_id, [])
                received.append((chunk.start_frame_index, chunk.first_frame_index, chunk.epoch, len(chunk.frames)))
            yield request

    async def PublishVideo(self, request_iterator, context):
        self.video_streams_opened += 1
        requests = self._observe(request_iterator)
        async with contextlib.aclosing(super().PublishVideo(requests, context)) as responses:
            async for response in responses:
                if response.HasField("loop_wanted"):
                    self.loops_wanted += 1
                yield response


@dataclass
class Packager:
    address: str
    stub: packager_pb2_grpc.PackagerServiceStub
    servicer: ObservedPackager
    store: HlsStore
    http: aiohttp.ClientSession
    base: str

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.http.get(self.base + path) as response:
            return response.status, await response.read()

    def held(self, session_id: str) -> dict[int, int]:
        """The rendered chunks the packager holds for a session: start frame -> epoch."""
        media = self.servicer._media.get(session_id)
        return {start: version.epoch for start, version in media.chunks._versions.items()} if media else {}

    async def wait_held(self, session_id: str, start: int, epoch: int | None = None) -> None:
        """Until the worker's chunk at `start` (of `epoch`) is on the packager."""

        def there() -> bool:
            held = self.held(session_id)
            return start in held and (epoch is None or held[start] == epoch)

        await wait_until(there, f"chunk {start} (epoch {epoch}) on the packager; it holds {self.held(session_id)}")


@contextlib.asynccontextmanager
async def running_packager(**overrides) -> AsyncIterator[Packager]:
    """A packager (gRPC and HLS over HTTP). Its Publish streams in this harness are offline (a rendered commit
    waits for its chunk), so no test depends on the worker being quick."""
    config = replace(PackagerConfig(retain_ended_s=600.0, render_grace_s=10.0), **overrides)
    store = HlsStore(config.window_segments, config.retain_ended_s)
    servicer = ObservedPackager(config, store)
    async with serve_packager(servicer, store) as served:
        yield Packager(
            f"127.0.0.1:{served.port}",
            packager_pb2_grpc.PackagerServiceStub(served.channel),
            servicer,
            store,
            served.http,
            f"http://127.0.0.1:{served.http_port}",
        )


@dataclass
class Video:
    address: str
    stub: video_pb2_grpc.VideoServiceStub
    servicer: VideoServicer

    async def status(self) -> video_pb2.GetWorkerStatusResponse:
        return await self.stub.GetWorkerStatus(video_pb2.GetWorkerStatusRequest(), timeout=10)


@contextlib.asynccontextmanager
async def running_video(
    backends: Sequence[RendererBackend] | None = None,
    meter: CapacityMeter | None = None,
    default_avatar: str = DEFAULT_AVATAR,
    **kwargs,
) -> AsyncIterator[Video]:
    """A video worker (DrawnBackend unless `backends`), with `meter` (roomy_meter() unless given)."""
    servicer = VideoServicer(backends, default_avatar=default_avatar, meter=meter or roomy_meter(), **kwargs)
    server, port, _ = await create_server(
        "127.0.0.1:0", lambda s: video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, s), [VIDEO_SERVICE]
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    try:
        yield Video(f"127.0.0.1:{port}", video_pb2_grpc.VideoServiceStub(channel), servicer)
    finally:
        await channel.close()
        await server.stop(0)
        await servicer.close()


@dataclass
class Stack:
    video: Video
    packager: Packager


@contextlib.asynccontextmanager
async def running_stack(
    backends: Sequence[RendererBackend] | None = None,
    meter: CapacityMeter | None = None,
    default_avatar: str = DEFAULT_AVATAR,
    **video_kwargs,
) -> AsyncIterator[Stack]:
    async with (
        running_packager() as packager,
        running_video(backends, meter, default_avatar, **video_kwargs) as video,
    ):
        yield Stack(video, packager)


# -- requests -------------------------------------------------------------------------------------------------------


def render_config(packager_address: str, **overrides) -> video_pb2.RenderRequest:
    """A valid Render config (128x128 drawn avatar, 12-frame chunks, a fresh session id and token)."""
    fields = dict(
        session_id=new_session_id(),
        avatar="",
        width=128,
        height=128,
        fps=FPS,
        sample_rate_hz=RATE,
        chunk_frames=CHUNK,
        packager_address=packager_address,
        publish_token=new_token(),
        idle_phase_offset=0,
    )
    fields.update(overrides)
    return video_pb2.RenderRequest(config=video_pb2.RenderConfig(**fields))


def frame_request(
    index: int, pcm: bytes = b"", marks: Sequence[tuple[str, int, int]] = (), epoch: int = 0, utterance: str = ""
) -> video_pb2.RenderRequest:
    return video_pb2.RenderRequest(
        frame=video_pb2.FrameDrive(
            frame_index=index,
            utterance_id=utterance,
            pcm_s16le=pcm,
            phonemes=[media_pb2.PhonemeMark(phoneme=p, start_us=s, end_us=e) for p, s, e in marks],
            epoch=epoch,
        )
    )


def reset_request(from_frame: int, epoch: int) -> video_pb2.RenderRequest:
    return video_pb2.RenderRequest(reset=video_pb2.ResetTimeline(from_frame_index=from_frame, epoch=epoch))


def speech_requests(
    first: int, count: int, epoch: int = 0, utterance: str = "u1", fps: int = FPS, rate: int = RATE
) -> list[video_pb2.RenderRequest]:
    """Drives of frames first..first+count-1 carrying a voiced passage with phoneme marks (deterministic:
    services.video.calibration.speech_drives, shifted to start at `first`)."""
    shift_us = first * 1_000_000 // fps
    out = []
    for drive in speech_drives(fps, rate, count):
        marks = [(m.phoneme, m.start_us + shift_us, m.end_us + shift_us) for m in drive.phonemes]
        pcm = drive.pcm.astype("<i2").tobytes() if drive.pcm is not None else b""
        out.append(frame_request(first + drive.frame_index, pcm, marks, epoch, utterance))
    return out


async def render_error(stub: video_pb2_grpc.VideoServiceStub, requests: Sequence[video_pb2.RenderRequest]):
    """Sends `requests` on a Render stream, keeps the request side open (a grpc-aio client that writes after the
    server ended the call reports INTERNAL instead of the server's status) and returns the error that ends it
    (AssertionError when it ends without one) with the responses that came before."""

    async def feed() -> AsyncIterator[video_pb2.RenderRequest]:
        for request in requests:
            yield request
        await asyncio.Event().wait()

    responses = []
    try:
        async with asyncio.timeout(WAIT_S):
            async for response in stub.Render(feed()):
                responses.append(response)
    except grpc.aio.AioRpcError as error:
        return error, responses
    raise AssertionError(f"the Render stream ended without an error after {responses}")


# -- the session's side ---------------------------------------------------------------------------------------------


@dataclass
class Session:
    """One session as the session service runs it, against a Stack."""

    stack: Stack
    config: video_pb2.RenderConfig
    render: grpc.aio.StreamStreamCall
    ready: video_pb2.RenderReady | None = None
    responses: list[video_pb2.RenderResponse] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None
    publish: grpc.aio.StreamStreamCall | None = None
    published: list[packager_pb2.PublishResponse] = field(default_factory=list)
    epoch: int = 0
    driven: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # frame -> (epoch, pcm) of its latest drive
    _reader: asyncio.Task | None = None

    @classmethod
    async def open(cls, stack: Stack, publish: bool = True, **config_overrides) -> Session:
        """Render stream up to `ready`, then `clock`, then (when `publish`) the packager's Publish stream."""
        config = render_config(stack.packager.address, **config_overrides).config
        call = stack.video.stub.Render(metadata=((SESSION_ID_METADATA_KEY, config.session_id),))
        session = cls(stack, config, call)
        await call.write(video_pb2.RenderRequest(config=config))
        session._reader = asyncio.create_task(session._read())
        await wait_until(lambda: session.ready is not None or session._reader.done(), "ready")
        if session.ready is None:
            raise AssertionError(f"no ready: {session.error!r}")
        await call.write(video_pb2.RenderRequest(clock=video_pb2.PlayoutClock(media_epoch=Timestamp(seconds=EPOCH_S))))
        if publish:
            await session.start_publish()
        return session

    async def _read(self) -> None:
        try:
            while (response := await self.render.read()) is not grpc.aio.EOF:
                self.responses.append(response)
                if response.HasField("ready"):
                    self.ready = response.ready
        except grpc.aio.AioRpcError as error:
            self.error = error

    @property
    def session_id(self) -> str:
        return self.config.session_id

    @property
    def statuses(self) -> list[video_pb2.RenderStatus]:
        return [r.status for r in self.responses if r.HasField("status")]

    def publish_config(self, **overrides) -> packager_pb2.PublishRequest:
        assert self.ready is not None
        fields = dict(
            stream_id=self.session_id,
            width=self.config.width,
            height=self.config.height,
            fps=self.config.fps,
            sample_rate_hz=self.config.sample_rate_hz,
            segment_duration_ms=SEGMENT_MS * self.config.chunk_frames // CHUNK,
            media_epoch=Timestamp(seconds=EPOCH_S),
            chunk_frames=self.config.chunk_frames,
            publish_token=self.config.publish_token,
            idle_loop_id=self.ready.idle_loop_id,
            offline=True,
        )
        fields.update(overrides)
        return packager_pb2.PublishRequest(config=packager_pb2.PublishConfig(**fields))

    async def start_publish(self) -> None:
        call = self.stack.packager.stub.Publish(metadata=((SESSION_ID_METADATA_KEY, self.session_id),))
        await call.write(self.publish_config())
        response = await call.read()
        assert response is not grpc.aio.EOF and response.HasField("ready"), (response, await call.details())
        self.publish = call

    # -- driving ----------------------------------------------------------------------------------------------------

    async def send(self, requests: Sequence[video_pb2.RenderRequest]) -> None:
        for request in requests:
            if request.HasField("frame"):
                frame = request.frame
                self.driven[frame.frame_index] = (frame.epoch, frame.pcm_s16le)
            await self.render.write(request)

    def frames_of(self, start: int) -> range:
        return range(start, start + self.config.chunk_frames)

    async def drive_idle(self, start: int, first: int | None = None, epoch: int | None = None) -> None:
        """Idle drives for the chunk at `start` (from frame `first` on)."""
        epoch = self.epoch if epoch is None else epoch
        first = start if first is None else first
        await self.send([frame_request(i, epoch=epoch) for i in range(first, start + self.config.chunk_frames)])

    async def drive_speech(self, start: int, first: int | None = None, epoch: int | None = None) -> None:
        """Speech drives for the chunk at `start` (from frame `first` on)."""
        epoch = self.epoch if epoch is None else epoch
        first = start if first is None else first
        count = start + self.config.chunk_frames - first
        await self.send(speech_requests(first, count, epoch, fps=self.config.fps, rate=self.config.sample_rate_hz))

    async def reset(self, from_frame: int, epoch: int | None = None) -> None:
        self.epoch = self.epoch + 1 if epoch is None else epoch
        for index in [i for i in self.driven if i >= from_frame]:
            del self.driven[index]
        await self.render.write(reset_request(from_frame, self.epoch))

    # -- committing -------------------------------------------------------------------------------------------------

    def idle_chunk_index(self, start: int) -> int:
        assert self.ready is not None
        frames = self.ready.idle_loop_frames
        return ((start + self.config.idle_phase_offset) % frames) // self.config.chunk_frames

    async def commit(
        self, start: int, rendered: bool | None = None, epoch: int | None = None
    ) -> list[packager_pb2.PublishResponse]:
        """Commits the chunk at `start` as a session would: rendered when it drove any of its frames (unless told),
        its epoch the latest of its drives, the audio of its drives; returns the responses up to its segment."""
        assert self.publish is not None and self.ready is not None
        frames = self.frames_of(start)
        drives = [self.driven[i] for i in frames if i in self.driven]
        rendered = bool(drives) if rendered is None else rendered
        if epoch is None:
            epoch = max((e for e, _ in drives), default=self.epoch)
        pcm = b""
        if any(p for _, p in drives):
            silence = bytes(2 * self.config.sample_rate_hz // self.config.fps)
            pcm = b"".join(self.driven.get(i, (0, b""))[1] or silence for i in frames)
        await self.publish.write(
            packager_pb2.PublishRequest(
                chunk=packager_pb2.ChunkCommit(
                    start_frame_index=start,
                    pcm_s16le=pcm,
                    speech=bool(pcm),
                    idle_loop_id=self.ready.idle_loop_id,
                    idle_chunk_index=self.idle_chunk_index(start),
                    rendered=rendered,
                    epoch=epoch,
                )
            )
        )
        responses = []
        while True:
            response = await self.publish.read()
            assert response is not grpc.aio.EOF, f"Publish ended: {await self.publish.details()}"
            responses.append(response)
            self.published.append(response)
            if response.HasField("segment"):
                return responses

    async def end(self) -> grpc.StatusCode:
        """Ends the playlist and the Render stream; the Render stream's status."""
        if self.publish is not None:
            await self.publish.write(packager_pb2.PublishRequest(end=packager_pb2.EndOfStream()))
            self.published += await read_all(self.publish)
        return await self.close()

    async def close(self) -> grpc.StatusCode:
        with contextlib.suppress(Exception):
            await self.render.done_writing()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, WAIT_S)
        return await self.render.code()

    def cancel(self) -> None:
        self.render.cancel()
        if self.publish is not None:
            self.publish.cancel()

    def stalls(self) -> list[packager_pb2.ChunkStalled]:
        return [r.stall for r in self.published if r.HasField("stall")]

    # -- what came out ----------------------------------------------------------------------------------------------

    async def media(self) -> bytes:
        """The playlist's init segment and every segment on it, concatenated."""
        packager = self.stack.packager
        status, body = await packager.get(f"/hls/{self.session_id}/index.m3u8")
        assert status == 200, body
        blob = [await self._get(f"/hls/{self.session_id}/init.mp4")]
        for uri in re.findall(r"^seg\d+\.m4s$", body.decode(), re.M):
            blob.append(await self._get(f"/hls/{self.session_id}/{uri}"))
        return b"".join(blob)

    async def _get(self, path: str) -> bytes:
        status, body = await self.stack.packager.get(path)
        assert status == 200, (path, status)
        return body

    async def pictures(self) -> list[Picture]:
        return decode_pictures(await self.media())

    def loop_pictures(self, index: int) -> list[Picture]:
        """The idle loop's chunk `index` as the packager holds it, decoded."""
        assert self.ready is not None
        loop = self.stack.packager.servicer.loops.get(self.ready.idle_loop_id)
        assert loop is not None, "the packager does not hold the session's loop"
        return decode_samples(loop.sps, loop.pps, loop.chunk(index).frames)


# -- decoding -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    luma: np.ndarray  # height x width, float32
    key: bool  # a key (IDR) frame for the decoder


def _picture(frame: av.VideoFrame) -> Picture:
    plane = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
    return Picture(plane[:, : frame.width].astype(np.float32), bool(frame.key_frame))


def decode_pictures(blob: bytes) -> list[Picture]:
    """Every video frame of an fMP4 (init segment + media segments), in order."""
    with av.open(io.BytesIO(blob)) as container:
        return [_picture(frame) for frame in container.decode(video=0)]


def decode_rgb(blob: bytes) -> list[np.ndarray]:
    """Every video frame of an fMP4 as height x width x 3 RGB."""
    with av.open(io.BytesIO(blob)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def decode_samples(sps: bytes, pps: bytes, samples: Sequence[bytes]) -> list[Picture]:
    """AVC-format access units (4-byte length-prefixed NAL units) decoded with the given parameter sets."""
    start = b"\x00\x00\x00\x01"
    stream = bytearray(start + sps + start + pps)
    for sample in samples:
        at = 0
        while at < len(sample):
            size = int.from_bytes(sample[at : at + 4], "big")
            stream += start + sample[at + 4 : at + 4 + size]
            at += 4 + size
    with av.open(io.BytesIO(bytes(stream)), format="h264") as container:
        return [_picture(frame) for frame in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
