"""Session service configuration, from environment variables (fail fast on missing peers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.config import ConfigError, ServerConfig, env_bool, env_float, env_int, env_str
from services.common.media import FPS, HEIGHT, WIDTH
from services.common.ports import GRPC_PORTS, METRICS_PORTS
from services.common.viewer_urls import signing_key_from_env
from services.session.access import ApiKeys
from services.session.placement import parse_addresses, parse_video_spec


@dataclass(frozen=True)
class SessionConfig:
    """Peers, limits and playout tuning.

    LLM_ADDR, TTS_ADDR (host:port, required); VIDEO_ADDR (host:port[,host:port...] or dns:///name:port: the
    video workers) and PACKAGER_ADDR (host:port[,host:port...]), required, see services.session.placement;
    PUBLIC_HLS_URL (e.g.
    http://127.0.0.1:8088, used to give absolute playlist URLs; optional); MAX_SESSIONS (a ceiling for this
    process's memory, default 256: how many sessions fit is measured by the video workers); MAX_TEXT_CHARS;
    MAX_WATCHERS_PER_SESSION; REQUESTS_PER_SECOND / REQUEST_BURST (per session: Say, Chat, Interrupt);
    SESSION_IDLE_TIMEOUT_S (a session that nobody steers for this long ends, watched or not; 900) and
    SESSION_MAX_LIFETIME_S (every session ends this long after its creation; 14400); SESSION_API_KEYS /
    SESSION_API_KEYS_FILE (see services.session.access; none: anonymous, allowed on loopback only unless
    SESSION_ALLOW_ANONYMOUS=1); SESSION_CREATES_PER_MINUTE / SESSION_CREATE_BURST (CreateSession per API key, or per
    client address without keys; 30, 10); HLS_SIGNING_KEY (optional: playlist URLs are signed and expire with the
    session, see services.common.viewer_urls); SEGMENT_DURATION_MS (960) and PART_DURATION_MS
    (160: a Low-Latency HLS part, a chunk the video worker renders and the packager splices; a segment is a whole
    number of parts); LOOKAHEAD_FRAMES;
    SESSION_OUTBOX_KB (what one session may queue for one peer that does not keep up, default 4096: past it the
    packager's stream is given up and the session ends, and drives for a stuck video worker are dropped);
    VIDEO_WIDTH / VIDEO_HEIGHT (512).
    """

    llm_addr: str
    tts_addr: str
    video_addr: str
    packager_addr: str
    public_hls_url: str = ""
    max_sessions: int = 256
    max_text_chars: int = 5000
    max_watchers_per_session: int = 8
    requests_per_second: float = 5.0
    request_burst: int = 10
    idle_timeout_s: float = 900.0
    max_lifetime_s: float = 14400.0
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    allow_anonymous: bool = False
    creates_per_minute: float = 30.0
    create_burst: int = 10
    hls_signing_key: bytes | None = field(default=None, repr=False)
    segment_duration_ms: int = 960
    part_duration_ms: int = 160
    lookahead_frames: int = 10
    outbox_bytes: int = 4 << 20
    video_width: int = WIDTH
    video_height: int = HEIGHT

    def __post_init__(self) -> None:
        try:
            parse_video_spec(self.video_addr)
            parse_addresses(self.packager_addr, "PACKAGER_ADDR")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name, value in (("VIDEO_WIDTH", self.video_width), ("VIDEO_HEIGHT", self.video_height)):
            if value % 16 or not 64 <= value <= 1920:
                raise ConfigError(f"{name}={value} must be a multiple of 16 from 64 to 1920")
        frame_ms = 1000 // FPS
        if self.segment_duration_ms % frame_ms or not 200 <= self.segment_duration_ms <= 1000:
            raise ConfigError(
                f"SEGMENT_DURATION_MS={self.segment_duration_ms} must be a whole number of {frame_ms} ms frames "
                "between 200 and 1000"
            )
        part = self.part_duration_ms
        if part % frame_ms or part < 2 * frame_ms or self.segment_duration_ms % part:
            raise ConfigError(
                f"PART_DURATION_MS={part} must be a whole number of {frame_ms} ms frames, at least two, and divide "
                f"SEGMENT_DURATION_MS={self.segment_duration_ms}"
            )

    @classmethod
    def from_env(cls) -> SessionConfig:
        return cls(
            llm_addr=env_str("LLM_ADDR"),
            tts_addr=env_str("TTS_ADDR"),
            video_addr=env_str("VIDEO_ADDR"),
            packager_addr=env_str("PACKAGER_ADDR"),
            public_hls_url=env_str("PUBLIC_HLS_URL", "").rstrip("/"),
            max_sessions=env_int("MAX_SESSIONS", 256, minimum=1),
            max_text_chars=env_int("MAX_TEXT_CHARS", 5000, minimum=1),
            max_watchers_per_session=env_int("MAX_WATCHERS_PER_SESSION", 8, minimum=1),
            requests_per_second=env_float("REQUESTS_PER_SECOND", 5.0),
            request_burst=env_int("REQUEST_BURST", 10, minimum=1),
            idle_timeout_s=env_float("SESSION_IDLE_TIMEOUT_S", 900.0),
            max_lifetime_s=env_float("SESSION_MAX_LIFETIME_S", 14400.0),
            api_keys=ApiKeys.from_env(env_str("SESSION_API_KEYS", ""), env_str("SESSION_API_KEYS_FILE", "")),
            allow_anonymous=env_bool("SESSION_ALLOW_ANONYMOUS", False),
            creates_per_minute=env_float("SESSION_CREATES_PER_MINUTE", 30.0),
            create_burst=env_int("SESSION_CREATE_BURST", 10, minimum=1),
            hls_signing_key=signing_key_from_env(),
            segment_duration_ms=env_int("SEGMENT_DURATION_MS", 960, minimum=40),
            part_duration_ms=env_int("PART_DURATION_MS", 160, minimum=40),
            lookahead_frames=env_int("LOOKAHEAD_FRAMES", 10, minimum=3),
            outbox_bytes=env_int("SESSION_OUTBOX_KB", 4096, minimum=16) * 1024,
            video_width=env_int("VIDEO_WIDTH", WIDTH, minimum=64),
            video_height=env_int("VIDEO_HEIGHT", HEIGHT, minimum=64),
        )


def server_config() -> ServerConfig:
    return ServerConfig.from_env(default_port=GRPC_PORTS["session"], default_metrics_port=METRICS_PORTS["session"])
