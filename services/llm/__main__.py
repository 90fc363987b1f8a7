"""`python -m services.llm`: the llm service (LLM_PROVIDER selects who writes the replies; default `offline`)."""

from __future__ import annotations

import logging

from avatar.v1 import llm_pb2, llm_pb2_grpc
from services.common.config import ServerConfig
from services.common.ports import GRPC_PORTS, METRICS_PORTS
from services.common.server import run, serve
from services.llm.config import LlmConfig, build_providers
from services.llm.service import LlmServicer

log = logging.getLogger("services.llm")

DEFAULT_PORT = GRPC_PORTS["llm"]
DEFAULT_METRICS_PORT = METRICS_PORTS["llm"]


async def main() -> None:
    server_config = ServerConfig.from_env(DEFAULT_PORT, DEFAULT_METRICS_PORT)
    config = LlmConfig.from_env()
    providers, unavailable = build_providers(config)
    provider = providers[config.provider]
    servicer = LlmServicer(
        provider,
        providers=providers,
        unavailable=unavailable,
        history_chars=config.history_chars,
        max_reply_chars=config.max_reply_chars,
        turn_timeout_s=config.turn_timeout_s,
    )
    log.info(
        "provider ready",
        extra={"provider": provider.name, "available": sorted(providers), "unavailable": sorted(unavailable)},
    )

    async def close_providers() -> None:
        for each in providers.values():
            await each.aclose()

    service_name = llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name
    await serve(
        "llm",
        server_config,
        lambda server: llm_pb2_grpc.add_LlmServiceServicer_to_server(servicer, server),
        [service_name],
        on_shutdown=close_providers,
    )


if __name__ == "__main__":
    run("llm", main)
