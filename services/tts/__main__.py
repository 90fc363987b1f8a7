"""`python -m services.tts`: loads the speech engines, then serves TtsService (default port 50053, metrics 9103).

Environment: TTS_PROVIDER (piper|espeak|elevenlabs|openai; TTS_ENGINE is its older name, default piper), TTS_FALLBACK
(piper|espeak|none), ELEVENLABS_* and OPENAI_* (README), TTS_DEFAULT_VOICE (default: the provider's first voice), plus
HOST, PORT, METRICS_PORT, SHUTDOWN_GRACE_S, LOG_LEVEL (services.common).

CPU of the local voices (Piper, espeak-ng; cloud voices are not limited): TTS_CONCURRENCY, how many sentences they
make at once across all streams (default: the CPUs this process may use, from its affinity mask, divided by
TTS_THREADS, at least 1: the voice never takes more cores than there are, so video rendering on the same box keeps
its share); more wait, each utterance's first clause before anyone's later clauses (services/tts/scheduler.py).
TTS_THREADS, onnxruntime threads of each Piper run (default 2, at most those CPUs). At most TTS_CONCURRENCY x
TTS_THREADS Piper threads are busy."""

from __future__ import annotations

import asyncio

import grpc

from avatar.v1 import tts_pb2_grpc
from services.common.server import run, serve
from services.tts.config import TtsConfig
from services.tts.registry import load_setup
from services.tts.service import SERVICE_NAME, TtsServicer


async def main() -> None:
    config = TtsConfig.from_env()
    setup = await asyncio.to_thread(load_setup)
    servicer = TtsServicer(
        setup.engines,
        default_voice=config.default_voice,
        fallback_voice=setup.fallback_voice,
    )

    def register(server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_TtsServiceServicer_to_server(servicer, server)

    await serve("tts", config.server, register, [SERVICE_NAME])


if __name__ == "__main__":
    run("tts", main)
