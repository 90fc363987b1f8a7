"""Where each process of the local stack listens: the port table's defaults, or free loopback ports (tests, benches,
`infinitetalk up --free-ports`), and the names of replicas (`video-0`, `video-1`, ...).

Its own module because everyone who starts or reaches a stack needs it (the supervisor, the CLI, tests and benches),
while only the supervisor needs processes, Envoy and health checks.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from services.common.ports import GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS, PACKAGER_HTTP_PORT

SERVICE_ORDER = ("llm", "tts", "video", "packager", "session")
DEFAULT_PORTS = GRPC_PORTS
DEFAULT_METRICS_PORTS = METRICS_PORTS
DEFAULT_HTTP_PORT = PACKAGER_HTTP_PORT
GATEWAY = "gateway"
DEFAULT_GATEWAY_PORT = GATEWAY_PORT


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def instance_names(service: str, count: int) -> list[str]:
    """Process names of a service's replicas: the service's name alone, or `video-0`, `video-1`, ..."""
    return [service] if count == 1 else [f"{service}-{index}" for index in range(count)]


def service_of(name: str) -> str:
    """The service a process name runs (`video-2` -> `video`)."""
    return name.split("-", 1)[0]


@dataclass
class StackPorts:
    """Ports of every process. Video workers and packagers may have several replicas (see `free`)."""

    grpc: dict[str, int]
    metrics: dict[str, int]
    http: int  # the (first) packager's HLS port
    host: str = "127.0.0.1"
    gateway: int = DEFAULT_GATEWAY_PORT
    packager_http: dict[str, int] = field(default_factory=dict)  # every packager's HLS port, by process name

    def __post_init__(self) -> None:
        if not self.packager_http:
            self.packager_http = {"packager": self.http}

    @classmethod
    def defaults(cls) -> StackPorts:
        gateway = int(os.environ.get("GATEWAY_PORT", DEFAULT_GATEWAY_PORT))
        return cls(dict(DEFAULT_PORTS), dict(DEFAULT_METRICS_PORTS), DEFAULT_HTTP_PORT, gateway=gateway)

    @classmethod
    def free(cls, video_workers: int = 1, packagers: int = 1) -> StackPorts:
        """Free loopback ports for every process; several video workers / packagers run as `video-<i>` /
        `packager-<i>` (the session service is given all of them)."""
        names = [
            name
            for service in SERVICE_ORDER
            for name in instance_names(
                service, video_workers if service == "video" else packagers if service == "packager" else 1
            )
        ]
        packager_http = {name: free_port() for name in names if service_of(name) == "packager"}
        return cls(
            {name: free_port() for name in names},
            {name: free_port() for name in names},
            next(iter(packager_http.values())),
            gateway=free_port(),
            packager_http=packager_http,
        )

    def names(self, service: str | None = None) -> list[str]:
        """Process names (of one service, when given), in start order."""
        return [name for name in self.grpc if service is None or service_of(name) == service]

    def addr(self, service: str) -> str:
        return f"{self.host}:{self.grpc[service]}"

    def addrs(self, service: str) -> str:
        """Comma-separated gRPC addresses of every replica of `service`."""
        return ",".join(self.addr(name) for name in self.names(service))

    @property
    def hls_base_url(self) -> str:
        return f"http://{self.host}:{self.http}"

    @property
    def gateway_url(self) -> str:
        """The page's origin; gRPC-Web and HLS go through it too."""
        return f"http://{self.host}:{self.gateway}"
