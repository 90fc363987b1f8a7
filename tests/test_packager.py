"""Packager: a real in-process gRPC server and HTTP server; frames in, HLS playlist and fMP4 segments out."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import av
import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from avatar.v1 import media_pb2, packager_pb2, packager_pb2_grpc
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.common.server import create_server
from services.packager import fmp4
from services.packager.config import PackagerConfig
from services.packager.encoder import EncoderSettings, SessionEncoder
from services.packager.http import create_app, start_http
from services.packager.playlist import LivePlaylist, PlaylistSegment, format_duration, format_program_date_time
from services.packager.service import PackagerServicer
from services.packager.store import HlsStore

FPS = 25
RATE = 24_000
SPF = RATE // FPS
SIZE = 512
ONSET_FRAME = 25
EPOCH_S = 1_750_000_000  # 2025-06-15T15:06:40Z
SERVICE_NAME = packager_pb2.DESCRIPTOR.services_by_name["PackagerService"].full_name


# -- fixtures -----------------------------------------------------------------------------------------------------


@dataclass
class Packager:
    stub: packager_pb2_grpc.PackagerServiceStub
    http: aiohttp.ClientSession
    base: str
    store: HlsStore
    servicer: PackagerServicer
    http_port: int

    def publish(self, session_id: str) -> grpc.aio.StreamStreamCall:
        return self.stub.Publish(metadata=((SESSION_ID_METADATA_KEY, session_id),))

    async def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        async with self.http.request(method, self.base + path) as response:
            return response.status, dict(response.headers), await response.read()


@contextlib.asynccontextmanager
async def running_packager(**overrides) -> AsyncIterator[Packager]:
    config = replace(PackagerConfig(retain_ended_s=600.0), **overrides)
    store = HlsStore(config.window_segments, config.retain_ended_s)
    servicer = PackagerServicer(config, store)
    server, port, _health = await create_server(
        "127.0.0.1:0",
        lambda s: packager_pb2_grpc.add_PackagerServiceServicer_to_server(servicer, s),
        [SERVICE_NAME],
    )
    await server.start()
    runner, http_port = await start_http(create_app(store, ["https://app.example"]), "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 << 20)])
    http = aiohttp.ClientSession()
    try:
        yield Packager(
            packager_pb2_grpc.PackagerServiceStub(channel),
            http,
            f"http://127.0.0.1:{http_port}",
            store,
            servicer,
            http_port,
        )
    finally:
        await http.close()
        await channel.close()
        await server.stop(0)
        await runner.cleanup()
        store.close()


@pytest.fixture
async def packager() -> AsyncIterator[Packager]:
    async with running_packager() as running:
        yield running


# -- synthetic media ------------------------------------------------------------------------------------------------


def config_message(session_id: str, **overrides) -> packager_pb2.PublishRequest:
    epoch = Timestamp(seconds=EPOCH_S)
    fields = dict(
        session_id=session_id,
        width=SIZE,
        height=SIZE,
        fps=FPS,
        sample_rate_hz=RATE,
        segment_duration_ms=1000,
        media_epoch=epoch,
    )
    fields.update(overrides)
    return packager_pb2.PublishRequest(config=packager_pb2.PublishConfig(**fields))


_CHROMA = np.full((SIZE // 2, SIZE // 2), 128, np.uint8).tobytes()


def i420(n: int, size: int = SIZE) -> bytes:
    """A moving bar on grey; from ONSET_FRAME a bright square in the middle."""
    luma = np.full((size, size), 60, np.uint8)
    x = (n * 12) % size
    luma[:, x : x + size // 16] = 140
    if n >= ONSET_FRAME:
        luma[size * 3 // 8 : size * 5 // 8, size * 3 // 8 : size * 5 // 8] = 235
    chroma = _CHROMA if size == SIZE else np.full((size // 2, size // 2), 128, np.uint8).tobytes()
    return luma.tobytes() + chroma + chroma


def pcm(n: int, samples: int = SPF, rate: int = RATE) -> bytes:
    """Silence, then a 440 Hz tone from ONSET_FRAME (phase-continuous)."""
    if n < ONSET_FRAME:
        return bytes(2 * samples)
    t = (np.arange(samples) + n * samples) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()


def frame_message(n: int, size: int = SIZE, **video_overrides) -> packager_pb2.PublishRequest:
    video = dict(
        frame_index=n,
        pts_us=n * 1_000_000 // FPS,
        width=size,
        height=size,
        pixel_format=media_pb2.PIXEL_FORMAT_I420,
        data=i420(n, size),
    )
    video.update(video_overrides)
    return packager_pb2.PublishRequest(
        frame=packager_pb2.MediaFrame(video=media_pb2.VideoFrame(**video), pcm_s16le=pcm(n), speech=n >= ONSET_FRAME)
    )


END = packager_pb2.PublishRequest(end=packager_pb2.EndOfStream())


def session_id(tag: str) -> str:
    return f"test-{tag}-0123456789abcdef"[:64]


def decode(blob: bytes) -> tuple[list[tuple[float, int]], np.ndarray, float, dict]:
    """Decodes init+segments: (video frame time, centre luma) list, mono audio, audio start time, stream facts."""
    with av.open(io.BytesIO(blob)) as container:
        video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
        facts = {
            "video_codec": video_stream.codec_context.name,
            "size": (video_stream.width, video_stream.height),
            "rate": video_stream.average_rate,
            "audio_codec": audio_stream.codec_context.name,
            "sample_rate": audio_stream.sample_rate,
            "channels": audio_stream.codec_context.channels,
        }
        video: list[tuple[float, int]] = []
        chunks: list[np.ndarray] = []
        audio_start = None
        for frame in container.decode(video_stream, audio_stream):
            if isinstance(frame, av.VideoFrame):
                plane = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
                video.append((float(frame.time), int(plane[frame.height // 2, frame.width // 2])))
            else:
                if audio_start is None:
                    audio_start = float(frame.time)
                chunks.append(frame.to_ndarray()[0])
    return video, np.concatenate(chunks), audio_start or 0.0, facts


def keyframe_flags(blob: bytes) -> list[bool]:
    with av.open(io.BytesIO(blob)) as container:
        return [packet.is_keyframe for packet in container.demux(video=0) if packet.size]


# -- the main path ------------------------------------------------------------------------------------------------


async def test_publish_fetch_decode_in_sync(packager: Packager) -> None:
    sid = session_id("main")
    frames = 3 * FPS + 1  # three whole segments and one partial one
    call = packager.publish(sid)
    responses: list[tuple[float, packager_pb2.PublishResponse]] = []
    fetched: dict[str, tuple[int, dict[str, str], bytes]] = {}

    async def read() -> None:
        async for response in call:
            responses.append((time.perf_counter(), response))
            if response.HasField("segment"):  # fetch right away, as a player would
                uri = response.segment.uri
                fetched[uri] = await packager.get(f"/hls/{sid}/{uri}")
                if response.segment.sequence == 1:
                    fetched["live"] = await packager.get(f"/hls/{sid}/index.m3u8")

    reader = asyncio.create_task(read())
    await call.write(config_message(sid))
    sent_at: dict[int, float] = {}
    started = time.perf_counter()
    for n in range(frames):  # paced in real time, like the session's playout
        await asyncio.sleep(max(0.0, started + n / FPS - time.perf_counter()))
        await call.write(frame_message(n))
        sent_at[n] = time.perf_counter()
    await call.write(END)
    await call.done_writing()
    await asyncio.wait_for(reader, 20)
    assert await call.code() == grpc.StatusCode.OK

    kinds = [response.WhichOneof("response") for _, response in responses]
    assert kinds == ["ready", "segment", "segment", "segment", "segment", "ended"]
    assert responses[0][1].ready.playlist_path == f"/hls/{sid}/index.m3u8"
    segments = [response.segment for _, response in responses if response.HasField("segment")]
    assert [s.sequence for s in segments] == [0, 1, 2, 3]
    assert [s.uri for s in segments] == ["seg0.m4s", "seg1.m4s", "seg2.m4s", "seg3.m4s"]
    assert [s.start_frame_index for s in segments] == [0, 25, 50, 75]
    assert [s.frame_count for s in segments] == [25, 25, 25, 1]
    assert [s.start_us for s in segments] == [0, 1_000_000, 2_000_000, 3_000_000]
    assert [s.duration_us for s in segments] == [1_000_000, 1_000_000, 1_000_000, 40_000]
    assert [s.has_speech for s in segments] == [False, True, True, True]
    assert responses[-1][1].ended.segment_count == 4

    delays = []
    for at, response in responses:
        if response.HasField("segment"):
            last = response.segment.start_frame_index + response.segment.frame_count - 1
            delays.append((at - sent_at[last]) * 1000)
    print(f"\npublish delay after the segment's last frame (ms): {[round(d, 1) for d in delays]}")

    # While live: no ENDLIST, not cacheable.
    status, headers, body = fetched["live"]
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    assert "#EXT-X-ENDLIST" not in body.decode()

    # Ended playlist.
    status, headers, body = await packager.get(f"/hls/{sid}/index.m3u8")
    assert status == 200
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    assert headers["Cache-Control"] == "public, max-age=3600"
    text = body.decode()
    lines = text.splitlines()
    assert lines[:6] == [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-MAP:URI="init.mp4"',
    ]
    assert lines[-1] == "#EXT-X-ENDLIST"
    dates = re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", text)
    assert dates == [
        "2025-06-15T15:06:40.000Z",
        "2025-06-15T15:06:41.000Z",
        "2025-06-15T15:06:42.000Z",
        "2025-06-15T15:06:43.000Z",
    ]
    durations = [float(value) for value in re.findall(r"#EXTINF:([0-9.]+),", text)]
    assert durations == [1.0, 1.0, 1.0, 0.04]
    assert sum(durations) == pytest.approx(frames / FPS)
    assert re.findall(r"^seg\d+\.m4s$", text, re.M) == ["seg0.m4s", "seg1.m4s", "seg2.m4s", "seg3.m4s"]

    status, headers, init = await packager.get(f"/hls/{sid}/init.mp4")
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert init[4:8] == b"ftyp" and b"moov" in init[:64]
    for uri in ("seg0.m4s", "seg1.m4s", "seg2.m4s", "seg3.m4s"):
        status, headers, data = fetched[uri]
        assert status == 200
        assert headers["Content-Type"] == "video/iso.segment"
        assert headers["Cache-Control"] == "public, max-age=86400, immutable"
        assert b"moof" in data[:64]
        # HEAD: same headers, no body.
        head_status, head_headers, head_body = await packager.get(f"/hls/{sid}/{uri}", method="HEAD")
        assert head_status == 200 and head_body == b"" and int(head_headers["Content-Length"]) == len(data)

    blob = init + b"".join(fetched[uri][2] for uri in ("seg0.m4s", "seg1.m4s", "seg2.m4s", "seg3.m4s"))
    video, audio, audio_start, facts = decode(blob)
    assert facts == {
        "video_codec": "h264",
        "size": (SIZE, SIZE),
        "rate": FPS,
        "audio_codec": "aac",
        "sample_rate": RATE,
        "channels": 1,
    }
    assert len(video) == frames
    assert [round(t * FPS, 6) for t, _ in video] == list(range(frames))  # frame n at n / fps
    assert keyframe_flags(blob) == [n % 25 == 0 for n in range(frames)]
    assert audio_start == pytest.approx(0.0, abs=1e-6)
    assert len(audio) >= (frames - 3) * SPF  # all but the tail AAC frames of a frame-aligned end
    square_at = next(t for t, luma in video if luma > 200)
    tone_at = audio_start + int(np.argmax(np.abs(audio) > 0.1)) / RATE
    print(f"square onset {square_at * 1000:.1f} ms, tone onset {tone_at * 1000:.1f} ms")
    assert square_at == pytest.approx(ONSET_FRAME / FPS, abs=1e-6)
    assert abs(tone_at - square_at) < 0.020
    assert np.max(np.abs(audio[: int(0.9 * RATE)])) < 0.01  # silent before the onset

    # Every segment stands alone after the init segment (a player joining late).
    for uri in ("seg1.m4s", "seg2.m4s"):
        video_alone, _, _, _ = decode(init + fetched[uri][2])
        assert len(video_alone) == 25 and video_alone[0][1] > 200


# -- errors -------------------------------------------------------------------------------------------------------


async def expect_abort(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


@pytest.mark.parametrize(
    ("first", "needle"),
    [
        (frame_message(0), "first message"),
        (config_message("short"), "session_id"),
        (config_message("../../../etc/passwd-xxxxxxxx"), "session_id"),
        (config_message(session_id("odd"), width=511), "width"),
        (config_message(session_id("big"), height=2048), "height"),
        (config_message(session_id("fps"), fps=0), "fps"),
        (config_message(session_id("rate"), sample_rate_hz=22000), "sample_rate_hz"),
        (config_message(session_id("seg"), segment_duration_ms=220), "whole number of frames"),
        (config_message(session_id("seg2"), segment_duration_ms=2000), "segment_duration_ms"),
        (
            packager_pb2.PublishRequest(
                config=packager_pb2.PublishConfig(
                    session_id=session_id("noepoch"), width=64, height=64, fps=25, sample_rate_hz=RATE
                )
            ),
            "segment_duration_ms",
        ),
        (
            packager_pb2.PublishRequest(
                config=packager_pb2.PublishConfig(
                    session_id=session_id("noepoch"),
                    width=64,
                    height=64,
                    fps=25,
                    sample_rate_hz=RATE,
                    segment_duration_ms=1000,
                )
            ),
            "media_epoch",
        ),
    ],
)
async def test_bad_config_is_invalid_argument(packager: Packager, first, needle: str) -> None:
    sid = first.config.session_id if first.HasField("config") else session_id("frame")
    call = packager.stub.Publish()
    await call.write(first)
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in error.details()
    assert packager.servicer.live_streams == 0
    assert packager.store.get(sid) is None


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (frame_message(3, size=64), "frame_index 3 is out of order: expected 2"),
        (frame_message(2, size=128), "is 128x128"),
        (frame_message(2, size=64, data=b"\x00" * 100), "100 bytes of video"),
        (frame_message(2, size=64, pixel_format=media_pb2.PIXEL_FORMAT_UNSPECIFIED), "pixel_format"),
        (packager_pb2.PublishRequest(config=config_message(session_id("again")).config), "only once"),
        (packager_pb2.PublishRequest(), "empty request"),
    ],
)
async def test_bad_frame_is_invalid_argument_and_ends_playlist(packager: Packager, bad, needle: str) -> None:
    sid = session_id("badframe")
    call = packager.publish(sid)
    await call.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
    await call.write(frame_message(0, size=64))
    await call.write(frame_message(1, size=64))
    await call.write(bad)
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in error.details()
    # The frames before the bad one are flushed and the playlist is closed.
    text = await wait_for_endlist(packager, sid)
    assert text.count("#EXTINF:0.08,") == 1
    assert packager.servicer.live_streams == 0


async def test_wrong_pcm_length_is_invalid_argument(packager: Packager) -> None:
    sid = session_id("pcm")
    call = packager.publish(sid)
    await call.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
    bad = frame_message(0, size=64)
    bad.frame.pcm_s16le = bytes(2 * SPF - 2)
    await call.write(bad)
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1918 bytes of PCM, expected 1920" in error.details()


async def wait_for_endlist(packager: Packager, sid: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, body = await packager.get(f"/hls/{sid}/index.m3u8")
        if status == 200 and body.decode().rstrip().endswith("#EXT-X-ENDLIST"):
            return body.decode()
        assert time.monotonic() < deadline, f"no ENDLIST: {status} {body[:300]!r}"
        await asyncio.sleep(0.05)


async def test_disconnect_without_end_ends_playlist(packager: Packager) -> None:
    sid = session_id("cancel")
    call = packager.publish(sid)
    await call.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
    for n in range(7):
        await call.write(frame_message(n, size=64))
    seen = []
    async for response in call:
        seen.append(response.WhichOneof("response"))
        if response.HasField("segment"):
            break
    assert seen == ["ready", "segment"]
    call.cancel()
    text = await wait_for_endlist(packager, sid)
    assert re.findall(r"^seg\d+\.m4s$", text, re.M) == ["seg0.m4s", "seg1.m4s"]  # 5 frames + the 2 left over
    assert text.count("#EXTINF:0.2,") == 1 and text.count("#EXTINF:0.08,") == 1
    for _ in range(100):
        if packager.servicer.live_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert packager.servicer.live_streams == 0
    for _ in range(100):  # the stream's encoder thread exits once its work is done
        if not any(thread.name.startswith(f"packager-{sid[:8]}") for thread in threading.enumerate()):
            break
        await asyncio.sleep(0.02)
    assert not any(thread.name.startswith(f"packager-{sid[:8]}") for thread in threading.enumerate())
    # The id stays taken while the ended playlist is retained.
    again = packager.publish(sid)
    await again.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
    assert (await expect_abort(again)).code() == grpc.StatusCode.ALREADY_EXISTS


async def test_half_close_without_end_ends_playlist(packager: Packager) -> None:
    sid = session_id("halfclose")
    call = packager.publish(sid)
    await call.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
    for n in range(3):
        await call.write(frame_message(n, size=64))
    await call.done_writing()
    kinds = [response.WhichOneof("response") async for response in call]
    assert kinds == ["ready", "segment", "ended"]
    assert "#EXT-X-ENDLIST" in await wait_for_endlist(packager, sid)


async def test_limits_already_exists_and_resource_exhausted() -> None:
    async with running_packager(max_streams=1) as packager:
        sid = session_id("one")
        first = packager.publish(sid)
        await first.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
        assert (await first.read()).HasField("ready")

        same = packager.publish(sid)
        await same.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
        assert (await expect_abort(same)).code() == grpc.StatusCode.ALREADY_EXISTS

        other = packager.publish(session_id("two"))
        await other.write(config_message(session_id("two"), width=64, height=64, segment_duration_ms=200))
        assert (await expect_abort(other)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        mismatch = packager.publish(session_id("three"))
        await mismatch.write(config_message(session_id("four"), width=64, height=64, segment_duration_ms=200))
        assert (await expect_abort(mismatch)).code() == grpc.StatusCode.INVALID_ARGUMENT
        first.cancel()


async def test_shutdown_ends_live_playlists() -> None:
    async with running_packager() as packager:
        sid = session_id("shutdown")
        call = packager.publish(sid)
        await call.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
        for n in range(3):
            await call.write(frame_message(n, size=64))
        assert (await call.read()).HasField("ready")
        await asyncio.sleep(0.2)
        await packager.servicer.shutdown()
        rest = []
        while (response := await call.read()) is not grpc.aio.EOF:
            rest.append(response.WhichOneof("response"))
        assert rest == ["segment", "ended"]
        assert "#EXTINF:0.12," in await wait_for_endlist(packager, sid)
        late = packager.publish(session_id("late"))
        await late.write(config_message(session_id("late"), width=64, height=64, segment_duration_ms=200))
        assert (await expect_abort(late)).code() == grpc.StatusCode.UNAVAILABLE


# -- HTTP ---------------------------------------------------------------------------------------------------------


async def raw_get(port: int, target: str) -> int:
    """Sends the request line exactly as given (no client-side path normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_http_window_eviction_404s_cors_and_rgb24() -> None:
    async with running_packager(window_segments=2) as packager:
        sid = session_id("window")
        call = packager.publish(sid)
        await call.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
        status, _, body = await packager.get(f"/hls/{sid}/index.m3u8")
        assert status in (200, 404)  # 404 only until the init segment exists
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[:, :, 2] = 255  # blue
        for n in range(20):
            message = frame_message(n, size=64)
            message.frame.video.pixel_format = media_pb2.PIXEL_FORMAT_RGB24
            message.frame.video.data = rgb.tobytes()
            await call.write(message)
        await call.write(END)
        kinds = [response.WhichOneof("response") async for response in call]
        assert kinds == ["ready"] + ["segment"] * 4 + ["ended"]

        status, headers, body = await packager.get(f"/hls/{sid}/index.m3u8")
        text = body.decode()
        assert "#EXT-X-MEDIA-SEQUENCE:2" in text
        assert re.findall(r"^seg\d+\.m4s$", text, re.M) == ["seg2.m4s", "seg3.m4s"]
        assert re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", text) == [
            "2025-06-15T15:06:40.400Z",
            "2025-06-15T15:06:40.600Z",
        ]
        assert "Access-Control-Allow-Origin" not in headers  # no Origin sent

        status, _, body = await packager.get(f"/hls/{sid}/seg0.m4s")
        assert status == 404 and b"no longer available" in body
        status, headers, body = await packager.get(f"/hls/{sid}/seg4.m4s")
        assert status == 404 and b"not available yet" in body and headers["Cache-Control"] == "no-cache"
        status, _, init = await packager.get(f"/hls/{sid}/init.mp4")
        status, _, seg3 = await packager.get(f"/hls/{sid}/seg3.m4s")
        with av.open(io.BytesIO(init + seg3)) as container:
            frame = next(container.decode(video=0))
            r, g, b = frame.to_ndarray(format="rgb24")[32, 32]
        assert b > 200 and r < 60 and g < 60

        async with packager.http.get(
            f"{packager.base}/hls/{sid}/index.m3u8", headers={"Origin": "https://app.example"}
        ) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with packager.http.get(
            f"{packager.base}/hls/{sid}/index.m3u8", headers={"Origin": "https://evil.example"}
        ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers

        for path in (
            f"/hls/{session_id('nobody')}/index.m3u8",  # unknown session
            "/hls/short/index.m3u8",  # malformed id
            f"/hls/{sid}/seg-1.m4s",
            f"/hls/{sid}/seg01.m4s",
            f"/hls/{sid}/other.txt",
            "/hls/",
        ):
            status, _, _ = await packager.get(path)
            assert status == 404, path
        for target in (
            "/hls/../../etc/passwd",
            f"/hls/{sid}/../../../etc/passwd",
            "/hls/..%2F..%2Fetc%2Fpasswd/index.m3u8",
            f"/hls/{sid}%2F..%2F{sid}/index.m3u8",
            f"/hls/{sid}/..%2Finit.mp4",
        ):
            assert await raw_get(packager.http_port, target) == 404, target
        status, _, body = await packager.get("/healthz")
        assert status == 200 and body == b"ok\n"


async def test_ended_playlist_is_dropped_after_retention() -> None:
    async with running_packager(retain_ended_s=0.2) as packager:
        sid = session_id("retain")
        call = packager.publish(sid)
        await call.write(config_message(sid, width=64, height=64, segment_duration_ms=200))
        await call.write(frame_message(0, size=64))
        await call.write(END)
        assert [r.WhichOneof("response") async for r in call] == ["ready", "segment", "ended"]
        assert (await packager.get(f"/hls/{sid}/index.m3u8"))[0] == 200
        await asyncio.sleep(0.4)
        assert (await packager.get(f"/hls/{sid}/index.m3u8"))[0] == 404
        assert packager.store.get(sid) is None


# -- pure parts -----------------------------------------------------------------------------------------------------


def test_playlist_window_and_format() -> None:
    playlist = LivePlaylist(media_epoch_us=EPOCH_S * 1_000_000 + 123_456, segment_duration_us=1_000_000, window=2)
    assert "#EXT-X-MEDIA-SEQUENCE:0" in playlist.render() and "#EXTINF" not in playlist.render()
    assert playlist.add(PlaylistSegment(0, 0, 1_000_000)) == []
    assert playlist.add(PlaylistSegment(1, 1_000_000, 1_000_000)) == []
    assert playlist.add(PlaylistSegment(2, 2_000_000, 333_333)) == [0]
    with pytest.raises(ValueError, match="expected segment 3"):
        playlist.add(PlaylistSegment(5, 0, 1))
    assert 0 not in playlist and 1 in playlist and 2 in playlist and 3 not in playlist
    text = playlist.render()
    assert "#EXT-X-MEDIA-SEQUENCE:1" in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:41.123Z\n#EXTINF:1.0,\nseg1.m4s" in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:42.123Z\n#EXTINF:0.333333,\nseg2.m4s" in text
    assert not text.endswith("#EXT-X-ENDLIST\n")
    playlist.end()
    assert playlist.render().endswith("#EXT-X-ENDLIST\n")
    with pytest.raises(ValueError, match="ended"):
        playlist.add(PlaylistSegment(3, 3_000_000, 1_000_000))
    assert format_duration(40_000) == "0.04" and format_duration(2_000_000) == "2.0"
    assert format_program_date_time(999) == "1970-01-01T00:00:00.000Z"


def test_annexb_split_and_avcc() -> None:
    sps, pps, idr = b"\x67\x42\xc0\x1e\xaa", b"\x68\xce\x0f", b"\x65\x88\x00\x00\x10"
    stream = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01" + idr
    assert fmp4.split_annexb(stream) == [sps, pps, b"\x09\xf0", idr]
    sample = fmp4.annexb_to_sample(stream)
    assert sample.sps == sps and sample.pps == pps
    assert sample.data == b"\x00\x00\x00\x05" + idr
    assert fmp4.avc_codec_string(sps) == "avc1.42C01E"
    assert fmp4.avcc(sps, pps)[:6] == bytes([1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1])


def test_encode_speed_512_with_audio() -> None:
    """Reports encode speed (no timing assertion): 512x512 H.264 + AAC, one thread, like one live session."""
    encoder = SessionEncoder(EncoderSettings(SIZE, SIZE, FPS, RATE, frames_per_segment=25, max_kbps=3000))
    frames = [i420(n) for n in range(100)]
    audio = [pcm(n) for n in range(100)]
    started = time.perf_counter()
    segments = []
    for n in range(100):
        segments += encoder.add_frame(frames[n], audio[n], n >= ONSET_FRAME)
    segments += encoder.finish()
    elapsed = time.perf_counter() - started
    size = sum(len(s.data) for s in segments)
    print(f"\nencode: {100 / elapsed:.0f} frames/s at 512x512 + AAC; {size * 8 / 4 / 1000:.0f} kbit/s")
    assert [s.frame_count for s in segments] == [25, 25, 25, 25]
    # Ending right after a segment boundary loses the audio the AAC encoder still held (< 3 AAC frames).
    assert 100 * SPF - 3 * 1024 <= sum(s.audio_samples for s in segments) <= 100 * SPF


def test_burned_clock_survives_encoding():
    """The glass-to-glass clock reads back exactly after H.264 encoding and decoding."""
    import io

    import av
    import numpy as np

    from services.packager.clock_burn import burn_clock, read_clock
    from services.packager.encoder import EncoderSettings, SessionEncoder

    settings = EncoderSettings(width=256, height=256, fps=25, sample_rate=24000, frames_per_segment=25)
    encoder = SessionEncoder(settings)
    rng = np.random.default_rng(1)
    stamps = [1_764_000_000_000 + 40 * i + int(rng.integers(0, 1000)) for i in range(30)]
    data = [encoder.init_segment]
    for stamp in stamps:
        frame = rng.integers(0, 255, 256 * 256 * 3 // 2, dtype=np.uint8).tobytes()
        for segment in encoder.add_frame(burn_clock(frame, 256, 256, stamp), bytes(2 * 960)):
            data.append(segment.data)
    data.extend(segment.data for segment in encoder.finish())
    with av.open(io.BytesIO(b"".join(data)), format="mp4") as container:
        read = [read_clock(frame.to_ndarray(format="gray")) for frame in container.decode(video=0)]
    assert read == [stamp % (1 << 32) for stamp in stamps]
