"""`python -m services.tts`: loads the speech engines, then serves TtsService (default port 50053, metrics 9103).

Environment: TTS_ENGINE (piper|espeak, default piper), TTS_DEFAULT_VOICE (default: the engine's first voice), plus
HOST, PORT, METRICS_PORT, SHUTDOWN_GRACE_S, LOG_LEVEL (services.common)."""

from __future__ import annotations

import asyncio
import os

import grpc

from avatar.v1 import tts_pb2_grpc
from services.common.config import ServerConfig, env_str
from services.common.server import run, serve
from services.tts.registry import load_engines
from services.tts.service import SERVICE_NAME, TtsServicer


async def main() -> None:
    config = ServerConfig.from_env(default_port=50053, default_metrics_port=9103)
    engines = await asyncio.to_thread(load_engines, env_str("TTS_ENGINE", "piper"))
    servicer = TtsServicer(engines, default_voice=os.environ.get("TTS_DEFAULT_VOICE") or None)

    def register(server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_TtsServiceServicer_to_server(servicer, server)

    await serve("tts", config, register, [SERVICE_NAME])


if __name__ == "__main__":
    run("tts", main)
