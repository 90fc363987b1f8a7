"""Video service configuration, from environment variables, read once at start (fail fast, naming the variable).

Variables (README "Configuration"): VIDEO_PHOTO_AVATARS, VIDEO_DEFAULT_AVATAR, VIDEO_MAX_QUEUED_FRAMES,
VIDEO_CPU_BUDGET, VIDEO_SPEAKING_SHARE, VIDEO_MAX_STREAMS, VIDEO_CRF, VIDEO_MAX_KBPS, VIDEO_WARM_SIZE,
VIDEO_BURN_CLOCK, plus HOST, PORT, METRICS_PORT, SHUTDOWN_GRACE_S (ServerConfig). The GPU model backend reads its own
INFINITETALK_* variables (services.video.infinitetalk.loader).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import ConfigError, ServerConfig, env_float, env_int, env_str
from services.common.ports import GRPC_PORTS, METRICS_PORTS
from services.video.capacity import available_cores


@dataclass(frozen=True)
class VideoConfig:
    server: ServerConfig
    photo_avatars: bool
    default_avatar: str  # "": the built-in photo avatar when photo avatars are on, else the drawn face
    max_queued_frames: int
    cpu_budget_cores: float
    speaking_share: float
    max_streams: int
    crf: int
    max_kbps: int
    warm_size: int  # 0: no warm-up and no start-up measurement
    burn_clock: bool

    @classmethod
    def from_env(cls) -> VideoConfig:
        budget = env_float("VIDEO_CPU_BUDGET", 0.75 * available_cores())
        share = env_float("VIDEO_SPEAKING_SHARE", 0.25)
        if budget <= 0 or not 0 < share <= 1:
            raise ConfigError("VIDEO_CPU_BUDGET must be positive and VIDEO_SPEAKING_SHARE in (0, 1]")
        return cls(
            server=ServerConfig.from_env(default_port=GRPC_PORTS["video"], default_metrics_port=METRICS_PORTS["video"]),
            photo_avatars=env_int("VIDEO_PHOTO_AVATARS", 1, minimum=0) > 0,
            default_avatar=env_str("VIDEO_DEFAULT_AVATAR", ""),
            max_queued_frames=env_int("VIDEO_MAX_QUEUED_FRAMES", 50, minimum=1),
            cpu_budget_cores=budget,
            speaking_share=share,
            max_streams=env_int("VIDEO_MAX_STREAMS", 64, minimum=1),
            crf=env_int("VIDEO_CRF", 23, minimum=0),
            max_kbps=env_int("VIDEO_MAX_KBPS", 3000, minimum=0),
            warm_size=env_int("VIDEO_WARM_SIZE", 512, minimum=0),
            burn_clock=env_int("VIDEO_BURN_CLOCK", 0, minimum=0) > 0,
        )
