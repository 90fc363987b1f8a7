"""Real media for the packager tests: synthetic I420 frames and PCM, H.264 chunks and idle loops made with the video
worker's own encoder, the PublishVideo handshake, and decoding of what the packager serves (PyAV)."""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
import av
import grpc
import numpy as np

from avatar.v1 import packager_pb2, packager_pb2_grpc
from services.common.h264 import loop_content_id
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.common.server import create_server
from services.packager.http import create_app, start_http
from services.packager.service import PackagerServicer
from services.packager.store import HlsStore
from services.video.chunker import ChunkAssembler
from services.video.encoding import EncoderSettings, FrameEncoder

FPS = 25
RATE = 24_000
SPF = RATE // FPS  # samples per frame
CHUNK = 12  # frames per chunk
CHUNK_SAMPLES = CHUNK * SPF
TOKEN = "publish-token-0123456789abcdef"

BACKGROUND = 60  # luma of the grey background
BAR = 150  # luma of the bar that moves along the top quarter
LOOP_LEVELS = (40, 80, 120, 160)  # centre-square luma of the idle loop's chunks 0..3
SPEECH_LEVEL = 235  # the bright square of "speech" frames
LEVEL_TOLERANCE = 14  # decoded flat areas stay this close to what was encoded


def i420(n: int, width: int, height: int, level: int = BACKGROUND) -> bytes:
    """Frame n: grey, a bar moving along the top quarter (so consecutive frames differ), and a square of luma
    `level` in the centre (the background's own grey when `level` is BACKGROUND)."""
    luma = np.full((height, width), BACKGROUND, np.uint8)
    bar = max(2, width // 16)
    x = (n * 2 * bar) % (width - bar)
    luma[: height // 4, x : x + bar] = BAR
    luma[height * 3 // 8 : height * 5 // 8, width * 3 // 8 : width * 5 // 8] = level
    chroma = np.full((height // 2) * (width // 2), 128, np.uint8).tobytes()
    return luma.tobytes() + chroma + chroma


def tone(start_sample: int, samples: int, rate: int = RATE, hz: float = 440.0, amplitude: float = 0.5) -> bytes:
    """A 440 Hz tone, s16le mono, phase-continuous across calls (the phase follows the absolute sample index)."""
    t = (np.arange(samples) + start_sample) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2").tobytes()


def encoder(width: int, height: int, fps: int = FPS) -> FrameEncoder:
    return FrameEncoder(EncoderSettings(width, height, fps))


def encode_chunk(frames: Sequence[bytes], width: int, height: int, fps: int = FPS) -> tuple[bytes, ...]:
    """A closed group of pictures: the frames encoded by a fresh encoder, the first an IDR frame."""
    enc = encoder(width, height, fps)
    return tuple(enc.encode(frame, index == 0) for index, frame in enumerate(frames))


def level_frames(start: int, count: int, width: int, height: int, level: int) -> list[bytes]:
    return [i420(start + i, width, height, level) for i in range(count)]


@dataclass(frozen=True)
class Loop:
    loop_id: str
    width: int
    height: int
    fps: int
    chunk_frames: int
    sps: bytes
    pps: bytes
    chunks: tuple[tuple[bytes, ...], ...]
    levels: tuple[int, ...]  # the centre-square luma of each chunk


@functools.cache
def idle_loop(
    width: int = 128,
    height: int = 128,
    chunks: int = 4,
    chunk_frames: int = CHUNK,
    fps: int = FPS,
    levels: tuple[int, ...] | None = None,
) -> Loop:
    """A loop of `chunks` chunks whose pictures differ visibly: chunk k has its centre square at `levels[k]`
    (LOOP_LEVELS by default) and the bar wherever frame k * chunk_frames + i puts it. Encoded like the video worker
    encodes a loop."""
    levels = levels or LOOP_LEVELS[:chunks]
    if len(levels) != chunks:
        raise ValueError(f"{chunks} chunks need {chunks} levels")
    enc = encoder(width, height, fps)
    assembler = ChunkAssembler(chunk_frames, enc.encode)
    encoded: list[tuple[bytes, ...]] = []
    for n in range(chunks * chunk_frames):
        chunk = assembler.add(n, 0, i420(n, width, height, levels[n // chunk_frames]))
        if chunk is not None:
            encoded.append(chunk.frames)
    loop_id = loop_content_id(width, height, fps, chunk_frames, enc.sps, enc.pps, encoded)
    return Loop(loop_id, width, height, fps, chunk_frames, enc.sps, enc.pps, tuple(encoded), tuple(levels))


def video_config(session_id: str, loop: Loop, token: str = TOKEN, **overrides) -> packager_pb2.PublishVideoConfig:
    fields = dict(
        stream_id=session_id,
        publish_token=token,
        width=loop.width,
        height=loop.height,
        fps=loop.fps,
        chunk_frames=loop.chunk_frames,
        sps=loop.sps,
        pps=loop.pps,
        idle_loop_id=loop.loop_id,
        idle_loop_chunks=len(loop.chunks),
    )
    fields.update(overrides)
    return packager_pb2.PublishVideoConfig(**fields)


def loop_chunk_message(index: int, frames: Sequence[bytes]) -> packager_pb2.PublishVideoRequest:
    return packager_pb2.PublishVideoRequest(loop_chunk=packager_pb2.IdleLoopChunk(index=index, frames=frames))


def chunk_message(start: int, frames: Sequence[bytes], epoch: int = 0, first: int | None = None):
    return packager_pb2.PublishVideoRequest(
        chunk=packager_pb2.EncodedChunk(
            start_frame_index=start,
            first_frame_index=start if first is None else first,
            epoch=epoch,
            frames=frames,
        )
    )


@dataclass
class VideoStream:
    call: grpc.aio.StreamStreamCall
    loop_uploaded: bool

    async def send(self, start: int, frames: Sequence[bytes], epoch: int = 0, first: int | None = None) -> None:
        await self.call.write(chunk_message(start, frames, epoch, first))

    async def close(self) -> grpc.StatusCode:
        """Half-closes and waits for the packager to finish the stream (all chunks sent are processed then)."""
        await self.call.done_writing()
        await read_all(self.call)
        return await self.call.code()


async def read_all(call: grpc.aio.StreamStreamCall) -> list:
    """The rest of a call's responses (read() style: a call may not mix it with async iteration)."""
    responses = []
    while (response := await call.read()) is not grpc.aio.EOF:
        responses.append(response)
    return responses


async def open_video(
    stub: packager_pb2_grpc.PackagerServiceStub, session_id: str, loop: Loop, token: str = TOKEN
) -> VideoStream:
    """Opens a PublishVideo stream, uploads the loop when the packager asks for it, and waits for `ready`."""
    call = stub.PublishVideo(metadata=((SESSION_ID_METADATA_KEY, session_id),))
    await call.write(packager_pb2.PublishVideoRequest(config=video_config(session_id, loop, token)))
    response = await call.read()
    uploaded = False
    if response is not grpc.aio.EOF and response.WhichOneof("response") == "loop_wanted":
        for index, frames in enumerate(loop.chunks):
            await call.write(loop_chunk_message(index, frames))
        uploaded = True
        response = await call.read()
    if response is grpc.aio.EOF or response.WhichOneof("response") != "ready":
        raise AssertionError(f"no ready on PublishVideo: {response!r} {await call.code()} {await call.details()}")
    return VideoStream(call, uploaded)


# -- decoding -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    times: list[float]  # presentation time of each video frame, in order
    centre: list[int]  # mean luma of the centre of each frame
    keyframes: list[bool]  # per video packet, from the container (the fragment's sample flags)
    idr: list[bool]  # per decoded frame: a key frame for the decoder
    audio: np.ndarray  # mono float samples
    audio_start: float
    facts: dict


def decode(blob: bytes) -> Decoded:
    """Decodes an init segment followed by media segments."""
    with av.open(io.BytesIO(blob)) as container:
        keyframes = [packet.is_keyframe for packet in container.demux(video=0) if packet.size]
    with av.open(io.BytesIO(blob)) as container:
        video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
        facts = {
            "video_codec": video_stream.codec_context.name,
            "size": (video_stream.width, video_stream.height),
            "audio_codec": audio_stream.codec_context.name,
            "sample_rate": audio_stream.sample_rate,
            "channels": audio_stream.codec_context.channels,
        }
        times: list[float] = []
        centre: list[int] = []
        idr: list[bool] = []
        audio: list[np.ndarray] = []
        audio_start = None
        for frame in container.decode(video_stream, audio_stream):
            if isinstance(frame, av.VideoFrame):
                plane = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
                h, w = frame.height, frame.width
                patch = plane[h // 2 - h // 16 : h // 2 + h // 16, w // 2 - w // 16 : w // 2 + w // 16]
                times.append(float(frame.time))
                centre.append(round(float(patch.mean())))
                idr.append(bool(frame.key_frame))
            else:
                if audio_start is None:
                    audio_start = float(frame.time)
                audio.append(frame.to_ndarray()[0])
    samples = np.concatenate(audio) if audio else np.zeros(0, np.float32)
    return Decoded(times, centre, keyframes, idr, samples, audio_start or 0.0, facts)


def decode_aac(packets: Sequence[bytes], audio_specific_config: bytes, sample_rate: int) -> np.ndarray:
    """Decodes raw AAC packets (as an AacTrack emits them) with FFmpeg's decoder; mono float samples."""
    codec = av.CodecContext.create("aac", "r")
    codec.extradata = audio_specific_config
    codec.sample_rate = sample_rate
    codec.layout = "mono"
    out: list[np.ndarray] = []
    for data in packets:
        for frame in codec.decode(av.Packet(data)):
            out.append(frame.to_ndarray()[0])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def levels_match(centre: Sequence[int], expected: Sequence[int], tolerance: int = LEVEL_TOLERANCE) -> bool:
    return len(centre) == len(expected) and all(abs(a - b) <= tolerance for a, b in zip(centre, expected, strict=True))


PACKAGER_SERVICE = packager_pb2.DESCRIPTOR.services_by_name["PackagerService"].full_name
CHANNEL_OPTIONS = (("grpc.max_send_message_length", 12 * 2**20), ("grpc.max_receive_message_length", 12 * 2**20))


@dataclass
class ServedPackager:
    """An in-process packager's addresses and clients (see `serve_packager`)."""

    port: int
    http_port: int
    channel: grpc.aio.Channel
    http: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def serve_packager(
    servicer: PackagerServicer, store: HlsStore, cors_origins: Sequence[str] = ()
) -> AsyncIterator[ServedPackager]:
    """Serves `servicer` over gRPC on 127.0.0.1:0 and its store's HLS over HTTP; stops both afterwards."""
    server, port, _ = await create_server(
        "127.0.0.1:0",
        lambda s: packager_pb2_grpc.add_PackagerServiceServicer_to_server(servicer, s),
        [PACKAGER_SERVICE],
    )
    await server.start()
    runner, http_port = await start_http(create_app(store, list(cors_origins)), "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    http = aiohttp.ClientSession()
    try:
        yield ServedPackager(port, http_port, channel, http)
    finally:
        await http.close()
        await channel.close()
        await server.stop(0)
        await runner.cleanup()
        store.close()
