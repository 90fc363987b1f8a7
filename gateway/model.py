"""The gateway as a small typed description: what listens, where requests go, what is answered directly.

Both deployment targets (local processes, Kubernetes) are built as one of these and rendered by the same code, so
they can differ only in addresses and defaults.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Address:
    """host:port; the host is an IP literal or a DNS name (a Kubernetes service)."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    """A backend service. gRPC backends need HTTP/2; the packager's HLS server speaks HTTP/1.1."""

    name: str
    address: Address
    protocol: Literal["http1", "http2"]
    connect_timeout_s: float = 2.0
    max_connections: int = 1024
    max_requests: int = 1024  # with HTTP/2: concurrent streams, WatchSession streams included


@dataclass(frozen=True)
class Proxy:
    """Forward to an upstream. `timeout_s=None` never cuts the response (long server streams such as WatchSession)."""

    upstream: str
    timeout_s: float | None
    grpc: bool = False
    prefix_rewrite: str | None = None  # replaces the matched prefix (e.g. /hls/p1/ -> /hls/)


@dataclass(frozen=True)
class File:
    """Answer with a file's bytes (Envoy reads it when it loads the config: re-render after rebuilding the page)."""

    path: Path
    content_type: str
    cache_control: str
    status: int = 200


@dataclass(frozen=True)
class Directory:
    """Serve files under `root` (Envoy's file_server filter, enabled on this route only): for a page whose files
    are only known where Envoy runs (a container image), so the config does not list them."""

    root: str
    index: str = "index.html"


@dataclass(frozen=True)
class Inline:
    """Answer with a fixed body."""

    body: str
    content_type: str
    status: int = 200
    cache_control: str = "no-cache"


@dataclass(frozen=True)
class Route:
    """`path` matched exactly, or as a prefix when `prefix` is true; first match wins.

    `max_request_bytes` overrides `Limits.max_request_bytes` for this route only (e.g. a photo upload)."""

    path: str
    action: Proxy | File | Inline | Directory
    prefix: bool = False
    max_request_bytes: int | None = None


@dataclass(frozen=True)
class Limits:
    """Edge limits: request size (gRPC-Web requests are small unary messages), connections, header sizes."""

    max_request_bytes: int = 64 * 1024
    max_connections: int = 1024
    max_request_headers_kb: int = 32
    max_concurrent_streams: int = 100  # per HTTP/2 downstream connection
    request_headers_timeout_s: float = 10.0
    idle_connection_timeout_s: float = 300.0


@dataclass(frozen=True)
class Gateway:
    listen: Address
    admin: Address
    upstreams: tuple[Upstream, ...]
    routes: tuple[Route, ...]
    cors_origins: tuple[str, ...]
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.admin.host).is_loopback:
            raise ValueError(f"the admin interface must stay on loopback, not {self.admin.host}")
        if "*" in self.cors_origins:
            raise ValueError("CORS origins must be listed explicitly, not '*'")
        names = {upstream.name for upstream in self.upstreams}
        for route in self.routes:
            if route.max_request_bytes is not None and route.max_request_bytes <= 0:
                raise ValueError(f"route {route.path}: max_request_bytes must be positive")
            if isinstance(route.action, Proxy) and route.action.upstream not in names:
                raise ValueError(f"route {route.path} names unknown upstream {route.action.upstream}")
