"""Where the gateway runs: local processes on 127.0.0.1, or Kubernetes services. Only addresses and defaults differ."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.model import Address, Directory, Gateway, Proxy, Route, Upstream
from gateway.webroot import page_routes

Target = Literal["local", "k8s"]
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEB_ROOT = REPO_ROOT / "web" / "out"
GRPC_PREFIX = "/avatar.v1.SessionService/"
# CreateSession may carry a portrait (at most 8 MiB; ~10.7 MiB as base64 grpc-web-text): its body may be this large,
# kept under the services' 12 MiB gRPC message limit. Every other route keeps Limits.max_request_bytes (64 KiB).
UPLOAD_PATH = GRPC_PREFIX + "CreateSession"
UPLOAD_MAX_REQUEST_BYTES = 11 * 1024 * 1024 + 512 * 1024
HLS_PREFIX = "/hls/"
HLS_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TargetDefaults:
    listen_host: str
    port: int
    admin_port: int  # 0: Envoy picks a free one (see --admin-address-path)
    session: str
    packager_http: str


TARGETS: dict[str, TargetDefaults] = {
    "local": TargetDefaults("127.0.0.1", 8080, 0, "127.0.0.1:50051", "127.0.0.1:8088"),
    "k8s": TargetDefaults("0.0.0.0", 8080, 9901, "session:50051", "packager:8088"),
}
# With several packagers (k8s: the StatefulSet `packager` behind the headless Service `packager`), packager i serves
# the playlists of the sessions placed on it, under /hls/p<i>/ (the session service names that path).
K8S_PACKAGER_HTTP = "packager-{index}.packager:8088"
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
) -> Gateway:
    """The gateway for `target`; anything not given takes the target's default. `packager_http` may list several
    comma-separated addresses; for k8s, `packagers` > 1 names the StatefulSet's pods."""
    defaults = TARGETS[target]
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
        Route(UPLOAD_PATH, Proxy("session", timeout_s=None, grpc=True), max_request_bytes=UPLOAD_MAX_REQUEST_BYTES),
        Route(GRPC_PREFIX, Proxy("session", timeout_s=None, grpc=True), prefix=True),
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
    )
