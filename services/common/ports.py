"""The stack's default ports, one table: each service's gRPC and metrics port, the packager's HLS port, the gateway's.

Why here: the services' own defaults (PORT, METRICS_PORT, the packager's HTTP_PORT), the local supervisor
(infinitetalk_live.stack) and the gateway's targets (gateway.targets) all need these numbers; each used to spell them
out, copies that could drift apart. They import this table instead. The Kubernetes manifests (YAML) keep their own
copies; tests/test_shared_tables.py checks those against this table."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

SERVICES: Final[tuple[str, ...]] = ("session", "llm", "tts", "video", "packager")
GRPC_PORTS: Final[Mapping[str, int]] = MappingProxyType(
    {"session": 50051, "llm": 50052, "tts": 50053, "video": 50054, "packager": 50055}
)
METRICS_PORTS: Final[Mapping[str, int]] = MappingProxyType(
    {"session": 9101, "llm": 9102, "tts": 9103, "video": 9104, "packager": 9105}
)
PACKAGER_HTTP_PORT: Final = 8088  # the packager's HLS (HTTP_PORT); the gateway proxies /hls/ to it
GATEWAY_PORT: Final = 8080  # the gateway's listener: the page, gRPC-Web and HLS (GATEWAY_PORT for `up`)
