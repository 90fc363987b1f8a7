"""Packager configuration from environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import ServerConfig, env_float, env_int, env_str


@dataclass(frozen=True)
class PackagerConfig:
    """Limits, encoder tuning and the HLS HTTP server.

    HTTP_PORT (default 8088; HOST is shared with gRPC); HLS_WINDOW_SEGMENTS (segments kept on a live playlist and in
    memory, default 900); HLS_RETAIN_ENDED_S (how long an ended playlist stays served, default 600);
    HLS_CORS_ORIGINS (comma list of origins for Access-Control-Allow-Origin, "*" for any; default none);
    PACKAGER_MAX_STREAMS (concurrent Publish streams, default 32); PACKAGER_CRF (x264 quality, default 23);
    PACKAGER_MAX_KBPS (video bitrate cap, default 3000, 0 for none); PACKAGER_AUDIO_BITRATE (AAC bit/s, default
    64000); PACKAGER_ENCODER_THREADS (x264 threads per stream, default 1).
    """

    http_port: int = 8088
    window_segments: int = 900
    retain_ended_s: float = 600.0
    cors_origins: str = ""
    max_streams: int = 32
    crf: int = 23
    max_kbps: int = 3000
    audio_bit_rate: int = 64_000
    encoder_threads: int = 1
    burn_clock: bool = False

    @classmethod
    def from_env(cls) -> PackagerConfig:
        return cls(
            http_port=env_int("HTTP_PORT", 8088, minimum=0),
            window_segments=env_int("HLS_WINDOW_SEGMENTS", 900, minimum=1),
            retain_ended_s=env_float("HLS_RETAIN_ENDED_S", 600.0),
            cors_origins=env_str("HLS_CORS_ORIGINS", ""),
            max_streams=env_int("PACKAGER_MAX_STREAMS", 32, minimum=1),
            crf=env_int("PACKAGER_CRF", 23, minimum=0),
            max_kbps=env_int("PACKAGER_MAX_KBPS", 3000, minimum=0),
            audio_bit_rate=env_int("PACKAGER_AUDIO_BITRATE", 64_000, minimum=8_000),
            encoder_threads=env_int("PACKAGER_ENCODER_THREADS", 1, minimum=0),
            burn_clock=env_int("PACKAGER_BURN_CLOCK", 0, minimum=0) > 0,
        )


def server_config() -> ServerConfig:
    return ServerConfig.from_env(default_port=50055, default_metrics_port=9105)
