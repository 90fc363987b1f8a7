"""`python -m services.packager`: gRPC Publish on PORT (50055) and the HLS HTTP server on HTTP_PORT (8088)."""

from __future__ import annotations

import logging

from avatar.v1 import packager_pb2, packager_pb2_grpc
from services.common.server import run, serve
from services.packager.config import PackagerConfig, server_config
from services.packager.http import create_app, parse_cors_origins, start_http
from services.packager.service import PackagerServicer
from services.packager.store import HlsStore

log = logging.getLogger("services.packager")


async def main() -> None:
    config = PackagerConfig.from_env()
    grpc_config = server_config()
    store = HlsStore(config.window_segments, config.retain_ended_s)
    servicer = PackagerServicer(config, store)
    runner, http_port = await start_http(
        create_app(store, parse_cors_origins(config.cors_origins), config.signing_key),
        grpc_config.host,
        config.http_port,
    )
    log.info("hls http listening", extra={"http_port": http_port})
    service_name = packager_pb2.DESCRIPTOR.services_by_name["PackagerService"].full_name
    try:
        await serve(
            "packager",
            grpc_config,
            lambda server: packager_pb2_grpc.add_PackagerServiceServicer_to_server(servicer, server),
            [service_name],
            on_shutdown=servicer.shutdown,
        )
    finally:
        store.close()
        await runner.cleanup()


if __name__ == "__main__":
    run("packager", main)
