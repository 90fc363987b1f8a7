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
    """Forward to an upstream.

    `timeout_s` bounds the whole exchange, so a stuck upstream cannot hold a request (and its buffers) for ever. 0 is
    for long server streams only (WatchSession): they are cut instead when silent for `idle_timeout_s` (None: the
    listener's `Limits.stream_idle_timeout_s`), which the stream's heartbeats keep from firing while it is alive."""

    upstream: str
    timeout_s: float
    grpc: bool = False
    prefix_rewrite: str | None = None  # replaces the matched prefix (e.g. /hls/p1/ -> /hls/)
    idle_timeout_s: float | None = None


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
class Bucket:
    """A token bucket: `burst` requests at once, refilled evenly at `per_minute`."""

    per_minute: int
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst <= 0:
            raise ValueError("a rate limit's per_minute and burst must be positive")


@dataclass(frozen=True)
class RateLimit:
    """A bucket per client: the remote address Envoy trusts (see `Limits.trusted_hops`), split by whether the request
    carries an authorization header, so a backend holding an API key is not starved by anonymous callers from its
    address. Only the header's presence is used, never its value: the session service checks the key. Over the
    limit, gRPC callers get RESOURCE_EXHAUSTED, others 429. `name` prefixes the filter's stats (no client in them)."""

    name: str
    anonymous: Bucket
    with_credential: Bucket


@dataclass(frozen=True)
class Route:
    """`path` matched exactly, or as a prefix when `prefix` is true; first match wins.

    `max_request_bytes` overrides `Limits.max_request_bytes` for this route only (e.g. a photo upload);
    `rate_limit` applies a per-client bucket to this route only."""

    path: str
    action: Proxy | File | Inline | Directory
    prefix: bool = False
    max_request_bytes: int | None = None
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class Limits:
    """Edge limits, so that no client (or a few dozen slow ones) can hold the gateway's memory or connections.

    Timeouts: `request_timeout_s` bounds receiving a whole request (a slow upload), not the response, so it never
    cuts a server stream whose request ended at once (WatchSession); `stream_idle_timeout_s` cuts a stream silent in
    both directions (WatchSession sends a heartbeat well within it). Keepalive (HTTP/2 PING, TCP keepalive and
    TCP_USER_TIMEOUT) finds clients that vanished without closing. `max_heap_bytes` drives the overload manager (heap
    shrink, then 503 for new requests) and should stay under the pod's memory limit. `trusted_hops`: how many
    proxies in front of Envoy append to x-forwarded-for (0: the peer's address is the client)."""

    max_request_bytes: int = 64 * 1024
    max_connections: int = 1024
    max_request_headers_kb: int = 32
    max_concurrent_streams: int = 100  # per HTTP/2 downstream connection
    request_headers_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    stream_idle_timeout_s: float = 60.0
    idle_connection_timeout_s: float = 300.0
    connection_buffer_bytes: int = 32 * 1024  # per connection, listener and upstreams (flow control, not a cap)
    max_heap_bytes: int = 384 * 1024 * 1024  # a 512 Mi pod
    trusted_hops: int = 0
    http2_keepalive_interval_s: float = 20.0
    http2_keepalive_timeout_s: float = 10.0
    tcp_keepalive_idle_s: int = 30
    tcp_keepalive_interval_s: int = 10
    tcp_keepalive_probes: int = 3
    tcp_user_timeout_s: int = 60  # unacknowledged data (e.g. heartbeats to a vanished client) for this long: close

    def __post_init__(self) -> None:
        for name in ("request_headers_timeout_s", "request_timeout_s", "stream_idle_timeout_s", "max_heap_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive (0 would disable it)")
        if self.trusted_hops < 0:
            raise ValueError("Limits.trusted_hops must be 0 or more")


# Host names the gateway always answers: the page and the CLI on the machine itself. Other names (a public host, a
# Kubernetes service) are added by the target or GATEWAY_DOMAINS; any other Host is refused (DNS rebinding).
LOOPBACK_DOMAINS = ("localhost", "127.0.0.1", "[::1]")


def normalize_domain(name: str) -> str:
    """A Host name as Envoy matches it: lower case, an IPv6 literal in brackets; wildcards are refused (explicit
    names only), as is anything that is not a plain host[:port]."""
    name = name.strip().lower()
    try:
        if ipaddress.ip_address(name).version == 6:
            name = f"[{name}]"
    except ValueError:
        pass
    if not name or "*" in name or any(c in name for c in "/ \t@?#,"):
        raise ValueError(f"gateway domain {name!r}: expected a host name or IP, optionally with :port")
    return name


@dataclass(frozen=True)
class Gateway:
    listen: Address
    admin: Address
    upstreams: tuple[Upstream, ...]
    routes: tuple[Route, ...]
    cors_origins: tuple[str, ...]
    limits: Limits = field(default_factory=Limits)
    domains: tuple[str, ...] = LOOPBACK_DOMAINS

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.admin.host).is_loopback:
            raise ValueError(f"the admin interface must stay on loopback, not {self.admin.host}")
        if "*" in self.cors_origins:
            raise ValueError("CORS origins must be listed explicitly, not '*'")
        if not self.domains:
            raise ValueError("the gateway needs at least one domain (Host) to answer")
        for domain in self.domains:
            if normalize_domain(domain) != domain:
                raise ValueError(f"gateway domain {domain!r}: write it as {normalize_domain(domain)!r}")
        names = {upstream.name for upstream in self.upstreams}
        for route in self.routes:
            if route.max_request_bytes is not None and route.max_request_bytes <= 0:
                raise ValueError(f"route {route.path}: max_request_bytes must be positive")
            if isinstance(route.action, Proxy):
                if route.action.upstream not in names:
                    raise ValueError(f"route {route.path} names unknown upstream {route.action.upstream}")
                idle = route.action.idle_timeout_s
                if route.action.timeout_s < 0 or (idle is not None and idle <= 0):
                    raise ValueError(f"route {route.path}: timeouts must be positive (timeout_s 0: no total limit)")
