"""Configuration from environment variables, failing fast with a message that names the variable."""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigError(ValueError):
    """A required variable is missing or a value cannot be parsed."""


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required")
        return default
    return value


def env_int(name: str, default: int | None = None, *, minimum: int | None = None) -> int:
    raw = env_str(name, None if default is None else str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float | None = None) -> float:
    raw = env_str(name, None if default is None else str(default))
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "1" if default else "0").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use 1 or 0")


@dataclass(frozen=True)
class ServerConfig:
    """Where a service listens and how it shuts down. Variables: HOST, PORT, METRICS_PORT, SHUTDOWN_GRACE_S."""

    host: str
    port: int
    metrics_port: int
    grace_s: float

    @classmethod
    def from_env(cls, default_port: int, default_metrics_port: int) -> ServerConfig:
        return cls(
            host=env_str("HOST", "127.0.0.1"),
            port=env_int("PORT", default_port, minimum=0),
            metrics_port=env_int("METRICS_PORT", default_metrics_port, minimum=-1),
            grace_s=env_float("SHUTDOWN_GRACE_S", 5.0),
        )
