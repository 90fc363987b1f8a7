"""tts service settings from the environment, read once at start. The speech engines' own variables (TTS_PROVIDER,
TTS_FALLBACK, ELEVENLABS_*, OPENAI_*) are read, and checked, by services.tts.registry; CPU sharing of the local voices
(TTS_CONCURRENCY, TTS_THREADS) by services.tts.scheduler."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import ServerConfig, env_str
from services.common.ports import GRPC_PORTS, METRICS_PORTS


@dataclass(frozen=True)
class TtsConfig:
    server: ServerConfig
    default_voice: str | None  # None: the provider's first voice (TTS_DEFAULT_VOICE)

    @classmethod
    def from_env(cls) -> TtsConfig:
        return cls(
            server=ServerConfig.from_env(default_port=GRPC_PORTS["tts"], default_metrics_port=METRICS_PORTS["tts"]),
            default_voice=env_str("TTS_DEFAULT_VOICE", "") or None,
        )
