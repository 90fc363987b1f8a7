"""HTTP side of the packager: serves each session's live playlist, init segment, media segments and Low-Latency HLS
parts from memory.

Runs on the same event loop as the gRPC server (the store is loop-owned, so no locks). Routes (GET and HEAD):

  /hls/{stream_id}/index.m3u8      application/vnd.apple.mpegurl; no-cache while live, max-age=3600 once ended.
                                    Blocking reload: with `_HLS_msn=M` (and `_HLS_part=P`) the request is held until
                                    the playlist holds segment M (part P of it) and answered at once when it does;
                                    400 when M is more than two segments ahead of the last one listed or P more
                                    than three target durations of parts ahead, or _HLS_part comes alone; 503 when it
                                    has not come within three target durations; ignored once the playlist ended.
                                    `_HLS_skip=YES` (or `v2`: there are no date ranges to skip) asks for a delta
                                    update: the segments more than CAN-SKIP-UNTIL before the end become one
                                    EXT-X-SKIP tag; 400 for another value; the whole playlist once ended.
  /hls/{stream_id}/init.mp4        video/mp4; immutable (a stream id is never reused while retained)
  /hls/{stream_id}/seg{n}.m4s      video/iso.segment; immutable
  /hls/{stream_id}/seg{n}.{p}.m4s  a part; immutable. A request for the next few parts (the preload hint's) is
                                    held until the part exists.
  /healthz                          200 "ok"

Unknown sessions, malformed ids, evicted and future segments get a short 404 that must not be cached (a future
segment will exist a moment later). CORS: Access-Control-Allow-Origin for the origins in HLS_CORS_ORIGINS. Every
waiting request waits on its stream's next change: many viewers of one session cost one wake-up per part.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import Counter

from services.common.viewer_urls import verified_stream
from services.packager.playlist import LivePlaylist
from services.packager.store import HlsStore, HlsStream, valid_session_id

PLAYLIST_NAME = "index.m3u8"
INIT_NAME = "init.mp4"
_SEGMENT_NAME = re.compile(r"seg(0|[1-9][0-9]{0,17})\.m4s")
_PART_NAME = re.compile(r"seg(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,3})\.m4s")
_NUMBER = re.compile(r"[0-9]{1,18}")
_SKIP_VALUES = ("YES", "v2")  # _HLS_skip: v2 also skips date ranges, of which there are none
BLOCK_TARGET_DURATIONS = 3  # how long a blocking request may wait, in target durations
MAX_SEGMENTS_AHEAD = 2  # a blocking request further ahead of the last segment listed is refused (400)
ADVANCE_TARGET_DURATIONS = 3  # ... and one for a part further ahead than this (the spec's Advance Part Limit)
PARTS_AHEAD_HELD = 3  # requests for the next few parts wait for them

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
SEGMENT_TYPE = "video/iso.segment"
LIVE_PLAYLIST_CACHE = "no-cache"
ENDED_PLAYLIST_CACHE = "public, max-age=3600"
IMMUTABLE_CACHE = "public, max-age=86400, immutable"

HTTP_REQUESTS = Counter("packager_http_requests_total", "HLS HTTP requests", ["kind", "status"])

STORE_KEY: web.AppKey[HlsStore] = web.AppKey("store", HlsStore)
CORS_KEY: web.AppKey[frozenset[str]] = web.AppKey("cors_origins", frozenset)
SIGNING_KEY: web.AppKey[bytes] = web.AppKey("signing_key", bytes)


def parse_cors_origins(value: str) -> frozenset[str]:
    """HLS_CORS_ORIGINS: comma-separated origins ("*" for any); empty means no CORS headers."""
    return frozenset(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())


def create_app(store: HlsStore, cors_origins: Iterable[str] = (), signing_key: bytes | None = None) -> web.Application:
    """`signing_key`: serve only signed, expiring viewer URLs (services.common.viewer_urls); else bare stream ids."""
    app = web.Application()
    app[STORE_KEY] = store
    app[CORS_KEY] = frozenset(cors_origins)
    app[SIGNING_KEY] = signing_key or b""
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/hls/{stream_id}/{name}", _hls)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts serving `app`; returns the runner (call `cleanup()` to stop) and the bound port (port 0: a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-cache"})


def _not_found(request: web.Request, kind: str, text: str) -> web.Response:
    HTTP_REQUESTS.labels(kind, "404").inc()
    return web.Response(status=404, text=text + "\n", headers=_headers(request, "no-cache"))


def _headers(request: web.Request, cache_control: str) -> dict[str, str]:
    headers = {"Cache-Control": cache_control}
    origins = request.app[CORS_KEY]
    if origins:
        origin = request.headers.get("Origin", "")
        if "*" in origins:
            headers["Access-Control-Allow-Origin"] = "*"
        elif origin in origins:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Vary"] = "Origin"
    return headers


async def _hls(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    name = request.match_info["name"]
    key = request.app[SIGNING_KEY]
    if key:
        granted = verified_stream(key, stream_id, time.time())
        if granted is None:
            HTTP_REQUESTS.labels("forbidden", "403").inc()
            return web.Response(
                status=403,
                text="this viewer URL is not valid or has expired: ask the session's owner for a new one\n",
                headers=_headers(request, "no-cache"),
            )
        stream_id = granted
    if not valid_session_id(stream_id):
        return _not_found(request, "invalid", "no such stream")
    stream = request.app[STORE_KEY].get(stream_id)
    if stream is None:
        return _not_found(request, "unknown", "no such stream")
    if name == PLAYLIST_NAME:
        if stream.init_segment is None:
            return _not_found(request, "playlist", "stream not ready yet")
        skip = request.query.get("_HLS_skip")
        if skip is not None and skip not in _SKIP_VALUES:
            return _refuse(request, 400, "_HLS_skip must be YES or v2")
        blocking = "_HLS_msn" in request.query or "_HLS_part" in request.query
        if blocking and stream.live and stream.playlist.part_target_us is not None:  # ended: directives ignored
            refusal = await _hold_playlist(request, stream)
            if refusal is not None:
                return refusal
        HTTP_REQUESTS.labels("playlist", "200").inc()
        cache = LIVE_PLAYLIST_CACHE if stream.live else ENDED_PLAYLIST_CACHE
        return web.Response(
            body=stream.playlist.render(delta=skip is not None).encode(),
            content_type=PLAYLIST_TYPE,
            headers=_headers(request, cache),
        )
    if name == INIT_NAME:
        if stream.init_segment is None:
            return _not_found(request, "init", "stream not ready yet")
        HTTP_REQUESTS.labels("init", "200").inc()
        return web.Response(
            body=stream.init_segment, content_type=INIT_TYPE, headers=_headers(request, IMMUTABLE_CACHE)
        )
    part = _PART_NAME.fullmatch(name)
    if part is not None:
        return await _part(request, stream, int(part.group(1)), int(part.group(2)))
    match = _SEGMENT_NAME.fullmatch(name)
    if match is None:
        return _not_found(request, "invalid", "no such file")
    sequence = int(match.group(1))
    parts = stream.segments.get(sequence)
    if parts is None:
        if sequence >= stream.playlist.next_sequence:
            return _not_found(request, "segment", "segment not available yet")
        return _not_found(request, "segment", "segment no longer available")
    HTTP_REQUESTS.labels("segment", "200").inc()
    body = b"".join(parts)
    return web.Response(body=body, content_type=SEGMENT_TYPE, headers=_headers(request, IMMUTABLE_CACHE))


async def _hold_playlist(request: web.Request, stream: HlsStream) -> web.Response | None:
    """Waits until the playlist holds what `_HLS_msn` / `_HLS_part` ask for; a response when it must refuse."""
    msn_text, part_text = request.query.get("_HLS_msn"), request.query.get("_HLS_part")
    if msn_text is None:
        return _refuse(request, 400, "_HLS_part needs _HLS_msn")
    if not _NUMBER.fullmatch(msn_text) or (part_text is not None and not _NUMBER.fullmatch(part_text)):
        return _refuse(request, 400, "_HLS_msn and _HLS_part must be whole numbers")
    msn, part = int(msn_text), None if part_text is None else int(part_text)
    playlist = stream.playlist
    if msn > playlist.last_sequence + MAX_SEGMENTS_AHEAD:
        return _refuse(request, 400, f"segment {msn} is too far ahead of the live edge ({playlist.last_sequence})")
    if part is not None and _parts_ahead(playlist, msn, part) > _advance_part_limit(playlist):
        return _refuse(request, 400, f"part {part} of segment {msn} is too far ahead of the live edge")
    deadline = time.monotonic() + BLOCK_TARGET_DURATIONS * playlist.target_duration_s
    while not playlist.has(msn, part) and not playlist.ended:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not await stream.changed(remaining):
            return _refuse(request, 503, "not available yet: ask again")
    return None


def _advance_part_limit(playlist: LivePlaylist) -> int:
    return ADVANCE_TARGET_DURATIONS * playlist.target_duration_s * 1_000_000 // (playlist.part_target_us or 1)


def _parts_ahead(playlist: LivePlaylist, msn: int, part: int) -> int:
    """How many parts past the newest listed one part `part` of segment `msn` is (counting a segment's parts from
    its first; a later segment's index alone, which is the least it can be)."""
    newest = playlist.last_part
    if newest is None or msn > newest[0]:
        return part + 1
    if msn == newest[0]:
        return part - newest[1]
    return 0


async def _part(request: web.Request, stream: HlsStream, sequence: int, index: int) -> web.Response:
    data = stream.parts.get((sequence, index))
    playlist = stream.playlist
    upcoming = playlist.last_part or (playlist.next_sequence, -1)
    soon = (sequence, index) > upcoming and (
        (sequence == upcoming[0] and index <= upcoming[1] + PARTS_AHEAD_HELD)
        or (sequence == upcoming[0] + 1 and index < PARTS_AHEAD_HELD)
    )
    if data is None and soon and playlist.part_target_us is not None:
        deadline = time.monotonic() + BLOCK_TARGET_DURATIONS * playlist.target_duration_s
        while data is None and not playlist.ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await stream.changed(remaining):
                break
            data = stream.parts.get((sequence, index))
    if data is None:
        text = "part not available yet" if (sequence, index) > upcoming else "part no longer available"
        return _not_found(request, "part", text)
    HTTP_REQUESTS.labels("part", "200").inc()
    return web.Response(body=b"".join(data), content_type=SEGMENT_TYPE, headers=_headers(request, IMMUTABLE_CACHE))


def _refuse(request: web.Request, status: int, text: str) -> web.Response:
    HTTP_REQUESTS.labels("playlist", str(status)).inc()
    return web.Response(status=status, text=text + "\n", headers=_headers(request, "no-cache"))
