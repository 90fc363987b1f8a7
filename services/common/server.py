"""Service bootstrap: an aio gRPC server with health, reflection and the shared interceptor, Prometheus
/metrics, and graceful shutdown on SIGTERM/SIGINT (health goes NOT_SERVING, streams get `grace_s` to finish)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from services.common.config import ConfigError, ServerConfig
from services.common.interceptors import ServiceContextInterceptor
from services.common.logs import configure_logging

log = logging.getLogger(__name__)

# Room for an 8 MiB portrait upload (CreateSession, PrepareAvatar, RenderConfig) plus its envelope.
MAX_MESSAGE_BYTES = 12 * 1024 * 1024

Registrar = Callable[[grpc.aio.Server], None]


async def create_server(
    address: str, register: Registrar, service_names: Sequence[str]
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds (not starts) a server bound to `address` ("127.0.0.1:0" picks a free port); returns its port."""
    server = grpc.aio.server(
        interceptors=[ServiceContextInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Ping every client connection; one that does not answer (a vanished watcher) is closed.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ],
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return server, port, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, service_names: Sequence[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *service_names):
        await health_servicer.set(name, status)


async def serve(
    service: str,
    config: ServerConfig,
    register: Registrar,
    service_names: Sequence[str],
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Runs a service until SIGTERM/SIGINT, then drains it."""
    server, port, health_servicer = await create_server(f"{config.host}:{config.port}", register, service_names)
    if config.metrics_port >= 0:
        start_http_server(config.metrics_port, addr=config.host)
    await server.start()
    await set_serving(health_servicer, service_names, True)
    log.info("listening", extra={"port": port, "metrics_port": config.metrics_port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down", extra={"grace_s": config.grace_s})
        await set_serving(health_servicer, service_names, False)
        if on_shutdown is not None:
            await on_shutdown()
    finally:
        await server.stop(config.grace_s)
        log.info("stopped")


def run(service: str, main: Callable[[], Awaitable[None]]) -> None:
    """Process entry point: JSON logs, then the service's main coroutine; bad configuration exits with code 2."""
    configure_logging(service)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    except ConfigError as error:  # fail fast, naming the variable
        log.error("bad configuration: %s", error)
        raise SystemExit(2) from None
