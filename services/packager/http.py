"""HTTP side of the packager: serves each session's live playlist, init segment and media segments from memory.

Runs on the same event loop as the gRPC server (the store is loop-owned, so no locks). Routes (GET and HEAD):

  /hls/{session_id}/index.m3u8   application/vnd.apple.mpegurl; no-cache while live, max-age=3600 once ended
  /hls/{session_id}/init.mp4     video/mp4; immutable (a session id is never reused while retained)
  /hls/{session_id}/seg{n}.m4s   video/iso.segment; immutable
  /healthz                       200 "ok"

Unknown sessions, malformed ids, evicted and future segments get a short 404 that must not be cached (a future
segment will exist a moment later). CORS: Access-Control-Allow-Origin for the origins in HLS_CORS_ORIGINS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import Counter

from services.packager.store import HlsStore, valid_session_id

PLAYLIST_NAME = "index.m3u8"
INIT_NAME = "init.mp4"
_SEGMENT_NAME = re.compile(r"seg(0|[1-9][0-9]{0,17})\.m4s")

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
SEGMENT_TYPE = "video/iso.segment"
LIVE_PLAYLIST_CACHE = "no-cache"
ENDED_PLAYLIST_CACHE = "public, max-age=3600"
IMMUTABLE_CACHE = "public, max-age=86400, immutable"

HTTP_REQUESTS = Counter("packager_http_requests_total", "HLS HTTP requests", ["kind", "status"])

STORE_KEY: web.AppKey[HlsStore] = web.AppKey("store", HlsStore)
CORS_KEY: web.AppKey[frozenset[str]] = web.AppKey("cors_origins", frozenset)


def parse_cors_origins(value: str) -> frozenset[str]:
    """HLS_CORS_ORIGINS: comma-separated origins ("*" for any); empty means no CORS headers."""
    return frozenset(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())


def create_app(store: HlsStore, cors_origins: Iterable[str] = ()) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app[CORS_KEY] = frozenset(cors_origins)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/hls/{session_id}/{name}", _hls)
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
    session_id = request.match_info["session_id"]
    name = request.match_info["name"]
    if not valid_session_id(session_id):
        return _not_found(request, "invalid", "no such stream")
    stream = request.app[STORE_KEY].get(session_id)
    if stream is None:
        return _not_found(request, "unknown", "no such stream")
    if name == PLAYLIST_NAME:
        if stream.init_segment is None:
            return _not_found(request, "playlist", "stream not ready yet")
        HTTP_REQUESTS.labels("playlist", "200").inc()
        cache = LIVE_PLAYLIST_CACHE if stream.live else ENDED_PLAYLIST_CACHE
        return web.Response(
            body=stream.playlist.render().encode(), content_type=PLAYLIST_TYPE, headers=_headers(request, cache)
        )
    if name == INIT_NAME:
        if stream.init_segment is None:
            return _not_found(request, "init", "stream not ready yet")
        HTTP_REQUESTS.labels("init", "200").inc()
        return web.Response(
            body=stream.init_segment, content_type=INIT_TYPE, headers=_headers(request, IMMUTABLE_CACHE)
        )
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
