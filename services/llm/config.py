"""llm service settings from the environment, and the provider they select (checked at start, not at first use)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import ConfigError, env_float, env_int, env_str
from services.llm.provider import ChatProvider

PROVIDERS = ("offline",)


@dataclass(frozen=True)
class LlmConfig:
    """LLM_PROVIDER (offline), LLM_HISTORY_CHARS, LLM_MAX_REPLY_CHARS, LLM_TURN_TIMEOUT_S,
    LLM_OFFLINE_TOKEN_DELAY_MS."""

    provider: str = "offline"
    history_chars: int = 8000
    max_reply_chars: int = 4000
    turn_timeout_s: float = 120.0
    offline_token_delay_ms: float = 15.0

    @classmethod
    def from_env(cls) -> LlmConfig:
        provider = env_str("LLM_PROVIDER", "offline").strip().lower()
        if provider not in PROVIDERS:
            raise ConfigError(f"LLM_PROVIDER={provider!r} is not supported; choose one of: {', '.join(PROVIDERS)}")
        turn_timeout_s = env_float("LLM_TURN_TIMEOUT_S", 120.0)
        token_delay_ms = env_float("LLM_OFFLINE_TOKEN_DELAY_MS", 15.0)
        if turn_timeout_s <= 0:
            raise ConfigError(f"LLM_TURN_TIMEOUT_S={turn_timeout_s} must be positive")
        if not 0 <= token_delay_ms <= 10_000:
            raise ConfigError(f"LLM_OFFLINE_TOKEN_DELAY_MS={token_delay_ms} must be between 0 and 10000")
        return cls(
            provider=provider,
            history_chars=env_int("LLM_HISTORY_CHARS", 8000, minimum=1000),
            max_reply_chars=env_int("LLM_MAX_REPLY_CHARS", 4000, minimum=100),
            turn_timeout_s=turn_timeout_s,
            offline_token_delay_ms=token_delay_ms,
        )


def build_provider(config: LlmConfig) -> ChatProvider:
    """The provider named by `config.provider`; ConfigError for an unknown name."""
    if config.provider == "offline":
        from services.llm.offline import OfflinePersona

        return OfflinePersona(token_delay_s=config.offline_token_delay_ms / 1000.0)
    raise ConfigError(f"LLM_PROVIDER={config.provider!r} is not supported; choose one of: {', '.join(PROVIDERS)}")
