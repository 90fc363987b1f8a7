"""Packager: a real in-process gRPC server and HTTP server. The video worker's stream brings the idle loop and the
chunks it rendered (real H.264 from the worker's own encoder), the session's stream commits chunk by chunk; out come
the HLS playlist and fMP4 segments, decoded here with PyAV."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from avatar.v1 import packager_pb2, packager_pb2_grpc
from services.common.errors import invalid_argument_reason
from services.common.h264 import is_idr_sample
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.packager import fmp4
from services.packager.audio import AAC_FRAME_SAMPLES, FULL_LOOKAHEAD_SAMPLES, QUIET_PACKETS, AacTrack
from services.packager.config import PackagerConfig
from services.packager.playlist import LivePlaylist, PlaylistSegment, format_duration, format_program_date_time
from services.packager.service import PackagerServicer
from services.packager.store import HlsStore
from services.video.chunker import ChunkAssembler
from tests.packager_media import (
    CHUNK,
    CHUNK_SAMPLES,
    FPS,
    LOOP_LEVELS,
    RATE,
    SPEECH_LEVEL,
    SPF,
    TOKEN,
    Loop,
    chunk_message,
    decode,
    decode_aac,
    encode_chunk,
    encoder,
    i420,
    idle_loop,
    level_frames,
    levels_match,
    loop_chunk_message,
    open_video,
    read_all,
    serve_packager,
    tone,
    video_config,
)

EPOCH_S = 1_750_000_000  # 2025-06-15T15:06:40Z
SEGMENT_MS = 480  # one 12-frame chunk per segment
SERVICE_NAME = packager_pb2.DESCRIPTOR.services_by_name["PackagerService"].full_name
END = packager_pb2.PublishRequest(end=packager_pb2.EndOfStream())


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

    async def get(self, path: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
        async with self.http.request(method, self.base + path, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()

    def held(self, session_id: str) -> dict:
        """The rendered chunks the packager holds for a session, by start frame (empty when it has none)."""
        media = self.servicer._media.get(session_id)
        return dict(media.chunks._versions) if media is not None else {}

    async def wait_held(self, session_id: str, start: int, epoch: int | None = None, timeout_s: float = 10.0) -> None:
        """Waits until the video stream's chunk at `start` (of `epoch`) is held: everything the stream sent before
        it has been processed."""
        deadline = time.monotonic() + timeout_s
        while True:
            version = self.held(session_id).get(start)
            if version is not None and (epoch is None or version.epoch == epoch):
                return
            assert time.monotonic() < deadline, f"chunk {start} never arrived: {self.held(session_id)}"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_packager(**overrides) -> AsyncIterator[Packager]:
    # A generous grace by default: a rendered chunk sent before its commit crosses another stream, so it may be
    # processed after the commit; tests about lateness set a short one.
    config = replace(PackagerConfig(retain_ended_s=600.0, render_grace_s=10.0), **overrides)
    store = HlsStore(config.window_segments, config.retain_ended_s)
    servicer = PackagerServicer(config, store)
    async with serve_packager(servicer, store, ["https://app.example"]) as served:
        yield Packager(
            packager_pb2_grpc.PackagerServiceStub(served.channel),
            served.http,
            f"http://127.0.0.1:{served.http_port}",
            store,
            servicer,
            served.http_port,
        )


@pytest.fixture
async def packager() -> AsyncIterator[Packager]:
    async with running_packager() as running:
        yield running


# -- messages -----------------------------------------------------------------------------------------------------


def session_id(tag: str) -> str:
    return f"test-{tag}-0123456789abcdef"[:64]


def config_message(sid: str, loop: Loop | None = None, **overrides) -> packager_pb2.PublishRequest:
    loop = loop or idle_loop()
    fields = dict(
        stream_id=sid,
        width=loop.width,
        height=loop.height,
        fps=FPS,
        sample_rate_hz=RATE,
        segment_duration_ms=SEGMENT_MS,
        media_epoch=Timestamp(seconds=EPOCH_S),
        chunk_frames=CHUNK,
        publish_token=TOKEN,
        idle_loop_id=loop.loop_id,
    )
    fields.update(overrides)
    return packager_pb2.PublishRequest(config=packager_pb2.PublishConfig(**fields))


def commit(
    start: int,
    idle_index: int = 0,
    *,
    loop: Loop | None = None,
    pcm: bytes = b"",
    speech: bool = False,
    rendered: bool = False,
    epoch: int = 0,
) -> packager_pb2.PublishRequest:
    return packager_pb2.PublishRequest(
        chunk=packager_pb2.ChunkCommit(
            start_frame_index=start,
            pcm_s16le=pcm,
            speech=speech,
            idle_loop_id=(loop or idle_loop()).loop_id,
            idle_chunk_index=idle_index,
            rendered=rendered,
            epoch=epoch,
        )
    )


def kinds(responses: list[packager_pb2.PublishResponse]) -> list[str]:
    return [response.WhichOneof("response") for response in responses]


async def start_publish(
    packager: Packager, sid: str, loop: Loop | None = None, **overrides
) -> grpc.aio.StreamStreamCall:
    call = packager.publish(sid)
    await call.write(config_message(sid, loop, **overrides))
    response = await call.read()
    assert response is not grpc.aio.EOF and response.HasField("ready"), response
    assert response.ready.playlist_path == f"/hls/{sid}/index.m3u8"
    return call


async def read_through_segment(call: grpc.aio.StreamStreamCall) -> list[packager_pb2.PublishResponse]:
    """Responses up to and including the next segment."""
    responses = []
    while True:
        response = await call.read()
        assert response is not grpc.aio.EOF, f"stream ended: {kinds(responses)} {await call.code()}"
        responses.append(response)
        if response.HasField("segment"):
            return responses


async def end_publish(call: grpc.aio.StreamStreamCall) -> list[packager_pb2.PublishResponse]:
    await call.write(END)
    rest = await read_all(call)
    assert await call.code() == grpc.StatusCode.OK
    return rest


async def upload_loop(packager: Packager, loop: Loop) -> None:
    """Puts a loop on the packager through a short-lived video stream of another session."""
    video = await open_video(
        packager.stub, session_id(f"uploader{loop.width}"), loop, token="uploader-token-0123456789"
    )
    assert await video.close() == grpc.StatusCode.OK
    assert packager.servicer.loops.get(loop.loop_id) is not None


async def expect_abort(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all(call)
    return caught.value


async def wait_for_endlist(packager: Packager, sid: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, body = await packager.get(f"/hls/{sid}/index.m3u8")
        if status == 200 and body.decode().rstrip().endswith("#EXT-X-ENDLIST"):
            return body.decode()
        assert time.monotonic() < deadline, f"no ENDLIST: {status} {body[:300]!r}"
        await asyncio.sleep(0.02)


async def wait_until(condition, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def fetch_all(packager: Packager, sid: str, sequences) -> tuple[bytes, list[bytes]]:
    status, _, init = await packager.get(f"/hls/{sid}/init.mp4")
    assert status == 200
    segments = []
    for sequence in sequences:
        status, _, data = await packager.get(f"/hls/{sid}/seg{sequence}.m4s")
        assert status == 200, sequence
        segments.append(data)
    return init, segments


def rendered_chunks(start: int, count: int, width: int, height: int, level: int, epoch: int = 0) -> list:
    """`count` chunks from frame `start`, rendered and encoded as the video worker does (one stream)."""
    enc = encoder(width, height)
    assembler = ChunkAssembler(CHUNK, enc.encode)
    chunks = []
    for n in range(start, start + count * CHUNK):
        chunk = assembler.add(n, epoch, i420(n, width, height, level))
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def where(chunk) -> tuple[int, int, int]:
    return chunk.start_frame_index, chunk.first_frame_index, chunk.epoch


def per_frame(levels: list[int]) -> list[int]:
    return [level for level in levels for _ in range(CHUNK)]


# -- the main path ------------------------------------------------------------------------------------------------


async def test_main_path_idle_and_rendered_chunks_in_sync(packager: Packager) -> None:
    loop = idle_loop(256, 256)
    sid = session_id("main")
    video = await open_video(packager.stub, sid, loop)
    assert video.loop_uploaded
    stored = packager.servicer.loops.get(loop.loop_id)
    assert stored is not None and len(stored.chunks) == 4

    call = await start_publish(packager, sid, loop)
    for chunk in rendered_chunks(24, 2, 256, 256, SPEECH_LEVEL):  # the worker renders ahead of playout
        await video.send(chunk.start_frame_index, chunk.frames, chunk.epoch)

    # (start, idle chunk, rendered): idle, idle, speech, speech, idle...
    plan = [(0, 0, False), (12, 1, False), (24, 2, True), (36, 3, True), (48, 3, False), (60, 2, False)]
    plan += [(72, 1, False), (84, 0, False)]
    responses: list[packager_pb2.PublishResponse] = []
    live_playlist = None
    for start, idle_index, rendered in plan:
        pcm = tone(start * SPF, CHUNK_SAMPLES) if rendered else b""
        await call.write(commit(start, idle_index, loop=loop, pcm=pcm, speech=rendered, rendered=rendered))
        responses += await read_through_segment(call)
        if live_playlist is None:
            live_playlist = await packager.get(f"/hls/{sid}/index.m3u8")
    responses += await end_publish(call)
    assert await video.close() == grpc.StatusCode.OK
    await wait_until(lambda: sid not in packager.servicer._media, "the session's state was not released")
    assert stored.pins == 0 and packager.servicer.loops.get(loop.loop_id) is stored  # kept for the next session

    assert kinds(responses) == ["part", "segment"] * 8 + ["ended"]  # one chunk, one part, per segment here
    parts = [response.part for response in responses[0:16:2]]
    assert [(p.sequence, p.index, p.uri) for p in parts] == [(k, 0, f"seg{k}.0.m4s") for k in range(8)]
    assert [(p.start_frame_index, p.frame_count) for p in parts] == [(12 * k, 12) for k in range(8)]
    assert [(p.start_us, p.duration_us) for p in parts] == [(480_000 * k, 480_000) for k in range(8)]
    assert [p.has_speech for p in parts] == [False, False, True, True, False, False, False, False]
    segments = [response.segment for response in responses[1:16:2]]
    assert [s.sequence for s in segments] == list(range(8))
    assert [s.uri for s in segments] == [f"seg{k}.m4s" for k in range(8)]
    assert [s.start_frame_index for s in segments] == [12 * k for k in range(8)]
    assert [s.frame_count for s in segments] == [12] * 8
    assert [s.start_us for s in segments] == [480_000 * k for k in range(8)]
    assert [s.duration_us for s in segments] == [480_000] * 8
    assert [s.has_speech for s in segments] == [False, False, True, True, False, False, False, False]
    assert responses[-1].ended.segment_count == 8

    # Idle segments are the loop's own sample bytes (shared, not copied), from the loop chunk the commit named.
    stream = packager.store.get(sid)
    assert stream is not None
    for sequence, (_, idle_index, rendered) in enumerate(plan):
        pieces = stream.segments[sequence]  # styp, the fragment's moof + mdat header, its samples...
        assert pieces[0] == fmp4.STYP
        shared = [pieces[2 + j] is stored.chunks[idle_index].frames[j] for j in range(CHUNK)]
        assert all(shared) if not rendered else not any(shared), sequence
        part = stream.parts[(sequence, 0)]  # the part is the same fragment: the same bytes objects
        assert len(part) == len(pieces) - 1 and all(a is b for a, b in zip(part, pieces[1:], strict=True))

    # While live: no ENDLIST, not cacheable.
    status, headers, body = live_playlist
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    assert "#EXT-X-ENDLIST" not in body.decode() and "seg0.m4s" in body.decode()
    assert body.decode().endswith(
        '#EXT-X-PART:DURATION=0.48,URI="seg0.0.m4s",INDEPENDENT=YES\n#EXTINF:0.48,\nseg0.m4s\n'
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg1.0.m4s"\n'
    )

    status, headers, body = await packager.get(f"/hls/{sid}/index.m3u8")
    assert status == 200
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    assert headers["Cache-Control"] == "public, max-age=3600"
    text = body.decode()
    lines = text.splitlines()
    assert lines[:8] == [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-PART-INF:PART-TARGET=0.48",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=1.44",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-MAP:URI="init.mp4"',
    ]
    assert lines[-1] == "#EXT-X-ENDLIST"
    assert re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", text) == [
        "2025-06-15T15:06:40.000Z",
        "2025-06-15T15:06:40.480Z",
        "2025-06-15T15:06:40.960Z",
        "2025-06-15T15:06:41.440Z",
        "2025-06-15T15:06:41.920Z",
        "2025-06-15T15:06:42.400Z",
        "2025-06-15T15:06:42.880Z",
        "2025-06-15T15:06:43.360Z",
    ]
    assert re.findall(r"#EXTINF:([0-9.]+),", text) == ["0.48"] * 8
    assert re.findall(r"^seg\d+\.m4s$", text, re.M) == [f"seg{k}.m4s" for k in range(8)]
    # Parts stay listed for the segments within three target durations (3 s) of the end: not segment 0's.
    assert re.findall(r"#EXT-X-PART:(.*)", text) == [
        f'DURATION=0.48,URI="seg{k}.0.m4s",INDEPENDENT=YES' for k in range(1, 8)
    ]
    assert '\n#EXT-X-PART:DURATION=0.48,URI="seg7.0.m4s",INDEPENDENT=YES\n#EXTINF:0.48,\nseg7.m4s\n' in text
    assert "#EXT-X-PRELOAD-HINT" not in text

    status, headers, init = await packager.get(f"/hls/{sid}/init.mp4")
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert headers["Cache-Control"] == "public, max-age=86400, immutable"
    assert init[4:8] == b"ftyp" and b"moov" in init[:64]
    _, media = await fetch_all(packager, sid, range(8))
    for sequence, data in enumerate(media):
        status, headers, _ = await packager.get(f"/hls/{sid}/seg{sequence}.m4s")
        assert headers["Content-Type"] == "video/iso.segment"
        assert headers["Cache-Control"] == "public, max-age=86400, immutable"
        assert b"moof" in data[:64]
        head_status, head_headers, head_body = await packager.get(f"/hls/{sid}/seg{sequence}.m4s", method="HEAD")
        assert head_status == 200 and head_body == b"" and int(head_headers["Content-Length"]) == len(data)
    parts_data = []
    for sequence, data in enumerate(media):
        status, headers, part = await packager.get(f"/hls/{sid}/seg{sequence}.0.m4s")
        assert status == 200 and headers["Content-Type"] == "video/iso.segment"
        assert headers["Cache-Control"] == "public, max-age=86400, immutable"
        assert part == data[len(fmp4.STYP) :]  # the segment's only part: the segment less its styp
        parts_data.append(part)
    status, headers, _ = await packager.get(f"/hls/{sid}/seg0.1.m4s")
    assert status == 404 and headers["Cache-Control"] == "no-cache"
    head_status, _, head_body = await packager.get(f"/hls/{sid}/index.m3u8", method="HEAD")
    assert head_status == 200 and head_body == b""

    decoded = decode(init + b"".join(media))
    frames = 8 * CHUNK
    assert decoded.facts == {
        "video_codec": "h264",
        "size": (256, 256),
        "audio_codec": "aac",
        "sample_rate": RATE,
        "channels": 1,
    }
    assert [round(t * FPS, 6) for t in decoded.times] == list(range(frames))  # frame n at n / fps
    assert decoded.keyframes == [n % CHUNK == 0 for n in range(frames)]
    assert decoded.idr == [n % CHUNK == 0 for n in range(frames)]
    expected = [LOOP_LEVELS[idle] if not rendered else SPEECH_LEVEL for _, idle, rendered in plan]
    assert levels_match(decoded.centre, per_frame(expected)), decoded.centre

    audio = decoded.audio
    assert decoded.audio_start == pytest.approx(0.0, abs=1e-6)
    # 96 frames of 960 samples are 90 AAC frames; the last one or two (silence after the last chunk) have no
    # segment left to go into once the stream ends.
    assert frames * SPF - 2 * AAC_FRAME_SAMPLES <= len(audio) <= frames * SPF
    square_at = decoded.times[next(n for n, luma in enumerate(decoded.centre) if luma > 200)]
    tone_at = decoded.audio_start + int(np.argmax(np.abs(audio) > 0.1)) / RATE
    assert square_at == pytest.approx(24 / FPS, abs=1e-6)
    assert abs(tone_at - square_at) < 0.020, (tone_at, square_at)
    assert np.max(np.abs(audio[: int(0.9 * RATE)])) < 0.01  # silent before the onset
    assert np.max(np.abs(audio[int(2.1 * RATE) :])) < 0.01  # and after the speech (the encoder stopped cleanly)
    speech = audio[int(1.0 * RATE) : int(1.9 * RATE)]
    assert np.sqrt(np.mean(speech**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)
    spectrum = np.abs(np.fft.rfft(speech))
    assert np.fft.rfftfreq(len(speech), 1 / RATE)[int(np.argmax(spectrum))] == pytest.approx(440, abs=3)

    # Every segment, and every part, stands alone after the init segment (a player joining late).
    for sequence, data in enumerate(media):
        for blob in (data, parts_data[sequence]):
            alone = decode(init + blob)
            assert [round(t * FPS, 6) for t in alone.times] == list(range(12 * sequence, 12 * sequence + 12))
            assert alone.idr[0] and levels_match(alone.centre, per_frame([expected[sequence]])), sequence
    # The parts joined play exactly as the segments do.
    by_parts = decode(init + b"".join(parts_data))
    assert (by_parts.times, by_parts.centre, by_parts.idr) == (decoded.times, decoded.centre, decoded.idr)
    assert np.array_equal(by_parts.audio, decoded.audio)


# -- rendered chunks that are not there ------------------------------------------------------------------------------


async def test_late_and_lost_chunks_show_the_loop() -> None:
    loop = idle_loop()
    async with running_packager(render_grace_s=0.2) as packager:
        sid = session_id("late")
        video = await open_video(packager.stub, sid, loop)
        call = await start_publish(packager, sid)

        # Chunk 0 is rendered but never arrives: its commit stalls ("late": the video stream is alive).
        await call.write(commit(0, 0, rendered=True, pcm=tone(0, CHUNK_SAMPLES), speech=True))
        responses = await read_through_segment(call)
        assert kinds(responses) == ["stall", "part", "segment"]
        stall = responses[0].stall
        assert (stall.start_frame_index, stall.frame_count, stall.reason) == (0, CHUNK, "late")
        assert responses[1].part.has_speech and responses[2].segment.has_speech  # its audio played

        # It arrives after its commit: ignored. (Chunk 24 after it on the same stream shows it was processed.)
        late, on_time = rendered_chunks(0, 1, 128, 128, SPEECH_LEVEL)[0], rendered_chunks(24, 1, 128, 128, 200)[0]
        await video.send(0, late.frames)
        await video.send(24, on_time.frames)
        await packager.wait_held(sid, 24)
        assert set(packager.held(sid)) == {24}

        await call.write(commit(12, 1))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]
        await call.write(commit(24, 2, rendered=True))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]

        # No video stream any more: "lost" at once.
        assert await video.close() == grpc.StatusCode.OK
        await call.write(commit(36, 3, rendered=True))
        responses = await read_through_segment(call)
        assert kinds(responses) == ["stall", "part", "segment"]
        assert (responses[0].stall.start_frame_index, responses[0].stall.reason) == (36, "lost")
        assert kinds(await end_publish(call)) == ["ended"]

        init, media = await fetch_all(packager, sid, range(4))
        decoded = decode(init + b"".join(media))
        assert decoded.keyframes == [n % CHUNK == 0 for n in range(4 * CHUNK)]
        assert levels_match(decoded.centre, per_frame([LOOP_LEVELS[0], LOOP_LEVELS[1], 200, LOOP_LEVELS[3]]))


# -- interrupts -----------------------------------------------------------------------------------------------------


async def test_interrupt_splices_a_partial_update_onto_the_chunk() -> None:
    loop = idle_loop()
    version_1, version_2 = 235, 180
    async with running_packager(render_grace_s=0.2) as packager:
        sid = session_id("splice")
        video = await open_video(packager.stub, sid, loop)
        call = await start_publish(packager, sid)

        enc = encoder(128, 128)
        assembler = ChunkAssembler(CHUNK, enc.encode)
        full = None
        for n in range(CHUNK):
            full = assembler.add(n, 1, i420(n, 128, 128, version_1))
        assert full is not None and where(full) == (0, 0, 1)
        await video.send(0, full.frames, epoch=1)
        assembler.reset(6)  # an interrupt re-renders frames 6.. of chunk 0
        partial = None
        for n in range(6, CHUNK):
            partial = assembler.add(n, 2, i420(n, 128, 128, version_2))
        assert partial is not None and where(partial) == (0, 6, 2)
        assert len(partial.frames) == 6 and is_idr_sample(partial.frames[0])
        await video.send(0, partial.frames, epoch=2, first=6)

        # A partial update of a chunk never sent has nothing to splice onto: refused (the stream stays open).
        orphan = encode_chunk(level_frames(18, 6, 128, 128, version_2), 128, 128)
        await video.send(12, orphan, epoch=1, first=18)
        # Chunk 24 at epoch 1; its commit will ask for epoch 3, which never comes.
        await video.send(24, rendered_chunks(24, 1, 128, 128, version_1, epoch=1)[0].frames, epoch=1)
        await packager.wait_held(sid, 24)
        held = packager.held(sid)
        assert set(held) == {0, 24} and held[0].epoch == 2

        await call.write(commit(0, 0, rendered=True, epoch=2))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]
        await call.write(commit(12, 1, rendered=True, epoch=1))
        responses = await read_through_segment(call)
        assert kinds(responses) == ["stall", "part", "segment"] and responses[0].stall.reason == "late"
        await call.write(commit(24, 2, rendered=True, epoch=3))
        responses = await read_through_segment(call)
        assert kinds(responses) == ["stall", "part", "segment"] and responses[0].stall.reason == "late"
        await end_publish(call)
        assert await video.close() == grpc.StatusCode.OK

        # The segment's pictures: the first six frames as sent first, the rest from the update.
        # (styp, the fragment's moof + mdat header, then its samples: the part is the segment without styp)
        stream = packager.store.get(sid)
        assert stream.segments[0][2 : 2 + CHUNK] == (*full.frames[:6], *partial.frames)
        assert stream.segments[0][1:] == stream.parts[(0, 0)]
        init, media = await fetch_all(packager, sid, range(3))
        decoded = decode(init + b"".join(media))
        assert len(decoded.times) == 3 * CHUNK  # all decodable
        spliced = [version_1] * 6 + [version_2] * 6
        assert levels_match(decoded.centre, spliced + per_frame([LOOP_LEVELS[1], LOOP_LEVELS[2]])), decoded.centre
        assert decoded.keyframes == [n in (0, 6) or n % CHUNK == 0 for n in range(3 * CHUNK)]
        assert decoded.idr == decoded.keyframes
        # The spliced segment alone decodes too.
        alone = decode(init + media[0])
        assert levels_match(alone.centre, spliced)


# -- errors -------------------------------------------------------------------------------------------------------


def _config(tag: str, **overrides) -> packager_pb2.PublishRequest:
    return config_message(session_id(tag), **overrides)


def _no_epoch() -> packager_pb2.PublishRequest:
    message = _config("noepoch")
    message.config.ClearField("media_epoch")
    return message


@pytest.mark.parametrize(
    ("first", "field", "needle"),
    [
        (commit(0), "config", "first message"),
        (_config("x", stream_id="short"), "config.stream_id", "stream_id"),
        (_config("x", stream_id="../../../etc/passwd-xxxxxxxx"), "config.stream_id", "stream_id"),
        (_config("odd", width=127), "config.width", "even number"),
        (_config("big", height=2048), "config.height", "height"),
        (_config("fps", fps=0), "config.fps", "fps must be"),
        (_config("chunk", chunk_frames=0), "config.chunk_frames", "chunk_frames"),
        (_config("rate", sample_rate_hz=22000), "config.sample_rate_hz", "sample_rate_hz must be one of"),
        (_config("seg", segment_duration_ms=400), "config.segment_duration_ms", "whole number of 12-frame chunks"),
        (_config("seg2", segment_duration_ms=2000), "config.segment_duration_ms", "200 to 1000"),
        (_no_epoch(), "config.media_epoch", "media_epoch"),
        (_config("token", publish_token="short"), "config.publish_token", "publish_token"),
        (_config("loopid", idle_loop_id="ABCDEF"), "config.idle_loop_id", "32 lowercase hex"),
    ],
)
async def test_bad_publish_config_is_invalid_argument(packager: Packager, first, field: str, needle: str) -> None:
    sid = first.config.stream_id if first.HasField("config") else session_id("commit")
    call = packager.stub.Publish()
    await call.write(first)
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in error.details()
    assert invalid_argument_reason(error)[0] == field
    assert packager.servicer.live_streams == 0
    assert packager.store.get(sid) is None and sid not in packager.servicer._media


@pytest.mark.parametrize(
    ("bad", "field", "needle"),
    [
        (commit(24), "chunk.start_frame_index", "out of order: expected 12"),
        (commit(12, pcm=bytes(2 * CHUNK_SAMPLES - 2)), "chunk.pcm_s16le", "has 23038 bytes of PCM; it needs 23040"),
        (
            packager_pb2.PublishRequest(chunk=packager_pb2.ChunkCommit(start_frame_index=12, idle_loop_id="nope")),
            "chunk.idle_loop_id",
            "idle_loop_id",
        ),
        (commit(12, -1), "chunk.idle_chunk_index", "must not be negative"),
        (config_message(session_id("again")), "config", "only once"),
        (packager_pb2.PublishRequest(), "request", "set chunk or end"),
    ],
)
async def test_bad_commit_is_invalid_argument_and_ends_playlist(packager: Packager, bad, field: str, needle: str):
    await upload_loop(packager, idle_loop())
    sid = session_id("badcommit")
    call = await start_publish(packager, sid)
    await call.write(commit(0, 0))
    assert kinds(await read_through_segment(call)) == ["part", "segment"]
    await call.write(bad)
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in error.details()
    assert invalid_argument_reason(error)[0] == field
    text = await wait_for_endlist(packager, sid)  # what was committed stays, closed
    assert re.findall(r"^seg\d+\.m4s$", text, re.M) == ["seg0.m4s"]
    await wait_until(lambda: sid not in packager.servicer._media, "the session's state was not released")
    assert packager.servicer.live_streams == 0


def _tampered() -> list[bytes]:
    frames = list(idle_loop().chunks[0])
    last = bytearray(frames[-1])
    last[-1] ^= 0x01  # still a well-formed sample, different content
    frames[-1] = bytes(last)
    return frames


@pytest.mark.parametrize(
    ("config_overrides", "uploads", "field", "needle"),
    [
        ({"stream_id": "short"}, None, "config.stream_id", "stream_id"),
        ({"publish_token": "short"}, None, "config.publish_token", "publish_token"),
        ({"width": 101}, None, "config.width", "even number"),
        ({"fps": 61}, None, "config.fps", "fps must be"),
        ({"chunk_frames": 61}, None, "config.chunk_frames", "chunk_frames must be"),
        ({"sps": b""}, None, "config.sps", "sps must be"),
        ({"pps": bytes(2000)}, None, "config.pps", "pps must be"),
        ({"idle_loop_id": "x" * 32}, None, "config.idle_loop_id", "32 lowercase hex"),
        ({"idle_loop_chunks": 0}, None, "config.idle_loop_chunks", "idle_loop_chunks"),
        ({}, [(4, 0)], "loop_chunk", "loop chunk 4 is out of range (0..3)"),
        ({}, [(0, 0), (0, 0)], "loop_chunk", "loop chunk 0 arrived twice"),
        ({}, [(0, "rotated")], "loop_chunk", "must start with an IDR frame"),
        ({}, [(0, "short")], "loop_chunk", "a chunk has 12 frames, this one 11"),
        ({}, [(0, "garbage")], "loop_chunk", "frame 3 of the chunk: malformed AVC sample"),
        ({}, [(0, "tampered"), (1, 1), (2, 2), (3, 3)], "loop_chunk", "does not match its id"),
        ({}, [(0, 0), (-1, "chunk")], "loop_chunk", "the loop's chunks must come first"),
    ],
)
async def test_bad_video_stream_is_invalid_argument(packager: Packager, config_overrides, uploads, field, needle):
    loop = idle_loop()
    sid = session_id("badvideo")
    overrides = dict(config_overrides)
    config = video_config(overrides.pop("stream_id", sid), loop, **overrides)
    call = packager.stub.PublishVideo()
    await call.write(packager_pb2.PublishVideoRequest(config=config))
    if uploads is not None:
        response = await call.read()
        assert response.HasField("loop_wanted")
        for index, content in uploads:
            frames = loop.chunks[content] if isinstance(content, int) else list(loop.chunks[0])
            if content == "rotated":
                frames = frames[1:] + frames[:1]
            elif content == "short":
                frames = frames[:-1]
            elif content == "garbage":
                frames[3] = b"\x00\x00\x00\x09abc"  # the NAL length runs past the end
            elif content == "tampered":
                frames = _tampered()
            if content == "chunk":
                await call.write(chunk_message(0, loop.chunks[0]))
            else:
                await call.write(loop_chunk_message(index, frames))
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in error.details(), error.details()
    assert invalid_argument_reason(error)[0] == field
    await wait_until(lambda: sid not in packager.servicer._media, "the session's state was not released")
    assert packager.servicer.loops.get(loop.loop_id) is None and len(packager.servicer.loops) == 0


async def test_first_video_message_must_be_config(packager: Packager) -> None:
    call = packager.stub.PublishVideo()
    await call.write(chunk_message(0, idle_loop().chunks[0]))
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "first message" in error.details()
    assert invalid_argument_reason(error)[0] == "config"


async def test_missing_loop_token_mismatch_and_other_refusals(packager: Packager) -> None:
    loop = idle_loop()
    # A loop this packager does not hold.
    sid = session_id("noloop")
    call = packager.publish(sid)
    await call.write(config_message(sid))
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"idle loop {loop.loop_id} is not on this packager" in error.details()
    assert packager.store.get(sid) is None and sid not in packager.servicer._media

    # The video stream came with another token than the session's: the session is refused.
    sid = session_id("token")
    video = await open_video(packager.stub, sid, loop, token="the-workers-token-0123456789")
    call = packager.publish(sid)
    await call.write(config_message(sid))
    error = await expect_abort(call)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "publish_token" in error.details()
    assert packager.store.get(sid) is None and packager.servicer.live_streams == 0
    assert not packager.servicer._media[sid].publishing
    assert await video.close() == grpc.StatusCode.OK
    await wait_until(lambda: sid not in packager.servicer._media, "the session's state was not released")

    # And the other way round: a live session refuses a worker with another token.
    sid = session_id("token2")
    call = await start_publish(packager, sid)
    intruder = packager.stub.PublishVideo()
    await intruder.write(packager_pb2.PublishVideoRequest(config=video_config(sid, loop, "another-token-0123456789")))
    error = await expect_abort(intruder)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert packager.servicer._media[sid].video_streams == 0

    # A worker that chunks differently from the live session.
    odd = packager.stub.PublishVideo()
    await odd.write(packager_pb2.PublishVideoRequest(config=video_config(sid, loop, chunk_frames=6)))
    error = await expect_abort(odd)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid_argument_reason(error)[0] == "config.chunk_frames"

    # A session whose size differs from its idle loop's.
    other = session_id("size")
    mismatch = packager.publish(other)
    await mismatch.write(config_message(other, width=256, height=256))
    error = await expect_abort(mismatch)
    assert (
        error.code() == grpc.StatusCode.INVALID_ARGUMENT and invalid_argument_reason(error)[0] == "config.idle_loop_id"
    )

    # The x-session-id metadata names another session than the config.
    mismatch = packager.publish(session_id("three"))
    await mismatch.write(config_message(session_id("four")))
    error = await expect_abort(mismatch)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata" in error.details()
    assert packager.store.get(session_id("four")) is None

    await end_publish(call)
    assert "#EXT-X-ENDLIST" in await wait_for_endlist(packager, sid)
    await wait_until(lambda: packager.servicer._media == {}, "sessions' state was not released")


# -- how a stream stops ---------------------------------------------------------------------------------------------


async def test_disconnect_without_end_ends_playlist(packager: Packager) -> None:
    await upload_loop(packager, idle_loop())
    sid = session_id("cancel")
    call = await start_publish(packager, sid, segment_duration_ms=960)  # two chunks per segment
    for start in (0, 12, 24):
        await call.write(commit(start, start // 12))
    assert kinds(await read_through_segment(call)) == ["part", "part", "segment"]
    third = await call.read()  # the third chunk is a part of the segment in progress
    assert third.part.uri == "seg1.0.m4s" and third.part.start_frame_index == 24
    call.cancel()
    text = await wait_for_endlist(packager, sid)
    # The segment of two chunks, then the third chunk alone: what was committed.
    assert re.findall(r"^seg\d+\.m4s$", text, re.M) == ["seg0.m4s", "seg1.m4s"]
    assert re.findall(r"#EXTINF:([0-9.]+),", text) == ["0.96", "0.48"]
    assert re.findall(r'#EXT-X-PART:DURATION=([0-9.]+),URI="([^"]+)"', text) == [
        ("0.48", "seg0.0.m4s"),
        ("0.48", "seg0.1.m4s"),
        ("0.48", "seg1.0.m4s"),
    ]
    assert "#EXT-X-PRELOAD-HINT" not in text
    await wait_until(lambda: packager.servicer.live_streams == 0, "the stream is still live")
    await wait_until(lambda: sid not in packager.servicer._media, "the session's state was not released")
    init, media = await fetch_all(packager, sid, range(2))
    decoded = decode(init + b"".join(media))
    assert levels_match(decoded.centre, per_frame(list(LOOP_LEVELS[:3])))
    # The id stays taken while the ended playlist is retained.
    again = packager.publish(sid)
    await again.write(config_message(sid))
    assert (await expect_abort(again)).code() == grpc.StatusCode.ALREADY_EXISTS


async def test_half_close_without_end_ends_playlist(packager: Packager) -> None:
    await upload_loop(packager, idle_loop())
    sid = session_id("halfclose")
    call = await start_publish(packager, sid, segment_duration_ms=960)
    for start in (0, 12, 24):
        await call.write(commit(start, 0, pcm=tone(start * SPF, CHUNK_SAMPLES)))
    await call.done_writing()
    responses = await read_all(call)
    assert kinds(responses) == ["part", "part", "segment", "part", "segment", "ended"]
    assert [(r.part.sequence, r.part.index) for r in responses if r.HasField("part")] == [(0, 0), (0, 1), (1, 0)]
    assert [r.segment.frame_count for r in responses if r.HasField("segment")] == [24, 12]
    assert responses[-1].ended.segment_count == 2
    text = await wait_for_endlist(packager, sid)
    assert re.findall(r"#EXTINF:([0-9.]+),", text) == ["0.96", "0.48"]
    init, media = await fetch_all(packager, sid, range(2))
    decoded = decode(init + b"".join(media))
    assert len(decoded.times) == 36
    # Each part carries the AAC packets finished when it was muxed, and parts are published at once, so what the
    # encoder still owed at the end (its delay: under three packets) has no part left to go into. Up to there the
    # tone is continuous and runs to the end of the audio.
    assert 36 * SPF - 3 * AAC_FRAME_SAMPLES <= len(decoded.audio) <= 36 * SPF
    assert len(decoded.audio) % AAC_FRAME_SAMPLES == 0
    assert np.max(np.abs(decoded.audio[-2048:])) > 0.3
    assert np.min([np.max(np.abs(decoded.audio[i : i + 256])) for i in range(2048, len(decoded.audio), 256)]) > 0.3


async def test_limits_already_exists_and_resource_exhausted() -> None:
    async with running_packager(max_streams=1) as packager:
        await upload_loop(packager, idle_loop())
        sid = session_id("one")
        first = await start_publish(packager, sid)

        same = packager.publish(sid)
        await same.write(config_message(sid))
        assert (await expect_abort(same)).code() == grpc.StatusCode.ALREADY_EXISTS

        other = packager.publish(session_id("two"))
        await other.write(config_message(session_id("two")))
        error = await expect_abort(other)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "1 playlists" in error.details()
        assert packager.store.get(session_id("two")) is None
        first.cancel()
        await wait_for_endlist(packager, sid)


async def test_shutdown_ends_live_playlists_and_refuses_new_streams() -> None:
    loop = idle_loop()
    async with running_packager() as packager:
        sid = session_id("shutdown")
        video = await open_video(packager.stub, sid, loop)
        call = await start_publish(packager, sid)
        await call.write(commit(0, 0))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]
        await packager.servicer.shutdown()
        text = await wait_for_endlist(packager, sid)
        assert re.findall(r"^seg\d+\.m4s$", text, re.M) == ["seg0.m4s"]

        late = packager.publish(session_id("late"))
        await late.write(config_message(session_id("late")))
        assert (await expect_abort(late)).code() == grpc.StatusCode.UNAVAILABLE
        late_video = packager.stub.PublishVideo()
        await late_video.write(packager_pb2.PublishVideoRequest(config=video_config(session_id("late"), loop)))
        assert (await expect_abort(late_video)).code() == grpc.StatusCode.UNAVAILABLE
        call.cancel()
        await wait_until(lambda: packager.servicer.live_streams == 0, "the stream is still live")
        assert await video.close() == grpc.StatusCode.OK


async def test_commits_after_shutdown_end_the_stream_cleanly() -> None:
    """The session's stream may go on committing during the server's grace period after shutdown()."""
    async with running_packager() as packager:
        await upload_loop(packager, idle_loop())
        sid = session_id("aftershutdown")
        call = await start_publish(packager, sid)
        await call.write(commit(0, 0))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]
        await packager.servicer.shutdown()
        # The packager may finish the call (OK) as soon as the commit after shutdown arrives: writing END then
        # raises InvalidStateError ("RPC already finished") on the client, which is fine.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(commit(12, 1))  # completes a segment
            await call.write(END)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await read_all(call)
        # Ended like any playlist (OK and `ended`), or refused plainly; not an internal error.
        assert await call.code() in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), await call.details()


async def test_stream_after_shutdown_ends_and_releases_the_session() -> None:
    loop = idle_loop()
    async with running_packager() as packager:
        await upload_loop(packager, loop)
        sid = session_id("errorshutdown")
        call = await start_publish(packager, sid, segment_duration_ms=960)
        await call.write(commit(0, 0))  # half a segment, still in the muxer at shutdown
        await packager.servicer.shutdown()
        await call.write(commit(36, 3))  # whatever comes after shutdown only ends the stream
        with contextlib.suppress(grpc.aio.AioRpcError):
            await read_all(call)
        assert await call.code() in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), await call.details()
        await wait_until(lambda: packager.servicer.live_streams == 0, "the stream is still live", timeout_s=2)
        assert sid not in packager.servicer._media
        assert packager.servicer.loops.get(loop.loop_id).pins == 0


# -- two video streams ----------------------------------------------------------------------------------------------


async def test_newer_video_stream_replaces_older_and_parameter_sets_must_match() -> None:
    async with running_packager(render_grace_s=0.3) as packager:
        loop = idle_loop()
        sid = session_id("replace")
        older = await open_video(packager.stub, sid, loop)
        call = await start_publish(packager, sid)
        chunks = rendered_chunks(0, 3, 128, 128, SPEECH_LEVEL)
        await older.send(0, chunks[0].frames)
        await packager.wait_held(sid, 0)

        newer = await open_video(packager.stub, sid, loop)
        assert not newer.loop_uploaded  # the packager holds the loop already
        await older.send(12, chunks[1].frames)  # from the replaced stream: ignored
        assert await older.close() == grpc.StatusCode.OK  # all it sent has been processed
        await newer.send(24, chunks[2].frames)
        await packager.wait_held(sid, 24)
        assert set(packager.held(sid)) == {0, 24}

        # A worker whose encoder makes other parameter sets than the playlist's (another size here) is refused.
        big = idle_loop(256, 256)
        stranger = packager.stub.PublishVideo()
        await stranger.write(packager_pb2.PublishVideoRequest(config=video_config(sid, big)))
        error = await expect_abort(stranger)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "parameter sets" in error.details()

        for start in (0, 12, 24):
            await call.write(commit(start, start // 12, rendered=True))
        await call.write(END)
        responses = await read_all(call)
        assert kinds(responses) == ["part", "segment", "stall", "part", "segment", "part", "segment", "ended"]
        assert (responses[2].stall.start_frame_index, responses[2].stall.reason) == (12, "late")
        assert await newer.close() == grpc.StatusCode.OK
        init, media = await fetch_all(packager, sid, range(3))
        decoded = decode(init + b"".join(media))
        assert levels_match(decoded.centre, per_frame([SPEECH_LEVEL, LOOP_LEVELS[1], SPEECH_LEVEL]))


# -- loops --------------------------------------------------------------------------------------------------------


async def test_commits_may_name_another_loop_of_the_same_stream(packager: Packager) -> None:
    """A commit names its loop (e.g. the session moved to another worker with another loop); a loop this playlist
    cannot use (unknown, or other parameter sets) is replaced by the current one."""
    first, second, big = idle_loop(), idle_loop(chunks=2, levels=(200, 100)), idle_loop(256, 256)
    assert (first.sps, first.pps) == (second.sps, second.pps) != (big.sps, big.pps)
    for loop in (first, second, big):
        await upload_loop(packager, loop)
    unknown = idle_loop(chunks=3)
    sid = session_id("loops")
    call = await start_publish(packager, sid, first)
    plan = [(first, 3), (second, 1), (second, 0), (big, 1), (unknown, 0), (first, 1)]
    for index, (loop, chunk) in enumerate(plan):
        await call.write(commit(12 * index, chunk, loop=loop))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]
    await end_publish(call)
    # The big loop has other parameter sets and the 3-chunk loop is not held: the current loop (second) shows.
    init, media = await fetch_all(packager, sid, range(len(plan)))
    decoded = decode(init + b"".join(media))
    assert levels_match(decoded.centre, per_frame([160, 100, 200, 100, 200, 80])), decoded.centre
    await wait_until(lambda: sid not in packager.servicer._media, "the session's state was not released")
    assert [packager.servicer.loops.get(loop.loop_id).pins for loop in (first, second, big)] == [0, 0, 0]


# -- budget -------------------------------------------------------------------------------------------------------


def refused_chunks() -> float:
    return REGISTRY.get_sample_value("packager_stalled_chunks_total", {"reason": "unusable"}) or 0.0


async def test_rendered_chunk_over_budget_is_refused_and_stalls() -> None:
    loop = idle_loop()
    chunks = [*rendered_chunks(0, 2, 128, 128, SPEECH_LEVEL), rendered_chunks(24, 1, 128, 128, 200)[0]]
    sizes = [sum(len(frame) for frame in chunk.frames) for chunk in chunks]
    budget = max(sizes) + 100  # room for one chunk, not two
    assert sizes[0] + min(sizes[1:]) > budget
    async with running_packager(max_rendered_bytes=budget, render_grace_s=0.2) as packager:
        sid = session_id("budget")
        video = await open_video(packager.stub, sid, loop)
        call = await start_publish(packager, sid)
        refused_before = refused_chunks()
        await video.send(0, chunks[0].frames)
        await video.send(12, chunks[1].frames)  # over budget: refused
        await video.send(24, chunks[2].frames)  # over budget too
        await wait_until(lambda: refused_chunks() == refused_before + 2, "the chunks over budget were not refused")
        assert set(packager.held(sid)) == {0}
        await call.write(commit(0, 0, rendered=True))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]
        # Chunk 0 was committed, which frees its bytes: a chunk sent now fits.
        await video.send(24, chunks[2].frames)
        await packager.wait_held(sid, 24)
        assert set(packager.held(sid)) == {24}
        await call.write(commit(12, 1, rendered=True))
        responses = await read_through_segment(call)
        assert kinds(responses) == ["stall", "part", "segment"] and responses[0].stall.reason == "late"
        await call.write(commit(24, 2, rendered=True))
        assert kinds(await read_through_segment(call)) == ["part", "segment"]
        assert kinds(await end_publish(call)) == ["ended"]
        assert await video.close() == grpc.StatusCode.OK  # the video stream stayed open throughout
        init, media = await fetch_all(packager, sid, range(3))
        decoded = decode(init + b"".join(media))
        assert levels_match(decoded.centre, per_frame([SPEECH_LEVEL, LOOP_LEVELS[1], 200]))


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


async def test_http_window_eviction_404s_cors_and_paths() -> None:
    loop = idle_loop()
    # A window of 2 segments, but a live playlist keeps three target durations (3 s): seven 480 ms segments.
    async with running_packager(window_segments=2) as packager:
        await upload_loop(packager, loop)
        sid = session_id("window")
        call = await start_publish(packager, sid)
        for start in range(0, 108, 12):
            await call.write(commit(start, start // 12 % 4))
        assert kinds(await end_publish(call)) == ["part", "segment"] * 9 + ["ended"]

        status, headers, body = await packager.get(f"/hls/{sid}/index.m3u8")
        text = body.decode()
        assert "#EXT-X-MEDIA-SEQUENCE:2" in text
        assert re.findall(r"^seg\d+\.m4s$", text, re.M) == [f"seg{n}.m4s" for n in range(2, 9)]
        assert re.findall(r'#EXT-X-PART:.*URI="([^"]+)"', text) == [f"seg{n}.0.m4s" for n in range(2, 9)]
        assert "#EXT-X-PRELOAD-HINT" not in text and text.endswith("seg8.m4s\n#EXT-X-ENDLIST\n")
        assert re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", text)[:2] == [
            "2025-06-15T15:06:40.960Z",
            "2025-06-15T15:06:41.440Z",
        ]
        assert "Access-Control-Allow-Origin" not in headers  # no Origin sent
        assert sorted(packager.store.get(sid).segments) == list(range(2, 9))  # evicted ones leave memory

        status, headers, body = await packager.get(f"/hls/{sid}/seg0.m4s")
        assert status == 404 and b"no longer available" in body and headers["Cache-Control"] == "no-cache"
        status, headers, body = await packager.get(f"/hls/{sid}/seg9.m4s")
        assert status == 404 and b"not available yet" in body and headers["Cache-Control"] == "no-cache"
        init, (seg3,) = await fetch_all(packager, sid, [3])
        alone = decode(init + seg3)
        assert levels_match(alone.centre, per_frame([LOOP_LEVELS[3]]))

        _, headers, _ = await packager.get(f"/hls/{sid}/index.m3u8", Origin="https://app.example")
        assert headers["Access-Control-Allow-Origin"] == "https://app.example" and headers["Vary"] == "Origin"
        _, headers, _ = await packager.get(f"/hls/{sid}/seg3.m4s", Origin="https://app.example")
        assert headers["Access-Control-Allow-Origin"] == "https://app.example"
        status, headers, part = await packager.get(f"/hls/{sid}/seg3.0.m4s", Origin="https://app.example")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert part == seg3[len(fmp4.STYP) :]
        _, headers, _ = await packager.get(f"/hls/{sid}/index.m3u8", Origin="https://evil.example")
        assert "Access-Control-Allow-Origin" not in headers

        for path in (
            f"/hls/{session_id('nobody')}/index.m3u8",  # unknown session
            "/hls/short/index.m3u8",  # malformed id
            f"/hls/{sid}/seg-1.m4s",
            f"/hls/{sid}/seg01.m4s",
            f"/hls/{sid}/seg3.00.m4s",
            f"/hls/{sid}/seg3.-1.m4s",
            f"/hls/{sid}/seg3.0.1.m4s",
            f"/hls/{sid}/seg3.1.m4s",  # a part its (complete) segment does not have
            f"/hls/{sid}/seg10.0.m4s",  # after the end
            f"/hls/{sid}/other.txt",
            "/hls/",
        ):
            status, headers, _ = await packager.get(path)
            assert status == 404, path
        status, headers, _ = await packager.get(f"/hls/{session_id('nobody')}/index.m3u8")
        assert headers["Cache-Control"] == "no-cache"
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
        await upload_loop(packager, idle_loop())
        sid = session_id("retain")
        call = await start_publish(packager, sid)
        await call.write(commit(0, 0))
        assert kinds(await end_publish(call)) == ["part", "segment", "ended"]
        assert (await packager.get(f"/hls/{sid}/index.m3u8"))[0] == 200
        assert (await packager.get(f"/hls/{sid}/seg0.0.m4s"))[0] == 200
        deadline = time.monotonic() + 10
        while (await packager.get(f"/hls/{sid}/index.m3u8"))[0] != 404:
            assert time.monotonic() < deadline, "the ended playlist was never dropped"
            await asyncio.sleep(0.05)
        assert packager.store.get(sid) is None
        assert (await packager.get(f"/hls/{sid}/seg0.m4s"))[0] == 404
        assert (await packager.get(f"/hls/{sid}/seg0.0.m4s"))[0] == 404


# -- pure parts -----------------------------------------------------------------------------------------------------


def test_playlist_window_and_format() -> None:
    playlist = LivePlaylist(media_epoch_us=EPOCH_S * 1_000_000 + 123_456, segment_duration_us=1_000_000, window=3)
    assert "#EXT-X-MEDIA-SEQUENCE:0" in playlist.render() and "#EXTINF" not in playlist.render()
    for sequence in range(3):
        assert playlist.add(PlaylistSegment(sequence, sequence * 1_000_000, 1_000_000)) == []
    # Past the window, but without segment 0 the live playlist would last under three target durations: kept.
    assert playlist.add(PlaylistSegment(3, 3_000_000, 333_333)) == []
    assert playlist.add(PlaylistSegment(4, 3_333_333, 1_000_000)) == [0]
    with pytest.raises(ValueError, match="expected segment 5"):
        playlist.add(PlaylistSegment(7, 0, 1))
    assert 0 not in playlist and 1 in playlist and 4 in playlist and 5 not in playlist
    text = playlist.render()
    assert "#EXT-X-MEDIA-SEQUENCE:1" in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:41.123Z\n#EXTINF:1.0,\nseg1.m4s" in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:43.123Z\n#EXTINF:0.333333,\nseg3.m4s" in text
    assert not text.endswith("#EXT-X-ENDLIST\n")
    playlist.end()
    assert playlist.render().endswith("#EXT-X-ENDLIST\n")
    with pytest.raises(ValueError, match="ended"):
        playlist.add(PlaylistSegment(5, 4_333_333, 1_000_000))
    assert format_duration(40_000) == "0.04" and format_duration(2_000_000) == "2.0"
    assert format_program_date_time(999) == "1970-01-01T00:00:00.000Z"


def test_avcc_and_codec_string() -> None:
    baseline = idle_loop()
    assert fmp4.avc_codec_string(baseline.sps) == f"avc1.{baseline.sps[1:4].hex().upper()}"
    record = fmp4.avcc(baseline.sps, baseline.pps)
    assert record[:6] == bytes([1, *baseline.sps[1:4], 0xFF, 0xE1])
    assert record[6:8] == len(baseline.sps).to_bytes(2, "big") and record[8 : 8 + len(baseline.sps)] == baseline.sps
    assert record[8 + len(baseline.sps) :] == b"\x01" + len(baseline.pps).to_bytes(2, "big") + baseline.pps
    high = b"\x67\x64\x00\x1f\xac"  # High profile: the record carries chroma format and bit depths
    assert fmp4.avcc(high, b"\x68\xee")[-4:] == bytes([0xFD, 0xF8, 0xF8, 0])
    assert fmp4.avc_codec_string(high) == "avc1.64001F"


def test_aac_track_runs_an_encoder_only_around_sound() -> None:
    track = AacTrack(RATE, 64_000)
    packets: list[bytes] = []
    # Silence, as nothing and as zeros: no encoder, the constant silent packet.
    for _ in range(3):
        packets += track.add(None, CHUNK_SAMPLES)
    packets += track.add(bytes(2 * CHUNK_SAMPLES), CHUNK_SAMPLES)
    assert track.encoder_starts == 0 and not track.encoding
    assert packets and all(packet == track.silent_packet for packet in packets)
    # One silent frame is held back (a sound starting next needs its encoder to start a frame earlier).
    assert len(packets) * AAC_FRAME_SAMPLES == track.emitted == (4 * CHUNK_SAMPLES // AAC_FRAME_SAMPLES - 1) * 1024

    bursts = []
    for _ in range(2):
        # Sound starts late in an AAC frame (see test_aac_track_keeps_the_first_frame_of_sound for early starts).
        packets += track.add(None, (768 - track.committed) % AAC_FRAME_SAMPLES)
        start = track.committed
        packets += track.add(tone(start, CHUNK_SAMPLES), CHUNK_SAMPLES)
        bursts.append((start, track.committed))
        assert track.encoder_starts == len(bursts) and track.encoding
        # Then silence in small pieces until the encoder stops.
        while track.encoding:
            packets += track.add(None, 256)
            quiet = track.committed - bursts[-1][1]
            assert quiet < (QUIET_PACKETS + 3) * AAC_FRAME_SAMPLES, "the encoder ran on in silence"
        assert track.committed - bursts[-1][1] >= QUIET_PACKETS * AAC_FRAME_SAMPLES  # not before QUIET_PACKETS
        assert track.encoder_starts == len(bursts)  # one encoder per burst
        packets += track.add(None, 3 * CHUNK_SAMPLES)
    assert packets[-1] == track.silent_packet
    packets += track.flush()
    # Contiguous 1024-sample packets covering everything committed.
    assert len(packets) * AAC_FRAME_SAMPLES == track.emitted == -(-track.committed // 1024) * 1024

    audio = decode_aac(packets, track.audio_specific_config, RATE)
    assert len(audio) == len(packets) * AAC_FRAME_SAMPLES  # packet k decodes to samples [1024 k, 1024 (k + 1))
    margin = 2048  # the codec's transform overlap around a burst
    silent = np.ones(len(audio), bool)
    for start, end in bursts:
        silent[start - margin : end + margin] = False
        onset = int(np.argmax(np.abs(audio[start - margin :]) > 0.1)) + start - margin
        assert abs(onset - start) < 0.020 * RATE  # the tone where it was sent
        sent = np.frombuffer(tone(start, CHUNK_SAMPLES), "<i2") / 32768
        error = audio[start : end - margin] - sent[:-margin]
        assert np.sqrt(np.mean(error**2)) < 0.02
    assert np.max(np.abs(audio[silent])) < 0.005  # silence elsewhere, and no click where an encoder stopped


@pytest.mark.parametrize("offset", [0, 256, 512, 768])
def test_aac_track_keeps_the_first_frame_of_sound(offset: int) -> None:
    """Sound that starts at (or soon after) an AAC frame boundary, as speech does on 24 kHz chunk boundaries."""
    track = AacTrack(RATE, 64_000)
    packets = track.add(None, 45 * AAC_FRAME_SAMPLES + offset)
    start = track.committed
    packets += track.add(tone(start, CHUNK_SAMPLES), CHUNK_SAMPLES)
    packets += track.add(None, CHUNK_SAMPLES)
    packets += track.flush()
    audio = decode_aac(packets, track.audio_specific_config, RATE)
    sent = np.frombuffer(tone(start, 1024), "<i2") / 32768
    # A continuously running encoder gets the first 1024 samples right within ~0.01 RMS.
    assert np.sqrt(np.mean((audio[start : start + 1024] - sent) ** 2)) < 0.05


@pytest.mark.parametrize("sound", ["speech", "silence", "onset"])
def test_aac_track_with_lookahead_ends_every_chunks_audio_at_its_end(sound: str) -> None:
    """With the final audio after each chunk, every chunk's packets reach its end (players stop at the end of the
    shorter track), and the audio decodes as if it had been encoded in one go."""
    track = AacTrack(RATE, 64_000)
    lookahead = 4 * SPF  # four frames, as the session sends
    assert lookahead >= FULL_LOOKAHEAD_SAMPLES
    total = 30 * CHUNK_SAMPLES
    onset = 7 * CHUNK_SAMPLES + 300
    audio = np.frombuffer(tone(0, total + lookahead), "<i2").copy()
    if sound == "silence":
        audio[:] = 0
    elif sound == "onset":
        audio[:onset] = 0
        audio[onset + 5 * CHUNK_SAMPLES :] = 0
    packets: list[bytes] = []
    for start in range(0, total, CHUNK_SAMPLES):
        end = start + CHUNK_SAMPLES
        ahead = audio[end : end + lookahead]
        packets += track.add(audio[start:end].tobytes(), CHUNK_SAMPLES, ahead.tobytes(), lookahead)
        assert track.emitted >= track.committed, "the chunk's audio reaches its end"
        assert track.emitted < track.committed + AAC_FRAME_SAMPLES, "and not a packet beyond"
    packets += track.flush()
    assert track.lookahead_mismatches == 0
    assert len(packets) * AAC_FRAME_SAMPLES == track.emitted == -(-total // 1024) * 1024
    decoded = decode_aac(packets, track.audio_specific_config, RATE)
    sent = audio[:total] / 32768
    if sound == "silence":
        assert track.encoder_starts == 0 and np.max(np.abs(decoded)) == 0
        return
    if sound == "onset":
        assert track.encoder_starts == 1 and not track.encoding, "one encoder, around the sound only"
    inner = slice(2048, total - 2048)
    assert np.sqrt(np.mean((decoded[inner] - sent[inner]) ** 2)) < 0.02


def test_aac_track_counts_a_chunk_that_differs_from_its_lookahead() -> None:
    track = AacTrack(RATE, 64_000)
    track.add(None, CHUNK_SAMPLES, tone(CHUNK_SAMPLES, 2048), 2048)
    assert track.lookahead_mismatches == 0
    track.add(None, CHUNK_SAMPLES)  # silence where the lookahead said a tone: what was fed stands
    assert track.lookahead_mismatches == 1
    packets = track.flush()
    assert track.emitted == -(-track.committed // 1024) * 1024 and packets
