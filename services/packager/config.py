"""Packager configuration from environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.config import ServerConfig, env_float, env_int, env_str
from services.common.ports import GRPC_PORTS, METRICS_PORTS, PACKAGER_HTTP_PORT
from services.common.viewer_urls import signing_key_from_env


@dataclass(frozen=True)
class PackagerConfig:
    """Limits, muxing and the HLS HTTP server.

    HTTP_PORT (default 8088; HOST is shared with gRPC); HLS_WINDOW_SEGMENTS (segments kept on a live playlist and in
    memory, default 900); HLS_RETAIN_ENDED_S (how long an ended playlist stays served, default 600);
    HLS_CORS_ORIGINS (comma list of origins for Access-Control-Allow-Origin, "*" for any; default none);
    PACKAGER_MAX_STREAMS (concurrent playlists, default 256: an idle one costs a few kB and almost no CPU);
    PACKAGER_AUDIO_BITRATE (AAC bit/s, default 64000); PACKAGER_RENDER_GRACE_MS (how long a commit waits for a
    rendered chunk that is not there yet before the idle loop shows instead, default 300: a late segment beats a
    stall, and players hold more than that); PACKAGER_LOOP_CACHE_MB
    (idle loops kept when no session uses them, default 256); PACKAGER_MAX_RENDERED_MB (rendered chunks one session
    may have waiting for their time, default 64); HLS_SIGNING_KEY (optional: serve only signed, expiring viewer URLs,
    see services.common.viewer_urls).
    """

    http_port: int = PACKAGER_HTTP_PORT
    window_segments: int = 900
    retain_ended_s: float = 600.0
    cors_origins: str = ""
    max_streams: int = 256
    audio_bit_rate: int = 64_000
    render_grace_s: float = 0.3
    loop_cache_bytes: int = 256 * 2**20
    max_rendered_bytes: int = 64 * 2**20
    signing_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> PackagerConfig:
        return cls(
            http_port=env_int("HTTP_PORT", PACKAGER_HTTP_PORT, minimum=0),
            window_segments=env_int("HLS_WINDOW_SEGMENTS", 900, minimum=1),
            retain_ended_s=env_float("HLS_RETAIN_ENDED_S", 600.0),
            cors_origins=env_str("HLS_CORS_ORIGINS", ""),
            max_streams=env_int("PACKAGER_MAX_STREAMS", 256, minimum=1),
            audio_bit_rate=env_int("PACKAGER_AUDIO_BITRATE", 64_000, minimum=8_000),
            render_grace_s=env_int("PACKAGER_RENDER_GRACE_MS", 300, minimum=0) / 1000,
            loop_cache_bytes=env_int("PACKAGER_LOOP_CACHE_MB", 256, minimum=1) * 2**20,
            max_rendered_bytes=env_int("PACKAGER_MAX_RENDERED_MB", 64, minimum=1) * 2**20,
            signing_key=signing_key_from_env(),
        )


def server_config() -> ServerConfig:
    return ServerConfig.from_env(default_port=GRPC_PORTS["packager"], default_metrics_port=METRICS_PORTS["packager"])
