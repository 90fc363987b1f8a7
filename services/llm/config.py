"""llm service settings from the environment, and the providers they select (checked at start, not at first use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.common.config import ConfigError, env_float, env_int, env_str
from services.common.providers import DEFAULT_LLM_PROVIDER, LLM_PROVIDERS, OFFLINE, OPENAI
from services.llm.provider import ChatProvider

PROVIDERS = LLM_PROVIDERS
DEFAULT_MODEL = "gpt-4o-mini"
# Without a key, a server at one of these hosts (the SDK's default included) refuses every request, so fail at start.
_KEYED_HOSTS = ("api.openai.com",)
_DUMMY_KEY = "not-needed"  # what self-hosted servers (vLLM, Ollama, llama.cpp) get when no key is set


@dataclass(frozen=True)
class LlmConfig:
    """LLM_PROVIDER (offline|openai), LLM_HISTORY_CHARS, LLM_MAX_REPLY_CHARS, LLM_TURN_TIMEOUT_S,
    LLM_OFFLINE_TOKEN_DELAY_MS; for openai: OPENAI_API_KEY, OPENAI_BASE_URL, LLM_MODEL, LLM_TIMEOUT_S,
    LLM_STALL_TIMEOUT_S, LLM_MAX_RETRIES."""

    provider: str = DEFAULT_LLM_PROVIDER
    history_chars: int = 8000
    max_reply_chars: int = 4000
    turn_timeout_s: float = 120.0
    offline_token_delay_ms: float = 15.0
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    model: str = DEFAULT_MODEL
    timeout_s: float = 30.0
    stall_timeout_s: float = 10.0
    max_retries: int = 3

    @classmethod
    def from_env(cls) -> LlmConfig:
        provider = env_str("LLM_PROVIDER", DEFAULT_LLM_PROVIDER).strip().lower()
        if provider not in PROVIDERS:
            raise ConfigError(f"LLM_PROVIDER={provider!r} is not supported; choose one of: {', '.join(PROVIDERS)}")
        turn_timeout_s = env_float("LLM_TURN_TIMEOUT_S", 120.0)
        token_delay_ms = env_float("LLM_OFFLINE_TOKEN_DELAY_MS", 15.0)
        if turn_timeout_s <= 0:
            raise ConfigError(f"LLM_TURN_TIMEOUT_S={turn_timeout_s} must be positive")
        if not 0 <= token_delay_ms <= 10_000:
            raise ConfigError(f"LLM_OFFLINE_TOKEN_DELAY_MS={token_delay_ms} must be between 0 and 10000")
        timeout_s = env_float("LLM_TIMEOUT_S", 30.0)
        stall_timeout_s = env_float("LLM_STALL_TIMEOUT_S", 10.0)
        for name, value in (("LLM_TIMEOUT_S", timeout_s), ("LLM_STALL_TIMEOUT_S", stall_timeout_s)):
            if not 0 < value <= 3600:
                raise ConfigError(f"{name}={value} must be between 0 and 3600 seconds")
        base_url = env_str("OPENAI_BASE_URL", "").strip()
        if base_url:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError("OPENAI_BASE_URL must be an http(s) URL such as http://127.0.0.1:8000/v1")
        config = cls(
            provider=provider,
            history_chars=env_int("LLM_HISTORY_CHARS", 8000, minimum=1000),
            max_reply_chars=env_int("LLM_MAX_REPLY_CHARS", 4000, minimum=100),
            turn_timeout_s=turn_timeout_s,
            offline_token_delay_ms=token_delay_ms,
            openai_api_key=env_str("OPENAI_API_KEY", "").strip(),
            openai_base_url=base_url,
            model=env_str("LLM_MODEL", DEFAULT_MODEL).strip(),
            timeout_s=timeout_s,
            stall_timeout_s=stall_timeout_s,
            max_retries=env_int("LLM_MAX_RETRIES", 3, minimum=0),
        )
        if provider == OPENAI:
            missing = config.openai_missing()
            if missing:
                raise ConfigError(missing)
        return config

    def openai_missing(self) -> str:
        """Why the openai provider cannot be built from this configuration ("" when it can)."""
        host = urlsplit(self.openai_base_url).hostname if self.openai_base_url else "api.openai.com"
        if not self.openai_api_key and (host or "").lower().endswith(_KEYED_HOSTS):
            return (
                "OPENAI_API_KEY is required for the openai provider (or set OPENAI_BASE_URL to a self-hosted "
                "OpenAI-compatible server such as vLLM, Ollama or llama.cpp, which need no key)"
            )
        return ""


def build_provider(config: LlmConfig, name: str | None = None) -> ChatProvider:
    """The provider named `name` (default: `config.provider`); ConfigError for an unknown or unconfigured one."""
    name = config.provider if name is None else name
    if name == OFFLINE:
        from services.llm.offline import OfflinePersona

        return OfflinePersona(token_delay_s=config.offline_token_delay_ms / 1000.0)
    if name == OPENAI:
        missing = config.openai_missing()
        if missing:
            raise ConfigError(missing)
        try:
            from services.llm.openai import OpenAIChat
        except ImportError as error:
            raise ConfigError(str(error)) from None

        return OpenAIChat(
            api_key=config.openai_api_key or _DUMMY_KEY,
            base_url=config.openai_base_url or None,
            model=config.model,
            timeout_s=config.timeout_s,
            stall_timeout_s=config.stall_timeout_s,
            max_retries=config.max_retries,
        )
    raise ConfigError(f"LLM_PROVIDER={name!r} is not supported; choose one of: {', '.join(PROVIDERS)}")


def build_providers(config: LlmConfig) -> tuple[dict[str, ChatProvider], dict[str, str]]:
    """Every provider the environment allows (sessions may pick one per stream), and why each other one is not
    available. The default provider must build (ConfigError otherwise); the others are optional."""
    providers = {config.provider: build_provider(config)}
    unavailable: dict[str, str] = {}
    for name in PROVIDERS:
        if name in providers:
            continue
        try:
            providers[name] = build_provider(config, name)
        except ConfigError as error:
            unavailable[name] = str(error)
    return providers, unavailable
