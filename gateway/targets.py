"""Where the gateway runs: local processes on 127.0.0.1, or Kubernetes services. Only addresses and defaults differ."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.model import (
    LOOPBACK_DOMAINS,
    Address,
    Bucket,
    Directory,
    Gateway,
    Limits,
    Proxy,
    RateLimit,
    Route,
    Upstream,
    normalize_domain,
)
from gateway.webroot import page_routes
from services.common.ports import GATEWAY_PORT, GRPC_PORTS, PACKAGER_HTTP_PORT

Target = Literal["local", "k8s"]
MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEB_ROOT = REPO_ROOT / "web" / "out"
GRPC_PREFIX = "/avatar.v1.SessionService/"
# CreateSession may carry a portrait (at most 8 MiB; ~10.7 MiB as base64 grpc-web-text): its body may be this large,
# kept under the services' 12 MiB gRPC message limit. Every other route keeps Limits.max_request_bytes (64 KiB).
UPLOAD_PATH = GRPC_PREFIX + "CreateSession"
UPLOAD_MAX_REQUEST_BYTES = 11 * 1024 * 1024 + 512 * 1024
# Route timeouts (the whole exchange). CreateSession may prepare a portrait (up to 30 s in the session service) after
# the catalog and placement; the other unary calls answer at once. WatchSession has no total limit: it is cut when
# silent for Limits.stream_idle_timeout_s, and the session service sends a heartbeat well within that.
CREATE_TIMEOUT_S = 60.0
API_TIMEOUT_S = 30.0
WATCH_PATH = GRPC_PREFIX + "WatchSession"
HLS_PREFIX = "/hls/"
# The packager holds a blocking playlist reload (LL-HLS) for up to 3 target durations (~3 s): well under this.
HLS_TIMEOUT_S = 10.0
# CreateSession, which is also the only route that carries an upload (a portrait), per client address: anonymous
# callers, and callers with an authorization header (a backend with an API key mints sessions for many users).
CREATE_PER_MINUTE, CREATE_BURST = 30, 10
CREATE_KEYED_PER_MINUTE, CREATE_KEYED_BURST = 120, 30


@dataclass(frozen=True)
class TargetDefaults:
    listen_host: str
    port: int
    admin_port: int  # 0: Envoy picks a free one (see --admin-address-path)
    session: str
    packager_http: str
    domains: tuple[str, ...] = LOOPBACK_DOMAINS  # Host names answered (each with any port), besides GATEWAY_DOMAINS


# In the cluster the gateway is also reached by its Service name (namespace `infinitetalk`, as the overlays set).
K8S_DOMAINS = (
    *LOOPBACK_DOMAINS,
    "gateway",
    "gateway.infinitetalk",
    "gateway.infinitetalk.svc",
    "gateway.infinitetalk.svc.cluster.local",
)
TARGETS: dict[str, TargetDefaults] = {
    "local": TargetDefaults(
        "127.0.0.1", GATEWAY_PORT, 0, f"127.0.0.1:{GRPC_PORTS['session']}", f"127.0.0.1:{PACKAGER_HTTP_PORT}"
    ),
    "k8s": TargetDefaults(
        "0.0.0.0", GATEWAY_PORT, 9901, f"session:{GRPC_PORTS['session']}", f"packager:{PACKAGER_HTTP_PORT}", K8S_DOMAINS
    ),
}
# With several packagers (k8s: the StatefulSet `packager` behind the headless Service `packager`), packager i serves
# the playlists of the sessions placed on it, under /hls/p<i>/ (the session service names that path).
K8S_PACKAGER_HTTP = f"packager-{{index}}.packager:{PACKAGER_HTTP_PORT}"
# In the gateway image the built page lives here; the k8s config serves the folder (its files are not listed).
K8S_WEB_ROOT = "/srv/web"


def packager_routes(addresses: list[str]) -> tuple[list[Upstream], list[Route]]:
    """One upstream per packager and its HLS route: `/hls/` for a single packager, `/hls/p<i>/` for several."""
    if len(addresses) == 1:
        upstream = Upstream("packager", Address.parse(addresses[0]), "http1")
        return [upstream], [Route(HLS_PREFIX, Proxy("packager", timeout_s=HLS_TIMEOUT_S), prefix=True)]
    upstreams, routes = [], []
    for index, address in enumerate(addresses):
        name = f"packager-{index}"
        upstreams.append(Upstream(name, Address.parse(address), "http1"))
        proxy = Proxy(name, timeout_s=HLS_TIMEOUT_S, prefix_rewrite=HLS_PREFIX)
        routes.append(Route(f"{HLS_PREFIX}p{index}/", proxy, prefix=True))
    return upstreams, routes


def origins_from_env() -> tuple[str, ...] | None:
    """GATEWAY_CORS_ORIGINS: comma-separated origins allowed to call the API from another page."""
    value = os.environ.get("GATEWAY_CORS_ORIGINS", "")
    return tuple(origin.strip() for origin in value.split(",") if origin.strip()) or None


def domains_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """GATEWAY_DOMAINS: comma-separated Host names (a public name, a node's address) answered besides the target's."""
    value = (os.environ if environ is None else environ).get("GATEWAY_DOMAINS", "")
    return tuple(normalize_domain(name) for name in value.split(",") if name.strip())


def _env_number(
    environ: Mapping[str, str], name: str, default: float, kind: type = float, zero_ok: bool = False
) -> float:
    """A GATEWAY_* number, `default` when unset. 0 is refused unless `zero_ok`: it would disable a limit."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a number") from None
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{name}={text!r}: must be {'0 or more' if zero_ok else 'more than 0'}")
    return value


def limits_from_env(environ: Mapping[str, str] | None = None) -> tuple[Limits, RateLimit]:
    """The edge limits and CreateSession's per-client rate from GATEWAY_* variables (defaults: `Limits()` and the
    CREATE_* constants). Read when the config is rendered: re-render after changing them."""
    env = os.environ if environ is None else environ
    base = Limits()
    limits = Limits(
        request_headers_timeout_s=_env_number(env, "GATEWAY_REQUEST_HEADERS_TIMEOUT_S", base.request_headers_timeout_s),
        request_timeout_s=_env_number(env, "GATEWAY_REQUEST_TIMEOUT_S", base.request_timeout_s),
        stream_idle_timeout_s=_env_number(env, "GATEWAY_STREAM_IDLE_TIMEOUT_S", base.stream_idle_timeout_s),
        max_heap_bytes=int(_env_number(env, "GATEWAY_MAX_HEAP_MB", base.max_heap_bytes // MIB, int)) * MIB,
        trusted_hops=int(_env_number(env, "GATEWAY_TRUSTED_HOPS", base.trusted_hops, int, zero_ok=True)),
    )
    rate = RateLimit(
        "create_session",
        anonymous=Bucket(
            int(_env_number(env, "GATEWAY_CREATE_PER_MINUTE", CREATE_PER_MINUTE, int)),
            int(_env_number(env, "GATEWAY_CREATE_BURST", CREATE_BURST, int)),
        ),
        with_credential=Bucket(
            int(_env_number(env, "GATEWAY_CREATE_KEYED_PER_MINUTE", CREATE_KEYED_PER_MINUTE, int)),
            int(_env_number(env, "GATEWAY_CREATE_KEYED_BURST", CREATE_KEYED_BURST, int)),
        ),
    )
    return limits, rate


def own_origins(port: int) -> tuple[str, ...]:
    """The gateway's own origins: what the page it serves sends as Origin."""
    return (f"http://127.0.0.1:{port}", f"http://localhost:{port}")


def describe(
    target: Target = "local",
    *,
    port: int | None = None,
    session: str | None = None,
    packager_http: str | None = None,
    web_root: Path | None = None,
    cors_origins: tuple[str, ...] | list[str] | None = None,
    admin_port: int | None = None,
    packagers: int = 1,
    domains: Sequence[str] | None = None,
    limits: Limits | None = None,
    create_rate: RateLimit | None = None,
) -> Gateway:
    """The gateway for `target`; anything not given takes the target's default. `packager_http` may list several
    comma-separated addresses; for k8s, `packagers` > 1 names the StatefulSet's pods. `domains` are answered besides
    the target's own (default: GATEWAY_DOMAINS); `limits` and `create_rate` default to the GATEWAY_* variables."""
    defaults = TARGETS[target]
    if limits is None or create_rate is None:
        env_limits, env_rate = limits_from_env()
        limits = env_limits if limits is None else limits
        create_rate = env_rate if create_rate is None else create_rate
    extra = domains_from_env() if domains is None else tuple(normalize_domain(name) for name in domains)
    port = defaults.port if port is None else port
    if packager_http:
        addresses = [a.strip() for a in packager_http.split(",") if a.strip()]
    elif packagers > 1:
        if target != "k8s":
            raise ValueError("several packagers need their addresses (--packager-http a,b,...)")
        addresses = [K8S_PACKAGER_HTTP.format(index=index) for index in range(packagers)]
    else:
        addresses = [defaults.packager_http]
    hls_upstreams, hls_routes = packager_routes(addresses)
    routes = [
        Route(
            UPLOAD_PATH,
            Proxy("session", timeout_s=CREATE_TIMEOUT_S, grpc=True),
            max_request_bytes=UPLOAD_MAX_REQUEST_BYTES,
            rate_limit=create_rate,
        ),
        Route(WATCH_PATH, Proxy("session", timeout_s=0, grpc=True, idle_timeout_s=limits.stream_idle_timeout_s)),
        Route(GRPC_PREFIX, Proxy("session", timeout_s=API_TIMEOUT_S, grpc=True), prefix=True),
        *hls_routes,
        *(
            [Route("/", Directory(str(web_root or K8S_WEB_ROOT)), prefix=True)]
            if target == "k8s"
            else page_routes(DEFAULT_WEB_ROOT if web_root is None else web_root)
        ),
    ]
    return Gateway(
        listen=Address(defaults.listen_host, port),
        admin=Address("127.0.0.1", defaults.admin_port if admin_port is None else admin_port),
        upstreams=(Upstream("session", Address.parse(session or defaults.session), "http2"), *hls_upstreams),
        routes=tuple(routes),
        cors_origins=tuple(cors_origins) if cors_origins else own_origins(port),
        limits=limits,
        domains=tuple(dict.fromkeys((*defaults.domains, *extra))),
    )
