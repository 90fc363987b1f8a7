"""Low-Latency HLS conformance of what the packager serves, checked against the HLS 2nd edition draft
(draft-pantos-hls-rfc8216bis: 4.4.3.7 EXT-X-PART-INF, 4.4.3.8 EXT-X-SERVER-CONTROL, 4.4.4.9 EXT-X-PART, 4.4.5.3
EXT-X-PRELOAD-HINT, 6.2.1/6.2.2 live playlists, 6.2.5.2 Blocking Playlist Reload, 6.2.6 preload hints) and Apple's
"Enabling Low-Latency HLS".

A real in-process packager (gRPC + HTTP) with the production shape: 4-frame chunks (160 ms parts at 25 fps), six to a
960 ms segment. The tests commit chunk by chunk; nothing paces the packager, so "held until the part exists" is
measured from the commit that makes the part.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from decimal import Decimal

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from avatar.v1 import packager_pb2, packager_pb2_grpc
from services.common.h264 import is_idr_sample
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.packager import fmp4
from services.packager.config import PackagerConfig
from services.packager.playlist import LivePlaylist, PlaylistPart, PlaylistSegment
from services.packager.service import PackagerServicer
from services.packager.store import HlsStore
from services.video.chunker import ChunkAssembler
from tests.hls_analysis import boxes
from tests.packager_media import (
    LEVEL_TOLERANCE,
    RATE,
    SPEECH_LEVEL,
    SPF,
    TOKEN,
    Loop,
    decode,
    encoder,
    i420,
    idle_loop,
    open_video,
    read_all,
    serve_packager,
    tone,
)

FPS = 25
CHUNK_FRAMES = 4  # one part: 160 ms
PARTS_PER_SEGMENT = 6  # one segment: 960 ms
SEGMENT_MS = 960
PART_US = 160_000
EPOCH_S = 1_750_000_000  # 2025-06-15T15:06:40Z
SLACK_S = 0.5  # "at once" / "as soon as it exists": behaviour, not a benchmark
END = packager_pb2.PublishRequest(end=packager_pb2.EndOfStream())


# -- a running packager and a publishing session --------------------------------------------------------------------


@dataclass
class Packager:
    servicer: PackagerServicer
    store: HlsStore
    stub: packager_pb2_grpc.PackagerServiceStub
    http: object  # aiohttp.ClientSession
    base: str

    async def get(self, path: str, timeout_s: float = 30.0, **query: object) -> tuple[int, dict[str, str], bytes]:
        params = {key: str(value) for key, value in query.items()}
        async with asyncio.timeout(timeout_s):
            async with self.http.get(self.base + path, params=params) as response:
                return response.status, dict(response.headers), await response.read()


@contextlib.asynccontextmanager
async def running_packager(**overrides) -> AsyncIterator[Packager]:
    config = replace(PackagerConfig(retain_ended_s=600.0, render_grace_s=10.0), **overrides)
    store = HlsStore(config.window_segments, config.retain_ended_s)
    servicer = PackagerServicer(config, store)
    async with serve_packager(servicer, store) as served:
        yield Packager(
            servicer,
            store,
            packager_pb2_grpc.PackagerServiceStub(served.channel),
            served.http,
            f"http://127.0.0.1:{served.http_port}",
        )


@pytest.fixture
async def packager() -> AsyncIterator[Packager]:
    async with running_packager() as running:
        yield running


def session_id(tag: str) -> str:
    return f"llhls-{tag}-0123456789abcdef"[:64]


def loop_for(chunk_frames: int = CHUNK_FRAMES, fps: int = FPS) -> Loop:
    return idle_loop(128, 128, chunks=4, chunk_frames=chunk_frames, fps=fps)


def config_message(sid: str, loop: Loop, segment_ms: int = SEGMENT_MS) -> packager_pb2.PublishRequest:
    return packager_pb2.PublishRequest(
        config=packager_pb2.PublishConfig(
            stream_id=sid,
            width=loop.width,
            height=loop.height,
            fps=loop.fps,
            sample_rate_hz=RATE,
            segment_duration_ms=segment_ms,
            media_epoch=Timestamp(seconds=EPOCH_S),
            chunk_frames=loop.chunk_frames,
            publish_token=TOKEN,
            idle_loop_id=loop.loop_id,
        )
    )


def commit_message(n: int, loop: Loop, *, rendered: bool = False, pcm: bytes = b"") -> packager_pb2.PublishRequest:
    """The commit of chunk n: the loop's chunk n % 4, or the worker's rendered chunk."""
    return packager_pb2.PublishRequest(
        chunk=packager_pb2.ChunkCommit(
            start_frame_index=n * loop.chunk_frames,
            pcm_s16le=pcm,
            speech=bool(pcm),
            idle_loop_id=loop.loop_id,
            idle_chunk_index=n % len(loop.chunks),
            rendered=rendered,
        )
    )


@dataclass
class Session:
    """A session's Publish stream: commits its chunks one at a time and reads what each makes."""

    packager: Packager
    sid: str
    loop: Loop
    parts_per_segment: int
    call: grpc.aio.StreamStreamCall
    chunks: int = 0
    responses: list[packager_pb2.PublishResponse] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/hls/{self.sid}/"

    async def send(self, *, rendered: bool = False, pcm: bytes = b"") -> None:
        """Writes the next chunk's commit without waiting for what it makes."""
        await self.call.write(commit_message(self.chunks, self.loop, rendered=rendered, pcm=pcm))
        self.chunks += 1

    async def receive(self) -> list[packager_pb2.PublishResponse]:
        """What the last commit sent made: its part, and the segment when it completed one."""
        n = self.chunks - 1
        expected = ["part", "segment"] if (n + 1) % self.parts_per_segment == 0 else ["part"]
        got = [await self.call.read() for _ in expected]
        assert [r.WhichOneof("response") for r in got] == expected, got
        part = got[0].part
        sequence, index = divmod(n, self.parts_per_segment)
        assert (part.sequence, part.index, part.uri) == (sequence, index, f"seg{sequence}.{index}.m4s")
        assert part.start_frame_index == n * self.loop.chunk_frames and part.frame_count == self.loop.chunk_frames
        self.responses += got
        return got

    async def commit(self, *, rendered: bool = False, pcm: bytes = b"") -> list[packager_pb2.PublishResponse]:
        await self.send(rendered=rendered, pcm=pcm)
        return await self.receive()

    async def commit_many(self, count: int) -> None:
        for _ in range(count):
            await self.commit()

    async def end(self) -> list[packager_pb2.PublishResponse]:
        await self.call.write(END)
        rest = await read_all(self.call)
        assert await self.call.code() == grpc.StatusCode.OK
        return rest

    async def playlist(self, **query: object) -> str:
        status, headers, body = await self.packager.get(self.path + "index.m3u8", **query)
        assert status == 200, (status, body)
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        return body.decode()

    @property
    def next_part(self) -> tuple[int, int]:
        return divmod(self.chunks, self.parts_per_segment)


async def upload_loop(packager: Packager, loop: Loop) -> None:
    video = await open_video(packager.stub, session_id(f"uploader{loop.chunk_frames}x{loop.fps}"), loop)
    assert await video.close() == grpc.StatusCode.OK


async def start_session(
    packager: Packager, tag: str, loop: Loop | None = None, segment_ms: int = SEGMENT_MS, upload: bool = True
) -> Session:
    loop = loop or loop_for()
    if upload and packager.servicer.loops.get(loop.loop_id) is None:
        await upload_loop(packager, loop)
    sid = session_id(tag)
    call = packager.stub.Publish(metadata=((SESSION_ID_METADATA_KEY, sid),))
    await call.write(config_message(sid, loop, segment_ms))
    response = await call.read()
    assert response is not grpc.aio.EOF and response.HasField("ready"), response
    parts_per_segment = segment_ms * loop.fps // 1000 // loop.chunk_frames
    return Session(packager, sid, loop, parts_per_segment, call)


# -- reading playlists by the spec ------------------------------------------------------------------------------------

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]*)(?:,|$)')
_PDT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_PART_URI = re.compile(r"seg(\d+)\.(\d+)\.m4s")


def attributes(text: str) -> dict[str, str]:
    """An attribute-list (RFC 8216 4.2): AttributeName=AttributeValue pairs, quoted strings unquoted."""
    found = {}
    position = 0
    while position < len(text):
        match = _ATTRIBUTE.match(text, position)
        assert match is not None, f"malformed attribute list at {text[position:]!r}"
        name, value = match.group(1), match.group(2)
        assert name not in found, f"attribute {name} twice"
        found[name] = value[1:-1] if value.startswith('"') else value
        position = match.end()
    return found


def micros(decimal: str) -> int:
    """A decimal-floating-point number of seconds as whole microseconds (the packager's precision)."""
    assert re.fullmatch(r"\d+(\.\d+)?", decimal), decimal
    value = Decimal(decimal) * 1_000_000
    assert value == value.to_integral_value(), f"{decimal} is finer than a microsecond"
    return int(value)


def pdt_ms(text: str) -> int:
    import datetime as dt

    assert _PDT.fullmatch(text), text
    moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return round(moment.timestamp() * 1000)


@dataclass
class Part:
    uri: str
    duration_us: int
    independent: bool


@dataclass
class Segment:
    sequence: int
    pdt_ms: int
    parts: list[Part]
    duration_us: int | None  # None: the segment in progress (parts only)
    uri: str | None


@dataclass
class Playlist:
    text: str
    version: int
    target_duration_s: int
    part_target_us: int
    part_hold_back_us: int
    media_sequence: int
    segments: list[Segment]  # complete ones, then the one in progress when it has parts
    hint: str | None
    ended: bool
    skipped: int = 0  # segments a delta update replaced with EXT-X-SKIP

    @property
    def complete(self) -> list[Segment]:
        return [segment for segment in self.segments if segment.duration_us is not None]

    @property
    def in_progress(self) -> Segment | None:
        return self.segments[-1] if self.segments and self.segments[-1].duration_us is None else None

    @property
    def part_uris(self) -> list[str]:
        return [part.uri for segment in self.segments for part in segment.parts]

    def next_part_after_listed(self) -> tuple[int, int]:
        if self.in_progress is not None:
            return self.in_progress.sequence, len(self.in_progress.parts)
        return self.media_sequence + self.skipped + len(self.complete), 0


HEADER = [
    "#EXTM3U",
    "#EXT-X-VERSION",
    "#EXT-X-TARGETDURATION",
    "#EXT-X-PART-INF",
    "#EXT-X-SERVER-CONTROL",
    "#EXT-X-MEDIA-SEQUENCE",
    "#EXT-X-INDEPENDENT-SEGMENTS",
    "#EXT-X-MAP",
]


def check_playlist(text: str, *, parts_per_segment: int | None = PARTS_PER_SEGMENT) -> Playlist:
    """Parses a live or ended LL-HLS media playlist, asserting every rule below on the way."""
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    assert all(line and line.isascii() and line == line.strip() for line in lines), "blank or odd lines"
    # The header, in this order (EXTM3U first; the playlist tags before the first media segment).
    assert [line.split(":")[0] for line in lines[: len(HEADER)]] == HEADER, lines[: len(HEADER)]
    values = {line.split(":")[0]: line.partition(":")[2] for line in lines[: len(HEADER)]}
    for tag in HEADER:
        assert sum(line.split(":")[0] == tag for line in lines) == 1, f"{tag} must appear once"
    version = int(values["#EXT-X-VERSION"])
    assert version >= 6  # EXT-X-MAP outside an I-frames-only playlist needs version 6 (RFC 8216 section 7)
    target_duration_s = int(values["#EXT-X-TARGETDURATION"])
    assert target_duration_s >= 1
    part_inf = attributes(values["#EXT-X-PART-INF"])
    assert set(part_inf) == {"PART-TARGET"}
    part_target_us = micros(part_inf["PART-TARGET"])
    assert 0 < part_target_us <= target_duration_s * 1_000_000
    control = attributes(values["#EXT-X-SERVER-CONTROL"])
    assert control.get("CAN-BLOCK-RELOAD") == "YES"
    part_hold_back_us = micros(control["PART-HOLD-BACK"])  # REQUIRED when the playlist has EXT-X-PART-INF
    assert part_hold_back_us >= 2 * part_target_us  # MUST: at least twice the part target
    assert part_hold_back_us >= 3 * part_target_us  # SHOULD: three times (what the packager promises)
    if "HOLD-BACK" in control:
        assert micros(control["HOLD-BACK"]) >= 3 * target_duration_s * 1_000_000
    if "CAN-SKIP-UNTIL" in control:  # 4.4.3.8: at least six target durations
        assert micros(control["CAN-SKIP-UNTIL"]) >= 6 * target_duration_s * 1_000_000
    media_sequence = int(values["#EXT-X-MEDIA-SEQUENCE"])
    assert values["#EXT-X-MAP"] == 'URI="init.mp4"'

    segments: list[Segment] = []
    body = lines[len(HEADER) :]
    skipped = 0
    if body and body[0].startswith("#EXT-X-SKIP:"):  # a delta update (6.2.5.1): in place of the first segments
        skip = attributes(body[0].partition(":")[2])
        assert set(skip) == {"SKIPPED-SEGMENTS"}, skip
        skipped = int(skip["SKIPPED-SEGMENTS"])
        assert skipped > 0 and "CAN-SKIP-UNTIL" in control
        assert version >= 9  # EXT-X-SKIP needs protocol version 9 (section 7)
        body = body[1:]
    assert not any(line.startswith("#EXT-X-SKIP") for line in body), "EXT-X-SKIP only before the first segment"
    ended = body[-1:] == ["#EXT-X-ENDLIST"]
    hints = [line for line in body if line.startswith("#EXT-X-PRELOAD-HINT:")]
    if ended:
        body = body[:-1]
        assert not hints, "an ended playlist hints nothing"
    else:
        assert len(hints) == 1 and body[-1] == hints[0], "a live playlist ends with exactly one preload hint"
        body = body[:-1]
    assert "#EXT-X-ENDLIST" not in body
    current: Segment | None = None
    for line in body:
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-PROGRAM-DATE-TIME":
            assert current is None, "PROGRAM-DATE-TIME inside a segment: it must come before the segment's parts"
            current = Segment(media_sequence + skipped + len(segments), pdt_ms(value), [], None, None)
        elif tag == "#EXT-X-PART":
            assert current is not None and current.duration_us is None, "EXT-X-PART outside a segment"
            part = attributes(value)
            assert set(part) <= {"DURATION", "URI", "INDEPENDENT"}, part
            assert part.get("INDEPENDENT", "YES") == "YES"
            current.parts.append(Part(part["URI"], micros(part["DURATION"]), part.get("INDEPENDENT") == "YES"))
        elif tag == "#EXTINF":
            assert current is not None and current.duration_us is None, "EXTINF without its PROGRAM-DATE-TIME"
            duration, comma, title = value.partition(",")
            assert comma and title == ""
            current.duration_us = micros(duration)
        else:
            assert not line.startswith("#"), f"unexpected tag {line}"
            assert current is not None and current.duration_us is not None, f"URI {line} without EXTINF"
            current.uri = line
            segments.append(current)
            current = None
    if current is not None:
        assert current.duration_us is None and current.parts, "a segment in progress lists its parts"
        assert not ended, "an ended playlist has no segment in progress"
        segments.append(current)

    playlist = Playlist(
        text,
        version,
        target_duration_s,
        part_target_us,
        part_hold_back_us,
        media_sequence,
        segments,
        None if ended else attributes(hints[0].partition(":")[2]).get("URI"),
        ended,
        skipped,
    )
    complete = playlist.complete
    for segment in complete:
        assert segment.uri == f"seg{segment.sequence}.m4s"
        assert segment.duration_us is not None and segment.duration_us > 0
        # EXTINF rounded to the nearest integer is at most the target duration.
        assert (segment.duration_us + 500_000) // 1_000_000 <= target_duration_s
        if segment.parts:
            assert sum(part.duration_us for part in segment.parts) == segment.duration_us, segment
    for segment in segments:
        # Parts numbered from 0 in every segment, consecutively, named after their segment.
        assert [part.uri for part in segment.parts] == [
            f"seg{segment.sequence}.{i}.m4s" for i in range(len(segment.parts))
        ]
        for i, part in enumerate(segment.parts):
            assert 0 < part.duration_us <= part_target_us, part  # every part, the final one too
            # At least 85 % of the target, except INDEPENDENT=YES parts and the final part of a segment (the newest
            # part of the segment in progress may be its final one).
            if not (part.independent or i == len(segment.parts) - 1):
                assert part.duration_us >= 0.85 * part_target_us, part
            # Every part here begins with an IDR frame (checked on the bytes in test_every_part_stands_alone).
            assert part.independent
    # One mapping of date to media: each segment starts where the one before ended (millisecond dates, truncated).
    for before, after in itertools.pairwise(segments):
        assert before.duration_us is not None
        assert abs(after.pdt_ms - (before.pdt_ms + before.duration_us / 1000)) <= 1, (before, after)
    # Parts are listed for the segments of the last three target durations and the segment in progress only:
    # those ending less than three target durations before the last complete segment's end.
    if complete:
        end_us = sum(segment.duration_us for segment in complete)  # type: ignore[misc]
        elapsed = 0
        for segment in complete:
            elapsed += segment.duration_us  # type: ignore[operator]
            recent = end_us - elapsed < 3 * target_duration_s * 1_000_000
            assert bool(segment.parts) == recent, (segment.sequence, recent)
    if parts_per_segment is not None:
        # Every segment is made of the same number of parts; only the last one of an ended stream may have fewer.
        for segment in complete:
            if segment.parts and not (ended and segment is complete[-1]):
                assert len(segment.parts) == parts_per_segment, segment
    if playlist.in_progress is not None and parts_per_segment is not None:
        # A segment with all its parts is complete: it is listed with its EXTINF, not as a segment in progress.
        assert len(playlist.in_progress.parts) < parts_per_segment, "the segment in progress has all its parts"
    if not ended:
        # The hint names the part that comes next, the first of the next segment after a complete one.
        assert playlist.hint == "seg{}.{}.m4s".format(*playlist.next_part_after_listed())
        assert hints[0] == f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{playlist.hint}"'
    return playlist


# -- ISO BMFF --------------------------------------------------------------------------------------------------------


def first_video_sample(fragment: bytes) -> tuple[bool, bytes]:
    """(flagged as a sync sample, its bytes) for the first video sample of a moof + mdat fragment."""
    (moof_kind, moof_start, moof_end), (mdat_kind, _, _) = boxes(fragment)
    assert (moof_kind, mdat_kind) == (b"moof", b"mdat")
    for kind, start, end in boxes(fragment, moof_start, moof_end):
        if kind != b"traf":
            continue
        children = {k: (s, e) for k, s, e in boxes(fragment, start, end)}
        tfhd_start, _ = children[b"tfhd"]
        tfhd_flags = struct.unpack_from(">I", fragment, tfhd_start)[0] & 0xFFFFFF
        (track_id,) = struct.unpack_from(">I", fragment, tfhd_start + 4)
        if track_id != fmp4.VIDEO_TRACK_ID:
            continue
        assert tfhd_flags & 0x020000, "default-base-is-moof"
        assert not tfhd_flags & 0x000001, "no explicit base data offset"
        default_flags = None
        if tfhd_flags & 0x000020:
            offset = tfhd_start + 8 + 8 * bool(tfhd_flags & 1) + 4 * bool(tfhd_flags & 2) + 4 * bool(tfhd_flags & 8)
            offset += 4 * bool(tfhd_flags & 0x10)
            (default_flags,) = struct.unpack_from(">I", fragment, offset)
        trun_start, _ = children[b"trun"]
        trun_flags = struct.unpack_from(">I", fragment, trun_start)[0] & 0xFFFFFF
        count, data_offset = struct.unpack_from(">Ii", fragment, trun_start + 4)
        assert count > 0 and trun_flags & 0x000001, "a data offset"
        position = trun_start + 12
        first_flags = None
        if trun_flags & 0x000004:
            (first_flags,) = struct.unpack_from(">I", fragment, position)
            position += 4
        entry = fragment[position:]
        fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if trun_flags & bit]
        values = dict(zip(fields, struct.unpack_from(">" + "I" * len(fields), entry), strict=True))
        flags = first_flags if first_flags is not None else values.get(0x400, default_flags)
        assert flags is not None and 0x200 in values, "the first sample's flags and size"
        sync = not flags & 0x00010000  # sample_is_non_sync_sample clear
        start_of_data = moof_start - 8 + data_offset
        return sync, fragment[start_of_data : start_of_data + values[0x200]]
    raise AssertionError("no video track run in the fragment")


# -- 1. the playlist --------------------------------------------------------------------------------------------------


async def test_live_playlist_follows_the_spec_part_by_part(packager: Packager) -> None:
    session = await start_session(packager, "tags")
    # Before the first part: no segment yet; the hint already names seg0.0.
    first = check_playlist(await session.playlist())
    assert first.segments == [] and first.hint == "seg0.0.m4s" and first.media_sequence == 0
    assert (first.version, first.target_duration_s, first.part_target_us) == (7, 1, PART_US)
    assert first.part_hold_back_us == 3 * PART_US
    previous = first
    saw_parts_go = False
    for n in range(40):  # six complete segments and four parts of the seventh
        await session.commit()
        status, headers, body = await packager.get(session.path + "index.m3u8")
        assert status == 200 and headers["Cache-Control"] == "no-cache"
        playlist = check_playlist(body.decode())
        sequence, index = divmod(n, PARTS_PER_SEGMENT)
        # The playlist changes only by appending the part that was hinted (and completing its segment), and by
        # removing the oldest parts (the media sequence stays: the window is long).
        assert playlist.media_sequence == 0
        assert previous.hint == f"seg{sequence}.{index}.m4s"
        new = [uri for uri in playlist.part_uris if uri not in previous.part_uris]
        assert new == [previous.hint]
        gone = [uri for uri in previous.part_uris if uri not in playlist.part_uris]
        assert gone == previous.part_uris[: len(gone)], "parts go oldest first"
        saw_parts_go = saw_parts_go or bool(gone)
        assert playlist.part_uris[-1] == previous.hint
        if index == PARTS_PER_SEGMENT - 1:  # the segment is complete, with its EXTINF and URI
            assert playlist.in_progress is None and playlist.complete[-1].sequence == sequence
            assert playlist.complete[-1].duration_us == PARTS_PER_SEGMENT * PART_US
            assert playlist.hint == f"seg{sequence + 1}.0.m4s"
        else:
            assert playlist.in_progress is not None and playlist.in_progress.sequence == sequence
            assert len(playlist.in_progress.parts) == index + 1
        assert all(part.duration_us == PART_US for segment in playlist.segments for part in segment.parts)
        assert playlist.segments[0].pdt_ms == EPOCH_S * 1000
        previous = playlist
    assert saw_parts_go
    # Segments 0 and 1 end more than three target durations before the end of segment 5: listed without parts.
    assert [bool(segment.parts) for segment in previous.segments] == [False, False, True, True, True, True, True]
    assert previous.in_progress is not None and len(previous.in_progress.parts) == 4

    responses = await session.end()
    assert [r.WhichOneof("response") for r in responses] == ["segment", "ended"]
    assert responses[0].segment.duration_us == 4 * PART_US  # the last segment: the four parts it had
    status, headers, body = await packager.get(session.path + "index.m3u8")
    assert headers["Cache-Control"] == "public, max-age=3600"
    ended = check_playlist(body.decode())
    assert ended.ended and ended.hint is None and ended.in_progress is None
    assert [segment.sequence for segment in ended.segments] == list(range(7))
    assert ended.segments[-1].duration_us == 4 * PART_US
    assert [part.uri for part in ended.segments[-1].parts] == [f"seg6.{i}.m4s" for i in range(4)]


async def test_sliding_window_with_parts() -> None:
    """A short window: segments leave from the front (MEDIA-SEQUENCE counts them), the playlist never lasts less
    than three target durations (6.2.2), and the rules above hold throughout."""
    async with running_packager(window_segments=4) as packager:
        session = await start_session(packager, "window")
        for n in range(8 * PARTS_PER_SEGMENT + 2):
            await session.commit()
            playlist = check_playlist(await session.playlist())
            complete = (n + 1) // PARTS_PER_SEGMENT
            assert playlist.media_sequence == max(0, complete - 4)
            assert [segment.sequence for segment in playlist.complete] == list(range(max(0, complete - 4), complete))
            if complete > 4:
                assert sum(segment.duration_us for segment in playlist.complete) >= 3_000_000  # type: ignore[misc]
        status, _, body = await packager.get(session.path + "seg3.m4s")
        assert status == 404 and b"no longer available" in body
        await session.end()


@pytest.mark.parametrize(
    ("fps", "chunk_frames", "segment_ms"),
    [
        (25, 4, 960),
        (25, 12, 480),
        (50, 4, 480),
        (30, 4, 400),
        (24, 4, 500),
        (60, 4, 200),
    ],
)
def test_parts_never_exceed_the_part_target(fps: int, chunk_frames: int, segment_ms: int) -> None:
    """Every shape the packager accepts (1..60 fps, whole chunks per segment): each part the muxer makes lasts at
    most the PART-TARGET the service declares, and a segment's parts add up to its EXTINF."""
    from services.packager.muxer import MuxerSettings, SessionMuxer, VideoChunk

    loop = loop_for(chunk_frames, fps)
    chunks_per_segment = segment_ms * fps // 1000 // chunk_frames
    muxer = SessionMuxer(MuxerSettings(128, 128, fps, RATE, chunk_frames, chunks_per_segment), loop.sps, loop.pps)
    part_target_us = -(-chunk_frames * 1_000_000 // fps)  # what service.py gives the playlist (rounded up)
    sync = (True,) + (False,) * (chunk_frames - 1)
    made = []
    for n in range(2 * chunks_per_segment):
        part, segment = muxer.add_chunk(VideoChunk(loop.chunks[n % 4], sync), None, False)
        made.append(part.duration_us)
        if segment is not None:
            assert sum(made[-chunks_per_segment:]) == segment.duration_us
    assert max(made) <= part_target_us, (made, part_target_us)


async def test_a_30_fps_stream_publishes(packager: Packager) -> None:
    loop = loop_for(CHUNK_FRAMES, 30)
    session = await start_session(packager, "fps30", loop, 400)
    await session.commit_many(2 * session.parts_per_segment)
    playlist = check_playlist(await session.playlist(), parts_per_segment=session.parts_per_segment)
    assert len(playlist.complete) == 2
    await session.end()


async def test_a_publish_that_fails_after_muxing_still_ends_its_playlist(packager: Packager, monkeypatch) -> None:
    session = await start_session(packager, "fault")
    await session.commit_many(2)
    listed = packager.store.add_part

    def add_part(stream, part, data):
        if part.index == 2:
            raise RuntimeError("injected: the part cannot be listed")
        listed(stream, part, data)

    monkeypatch.setattr(packager.store, "add_part", add_part)
    await session.send()
    with pytest.raises(grpc.aio.AioRpcError):
        await read_all(session.call)
    deadline = time.monotonic() + 1
    while "#EXT-X-ENDLIST" not in await session.playlist():
        assert time.monotonic() < deadline, "the playlist never ended"
        await asyncio.sleep(0.05)
    assert packager.servicer.live_streams == 0 and session.sid not in packager.servicer._media


# -- 2. the parts' bytes ----------------------------------------------------------------------------------------------


def rendered_chunks(start_chunk: int, count: int, level: int) -> list:
    enc = encoder(128, 128)
    assembler = ChunkAssembler(CHUNK_FRAMES, enc.encode)
    chunks = []
    for frame in range(start_chunk * CHUNK_FRAMES, (start_chunk + count) * CHUNK_FRAMES):
        chunk = assembler.add(frame, 0, i420(frame, 128, 128, level))
        if chunk is not None:
            chunks.append(chunk)
    return chunks


async def test_every_part_stands_alone_and_parts_make_their_segment(packager: Packager) -> None:
    loop = loop_for()
    sid = session_id("bytes")
    video = await open_video(packager.stub, sid, loop)
    session = await start_session(packager, "bytes", loop, upload=False)
    speech = range(4, 9)  # rendered chunks (with a tone) across the segment boundary
    for chunk in rendered_chunks(speech.start, len(speech), SPEECH_LEVEL):
        await video.send(chunk.start_frame_index, chunk.frames)
    for n in range(12):
        if n in speech:
            await session.commit(rendered=True, pcm=tone(n * CHUNK_FRAMES * SPF, CHUNK_FRAMES * SPF))
        else:
            await session.commit()
    await session.end()
    assert await video.close() == grpc.StatusCode.OK
    parts_made = [r.part for r in session.responses if r.HasField("part")]
    assert [p.has_speech for p in parts_made] == [n in speech for n in range(12)]

    status, _, init = await packager.get(session.path + "init.mp4")
    assert status == 200
    levels = [SPEECH_LEVEL if n in speech else loop.levels[n % 4] for n in range(12)]
    for sequence in range(2):
        status, headers, segment = await packager.get(session.path + f"seg{sequence}.m4s")
        assert status == 200
        assert boxes(segment)[0][0] == b"styp"
        parts = []
        for index in range(PARTS_PER_SEGMENT):
            n = sequence * PARTS_PER_SEGMENT + index
            status, headers, part = await packager.get(session.path + f"seg{sequence}.{index}.m4s")
            assert status == 200 and headers["Content-Type"] == "video/iso.segment"
            assert [kind for kind, _, _ in boxes(part)] == [b"moof", b"mdat"]  # one CMAF chunk, no styp
            sync, sample = first_video_sample(part)
            assert sync and is_idr_sample(sample), (sequence, index)  # INDEPENDENT=YES holds
            alone = decode(init + part)  # playable after the init segment and nothing else
            frames = range(n * CHUNK_FRAMES, (n + 1) * CHUNK_FRAMES)
            assert [round(t * FPS, 6) for t in alone.times] == list(frames)
            assert alone.idr[0] and alone.keyframes[0]
            assert all(abs(luma - levels[n]) <= LEVEL_TOLERANCE for luma in alone.centre), (n, alone.centre)
            parts.append(part)
        assert segment == fmp4.STYP + b"".join(parts)  # the segment is its styp and its parts


# -- 3. blocking playlist reload and held parts ----------------------------------------------------------------------


async def held(coroutine, what: str) -> asyncio.Task:
    """Starts a request and checks that it is still waiting a little later."""
    task = asyncio.ensure_future(coroutine)
    await asyncio.sleep(0.2)
    assert not task.done(), f"{what} was answered before it could be"
    return task


async def test_blocking_reload_answers_when_the_part_exists(packager: Packager) -> None:
    session = await start_session(packager, "block")
    await session.commit_many(3)
    path = session.path + "index.m3u8"

    # What exists already is answered at once, with the whole playlist.
    for query in ({"_HLS_msn": 0, "_HLS_part": 2}, {"_HLS_msn": 0, "_HLS_part": 0}):
        started = time.monotonic()
        status, headers, body = await packager.get(path, **query)
        assert status == 200 and time.monotonic() - started < SLACK_S
        assert headers["Cache-Control"] == "no-cache"
        assert check_playlist(body.decode()).part_uris == ["seg0.0.m4s", "seg0.1.m4s", "seg0.2.m4s"]

    # The next part (the preload hint's), then the first part of the next segment, then a whole segment.
    for query, commits, uri in [
        ({"_HLS_msn": 0, "_HLS_part": 3}, 1, "seg0.3.m4s"),
        ({"_HLS_msn": 1, "_HLS_part": 0}, 3, "seg1.0.m4s"),
        ({"_HLS_msn": 1}, 5, "seg1.m4s"),
        ({"_HLS_msn": 3, "_HLS_part": 1}, 8, "seg3.1.m4s"),  # the segment after the next one: held, not refused
    ]:
        request = await held(packager.get(path, **query), f"playlist {query}")
        for _ in range(commits - 1):
            await session.commit()
            await asyncio.sleep(0.02)
            assert not request.done(), f"{query} answered before {uri} existed"
        await session.send()
        made = time.monotonic()
        status, headers, body = await request
        answered = time.monotonic() - made
        assert status == 200 and answered < SLACK_S, (query, status, answered)
        assert headers["Cache-Control"] == "no-cache"
        playlist = check_playlist(body.decode())
        listed = playlist.part_uris + [segment.uri for segment in playlist.complete]
        assert uri in listed, (query, playlist.text)
        await session.receive()
    await session.end()


async def test_blocking_reload_refusals(packager: Packager) -> None:
    session = await start_session(packager, "refuse")
    await session.commit_many(8)  # segment 0 complete, segment 1 in progress
    path = session.path + "index.m3u8"

    # More than two segments past the one in progress: 400 at once.
    for msn in (1 + 3, 1000, 10**17):
        started = time.monotonic()
        status, headers, body = await packager.get(path, _HLS_msn=msn, _HLS_part=0)
        assert status == 400 and time.monotonic() - started < SLACK_S, (msn, status, body)
        assert headers["Cache-Control"] == "no-cache"
    # Malformed directives: 400 at once.
    for query in (
        {"_HLS_msn": "abc"},
        {"_HLS_msn": "-1"},
        {"_HLS_msn": "1.5"},
        {"_HLS_msn": ""},
        {"_HLS_msn": "0x1"},
        {"_HLS_msn": "1", "_HLS_part": "x"},
        {"_HLS_msn": "1", "_HLS_part": "-1"},
        {"_HLS_msn": "1", "_HLS_part": ""},
        {"_HLS_msn": "9" * 40},
    ):
        started = time.monotonic()
        status, headers, _ = await packager.get(path, **query)
        assert status == 400 and time.monotonic() - started < SLACK_S, query
        assert headers["Cache-Control"] == "no-cache"
    # Past the last part of a complete segment means the next segment's first part (6.2.5.2), which exists here:
    # answered at once, with the whole playlist.
    started = time.monotonic()
    status, _, body = await packager.get(path, _HLS_msn=0, _HLS_part=99)
    assert status == 200 and time.monotonic() - started < SLACK_S and "seg1.0.m4s" in body.decode()
    await session.end()


async def test_blocking_reload_gives_up_after_three_target_durations(packager: Packager) -> None:
    """Nothing comes (the session stopped committing): 503 for the playlist, 404 for the hinted part, each after
    three target durations (3 s here: the target duration is 1 s), not sooner and not much later."""
    session = await start_session(packager, "stall")
    await session.commit_many(2)
    started = time.monotonic()
    playlist, part, segment = await asyncio.gather(
        packager.get(session.path + "index.m3u8", _HLS_msn=0, _HLS_part=2),
        packager.get(session.path + "seg0.2.m4s"),
        packager.get(session.path + "index.m3u8", _HLS_msn=1),
    )
    waited = time.monotonic() - started
    assert 2.9 <= waited < 3 + 1.5, waited
    assert playlist[0] == 503 and playlist[1]["Cache-Control"] == "no-cache"
    assert segment[0] == 503
    assert part[0] == 404 and part[1]["Cache-Control"] == "no-cache" and b"not available yet" in part[2]
    # The stream then goes on, and the same requests are answered.
    await session.commit()
    assert (await packager.get(session.path + "index.m3u8", _HLS_msn=0, _HLS_part=2))[0] == 200
    assert (await packager.get(session.path + "seg0.2.m4s"))[0] == 200
    await session.end()


async def test_fifty_held_requests_get_the_same_playlist(packager: Packager) -> None:
    session = await start_session(packager, "fifty")
    await session.commit_many(5)
    query = {"_HLS_msn": 0, "_HLS_part": 5}  # the part that completes segment 0
    requests = [asyncio.ensure_future(packager.get(session.path + "index.m3u8", **query)) for _ in range(50)]
    await asyncio.sleep(0.5)
    assert not any(request.done() for request in requests)
    await session.send()
    made = time.monotonic()
    answers = await asyncio.gather(*requests)
    assert time.monotonic() - made < 2 * SLACK_S  # fifty responses on two slow cores
    await session.receive()
    assert {status for status, _, _ in answers} == {200}
    bodies = {body for _, _, body in answers}
    assert len(bodies) == 1, "every held request got the same playlist"
    playlist = check_playlist(bodies.pop().decode())
    assert playlist.part_uris[-1] == "seg0.5.m4s" and playlist.hint == "seg1.0.m4s"
    assert playlist.complete[-1].uri == "seg0.m4s" and playlist.in_progress is None
    await session.end()


async def test_hinted_part_is_held_then_served(packager: Packager) -> None:
    session = await start_session(packager, "hint")
    await session.commit_many(2)
    hint = check_playlist(await session.playlist()).hint
    assert hint == "seg0.2.m4s"
    request = await held(packager.get(session.path + hint), "the hinted part")
    await session.send()
    made = time.monotonic()
    status, headers, body = await request
    assert status == 200 and time.monotonic() - made < SLACK_S
    assert headers["Cache-Control"] == "public, max-age=86400, immutable"
    assert headers["Content-Type"] == "video/iso.segment"
    await session.receive()
    assert (await packager.get(session.path + hint))[2] == body  # the same bytes as fetched afterwards

    # Across a segment boundary: the hint after a complete segment is the next segment's first part.
    await session.commit_many(3)
    assert check_playlist(await session.playlist()).hint == "seg1.0.m4s"
    request = await held(packager.get(session.path + "seg1.0.m4s"), "the next segment's first part")
    await session.commit()
    status, _, body = await request
    assert status == 200
    sync, sample = first_video_sample(body)
    assert sync and is_idr_sample(sample)

    # Far in the future: 404 at once (not held).
    for uri in ("seg1.9.m4s", "seg4.0.m4s", "seg1000.0.m4s", "seg1.1000.m4s"):
        started = time.monotonic()
        status, headers, body = await packager.get(session.path + uri)
        assert status == 404 and time.monotonic() - started < SLACK_S, uri
        assert b"not available yet" in body and headers["Cache-Control"] == "no-cache"
    await session.end()
    # Once ended nothing is held: the part that would have come next is 404 at once.
    started = time.monotonic()
    assert (await packager.get(session.path + "seg1.1.m4s"))[0] == 404
    assert time.monotonic() - started < SLACK_S


async def test_old_parts_go_three_target_durations_after_they_are_delisted(packager: Packager) -> None:
    session = await start_session(packager, "oldparts")
    segment_us, horizon_us = SEGMENT_MS * 1000, 3 * 1_000_000  # three target durations
    # Segment 0's parts are delisted once three target durations of segments follow it ...
    delisted = -(-(horizon_us + segment_us) // segment_us)  # complete segments then
    # ... and stay fetchable until the playlist's end is three target durations past that.
    gone = delisted + -(-horizon_us // segment_us)
    await session.commit_many(PARTS_PER_SEGMENT * (gone - 1))
    for index in range(PARTS_PER_SEGMENT):
        assert (await packager.get(session.path + f"seg0.{index}.m4s"))[0] == 200
    assert "seg0.0.m4s" not in check_playlist(await session.playlist()).part_uris  # not listed, still served
    await session.commit_many(PARTS_PER_SEGMENT)
    for index in range(PARTS_PER_SEGMENT):
        status, headers, body = await packager.get(session.path + f"seg0.{index}.m4s")
        assert status == 404 and b"no longer available" in body and headers["Cache-Control"] == "no-cache"
    assert (await packager.get(session.path + "seg0.m4s"))[0] == 200  # the segment itself stays (window)
    assert (await packager.get(session.path + "seg1.0.m4s"))[0] == 200
    await session.end()


@pytest.mark.parametrize(
    ("chunk_frames", "segment_ms"),
    [
        (CHUNK_FRAMES, SEGMENT_MS),  # production: 6 parts of 160 ms
        (12, 480),
        (6, 240),
    ],
)
async def test_listed_parts_are_served_and_outlive_their_listing(
    packager: Packager, chunk_frames: int, segment_ms: int
) -> None:
    """6.2.1: a part is available when listed; 6.2.2: and for at least three target durations after its EXT-X-PART
    tag is removed."""
    loop = loop_for(chunk_frames)
    session = await start_session(packager, f"keep{segment_ms}", loop, segment_ms)
    stream = packager.store.get(session.sid)
    assert stream is not None
    delisted_at: dict[str, int] = {}  # part URI -> media time (us) when the playlist stopped listing it
    listed: set[str] = set()
    part_us = chunk_frames * 1_000_000 // FPS
    horizon_us = 3 * 1_000_000  # three target durations
    problems = []
    for n in range(int(3 * horizon_us / part_us) + 16):
        await session.commit()
        now_us = (n + 1) * part_us
        playlist = check_playlist(await session.playlist(), parts_per_segment=session.parts_per_segment)
        uris = set(playlist.part_uris)
        for uri in listed - uris:
            delisted_at[uri] = now_us
        listed = uris
        served = {f"seg{s}.{i}.m4s" for s, i in stream.parts}  # what the part route serves (store.parts)
        problems += [(n, uri, "listed, not served") for uri in sorted(uris - served)]
        problems += [
            (n, uri, f"gone {(now_us - at) / 1e6:.2f} s after delisting")
            for uri, at in delisted_at.items()
            if uri not in served and now_us - at < horizon_us
        ]
        for uri in sorted(uris - served)[:1]:  # the same through HTTP
            assert (await packager.get(session.path + uri))[0] == 404
    await session.end()
    assert problems == []


async def test_ended_playlist_answers_blocking_requests_at_once(packager: Packager) -> None:
    session = await start_session(packager, "endedblock")
    await session.commit_many(3)
    request = await held(packager.get(session.path + "index.m3u8", _HLS_msn=1, _HLS_part=0), "seg1.0")
    await session.call.write(END)
    status, headers, body = await request
    assert status == 200 and check_playlist(body.decode()).ended
    assert headers["Cache-Control"] == "public, max-age=3600"
    await read_all(session.call)
    started = time.monotonic()
    status, _, body = await packager.get(session.path + "index.m3u8", _HLS_msn=2)
    assert status == 200 and time.monotonic() - started < SLACK_S and body.decode().endswith("#EXT-X-ENDLIST\n")


class _Context:
    """Enough of a grpc.aio.ServicerContext to run Publish directly: nothing in these tests aborts."""

    def invocation_metadata(self):
        return ()

    async def abort(self, code, details=""):
        raise AssertionError(f"aborted: {code} {details}")

    async def abort_with_status(self, status):
        raise AssertionError(f"aborted: {status}")


async def publish_directly(packager: Packager, tag: str, commits: int):
    """Runs the servicer's Publish as the gRPC server does, but stepwise: the HTTP side runs while it waits at a
    yield (as it does while gRPC sends a response), so the state there is what players can see."""
    loop = loop_for()
    await upload_loop(packager, loop)
    sid = session_id(tag)

    async def requests():
        yield config_message(sid, loop)
        for n in range(commits):
            yield commit_message(n, loop)
        yield END

    return sid, packager.servicer.Publish(requests(), _Context())


async def test_preload_hint_never_names_a_part_that_does_not_come(packager: Packager) -> None:
    """Wherever Publish waits (gRPC sending a response), the playlist players get hints a part that then comes:
    the part that completes a segment and the segment itself are listed together (never a segment in progress
    with all its parts and a hint for seg<n>.6.m4s)."""
    sid, publish = await publish_directly(packager, "hintrace", 2 * PARTS_PER_SEGMENT)
    hints = []
    async for response in publish:
        if response.WhichOneof("response") in ("part", "segment"):
            _, _, body = await packager.get(f"/hls/{sid}/index.m3u8")
            text = body.decode()
            hints.append(re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', text).group(1))  # type: ignore[union-attr]
    _, _, body = await packager.get(f"/hls/{sid}/index.m3u8")
    listed = set(check_playlist(body.decode()).part_uris)
    assert [hint for hint in hints if hint not in listed and hint != "seg2.0.m4s"] == []


async def test_a_stream_stopped_after_a_segments_last_part_keeps_that_segment(packager: Packager) -> None:
    """A call cancelled while gRPC sends the response of a segment's last part: the segment stays listed."""
    sid, publish = await publish_directly(packager, "cutlast", PARTS_PER_SEGMENT)
    parts = 0
    async for response in publish:
        parts += response.WhichOneof("response") == "part"
        if parts == PARTS_PER_SEGMENT:
            break
    await publish.aclose()  # what the server does to a cancelled call's handler
    _, _, body = await packager.get(f"/hls/{sid}/index.m3u8")
    playlist = check_playlist(body.decode())
    assert playlist.ended
    assert [segment.uri for segment in playlist.segments] == ["seg0.m4s"]


# -- edge rules of blocking requests ----------------------------------------------------


async def test_part_directive_without_msn_is_bad_request(packager: Packager) -> None:
    session = await start_session(packager, "partonly")
    await session.commit()
    status, _, _ = await packager.get(session.path + "index.m3u8", _HLS_part=0)
    await session.end()
    assert status == 400


async def test_part_index_past_the_segment_means_the_next_segments_first_part(packager: Packager) -> None:
    session = await start_session(packager, "pastlast")
    await session.commit_many(PARTS_PER_SEGMENT)  # segment 0 complete, with parts 0..5
    try:
        request = await held(
            packager.get(session.path + "index.m3u8", _HLS_msn=0, _HLS_part=PARTS_PER_SEGMENT), "seg0.6 (= seg1.0)"
        )
        await session.commit()
        status, _, body = await request
        assert status == 200 and "seg1.0.m4s" in check_playlist(body.decode()).part_uris
    finally:
        await session.end()


async def test_ended_playlist_ignores_delivery_directives(packager: Packager) -> None:
    session = await start_session(packager, "endeddirectives")
    await session.commit_many(3)
    await session.end()
    for query in ({"_HLS_msn": 0, "_HLS_part": 9}, {"_HLS_msn": 5}, {"_HLS_msn": 99, "_HLS_part": 0}):
        status, headers, body = await packager.get(session.path + "index.m3u8", timeout_s=SLACK_S, **query)
        assert status == 200, (query, status)
        assert check_playlist(body.decode()).ended and headers["Cache-Control"] == "public, max-age=3600"


async def test_part_beyond_the_advance_part_limit_is_bad_request(packager: Packager) -> None:
    session = await start_session(packager, "advance")
    await session.commit()
    try:
        status, _, _ = await packager.get(session.path + "index.m3u8", timeout_s=SLACK_S, _HLS_msn=0, _HLS_part=31)
        assert status == 400
    finally:
        await session.end()


# -- 4. caching ------------------------------------------------------------------------------------------------------


async def test_cache_headers(packager: Packager) -> None:
    session = await start_session(packager, "cache")
    await session.commit_many(7)
    path = session.path
    expectations = [
        ("index.m3u8", {}, 200, "no-cache"),
        ("index.m3u8", {"_HLS_msn": 1, "_HLS_part": 0}, 200, "no-cache"),
        ("index.m3u8", {"_HLS_msn": 0}, 200, "no-cache"),
        ("index.m3u8", {"_HLS_msn": 9}, 400, "no-cache"),
        ("init.mp4", {}, 200, "public, max-age=86400, immutable"),
        ("seg0.m4s", {}, 200, "public, max-age=86400, immutable"),
        ("seg0.0.m4s", {}, 200, "public, max-age=86400, immutable"),
        ("seg1.0.m4s", {}, 200, "public, max-age=86400, immutable"),
        ("seg3.0.m4s", {}, 404, "no-cache"),
        ("seg2.m4s", {}, 404, "no-cache"),
    ]
    for name, query, status, cache in expectations:
        got_status, headers, _ = await packager.get(path + name, **query)
        assert (got_status, headers.get("Cache-Control")) == (status, cache), (name, query)
    # A held request answered later: still not cacheable while live.
    request = await held(packager.get(path + "index.m3u8", _HLS_msn=1, _HLS_part=1), "seg1.1")
    await session.commit()
    status, headers, _ = await request
    assert (status, headers["Cache-Control"]) == (200, "no-cache")
    await session.end()
    for query in ({}, {"_HLS_msn": 0}):
        status, headers, _ = await packager.get(path + "index.m3u8", **query)
        assert (status, headers["Cache-Control"]) == (200, "public, max-age=3600")
    status, headers, _ = await packager.get(path + "seg1.1.m4s")
    assert (status, headers["Cache-Control"]) == (200, "public, max-age=86400, immutable")


# -- the playlist alone (pure) ---------------------------------------------------------------------------------------


def test_live_playlist_parts_pure() -> None:
    playlist = LivePlaylist(EPOCH_S * 1_000_000, 960_000, window=10, part_target_us=PART_US)
    assert playlist.last_part is None and not playlist.has(0, 0) and not playlist.has(0)
    for index in range(3):
        playlist.add_part(PlaylistPart(0, index, PART_US))
    assert playlist.last_part == (0, 2) and playlist.has(0, 2) and not playlist.has(0, 3) and not playlist.has(0)
    check_playlist(playlist.render())
    for bad, message in [
        (PlaylistPart(1, 0, PART_US), "expected a part of segment 0"),
        (PlaylistPart(0, 4, PART_US), "expected part 3"),
        (PlaylistPart(0, 3, PART_US + 1), "at most the part target"),
        (PlaylistPart(0, 3, 0), "at most the part target"),
    ]:
        with pytest.raises(ValueError, match=message):
            playlist.add_part(bad)
    with pytest.raises(ValueError, match="do not add up"):
        playlist.add(PlaylistSegment(0, 0, 960_000))
    for index in range(3, 6):
        playlist.add_part(PlaylistPart(0, index, PART_US))
    version = playlist.version
    assert playlist.add(PlaylistSegment(0, 0, 960_000)) == []
    assert playlist.version > version and playlist.has(0) and playlist.has(0, 0) and playlist.last_part == (0, 5)
    text = playlist.render()
    assert check_playlist(text).hint == "seg1.0.m4s"
    playlist.add_part(PlaylistPart(1, 0, PART_US))
    playlist.end()  # the unfinished segment's part is dropped
    ended = check_playlist(playlist.render())
    assert ended.ended and ended.part_uris == [f"seg0.{i}.m4s" for i in range(6)]
    with pytest.raises(ValueError, match="ended"):
        playlist.add_part(PlaylistPart(1, 0, PART_US))
    with pytest.raises(ValueError, match="no parts"):
        LivePlaylist(0, 960_000, window=3).add_part(PlaylistPart(0, 0, PART_US))
    with pytest.raises(ValueError, match="part target"):
        LivePlaylist(0, 960_000, window=3, part_target_us=960_001)


def test_delta_update_pure() -> None:
    """6.2.5.1: a delta update lists exactly the segments that end within CAN-SKIP-UNTIL of the end (and the parts,
    the hint and everything else as the whole playlist has them) and skips the rest with one EXT-X-SKIP."""
    playlist = LivePlaylist(EPOCH_S * 1_000_000, 960_000, window=900, part_target_us=PART_US)
    for sequence in range(20):
        for index in range(PARTS_PER_SEGMENT):
            playlist.add_part(PlaylistPart(sequence, index, PART_US))
        playlist.add(PlaylistSegment(sequence, sequence * 960_000, 960_000))
    playlist.add_part(PlaylistPart(20, 0, PART_US))
    whole = check_playlist(playlist.render())
    assert micros(attributes(whole.text.split("\n")[4].partition(":")[2])["CAN-SKIP-UNTIL"]) == 6_000_000
    assert whole.skipped == 0 and len(whole.complete) == 20 and whole.version == 7
    delta = check_playlist(playlist.render(delta=True))
    # The end is 20 x 0.96 + 0.16 = 19.36 s; the boundary 13.36 s: segments 0..12 end at or before it.
    assert delta.skipped == 13 and delta.version == 9
    assert delta.media_sequence == whole.media_sequence == 0
    assert [segment.sequence for segment in delta.segments] == list(range(13, 21))
    assert delta.segments == whole.segments[13:] and delta.hint == whole.hint
    # Nothing to skip in a short playlist, or once it ended: the whole playlist either way.
    short = LivePlaylist(0, 960_000, window=900, part_target_us=PART_US)
    short.add_part(PlaylistPart(0, 0, PART_US))
    assert short.render(delta=True) == short.render()
    playlist.end()
    assert playlist.render(delta=True) == playlist.render() and "#EXT-X-SKIP" not in playlist.render()


async def test_delta_update_through_http(packager: Packager) -> None:
    """`_HLS_skip=YES` (and `v2`) gets the delta update, with or without a blocking directive; other values are
    refused; without it, the whole playlist."""
    session = await start_session(packager, "delta")
    await session.commit_many(10 * PARTS_PER_SEGMENT + 1)
    path = session.path + "index.m3u8"
    status, _, body = await packager.get(path)
    whole = check_playlist(body.decode())
    assert status == 200 and whole.skipped == 0 and len(whole.complete) == 10
    for query in ({"_HLS_skip": "YES"}, {"_HLS_skip": "v2"}, {"_HLS_skip": "YES", "_HLS_msn": 10, "_HLS_part": 0}):
        status, headers, body = await packager.get(path, **query)
        delta = check_playlist(body.decode())
        assert status == 200 and headers["Cache-Control"] == "no-cache", query
        assert delta.skipped == 3 and delta.segments == whole.segments[3:], (query, delta.text)
    request = await held(packager.get(path, _HLS_skip="YES", _HLS_msn=10, _HLS_part=1), "a held delta request")
    await session.commit()
    status, _, body = await request
    assert status == 200 and "seg10.1.m4s" in check_playlist(body.decode()).part_uris
    for value in ("NO", "yes", "", "v3"):
        status, _, body = await packager.get(path, _HLS_skip=value)
        assert status == 400 and b"_HLS_skip must be YES or v2" in body, value
    await session.end()
