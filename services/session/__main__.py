"""`python -m services.session`: the hub service."""

from __future__ import annotations

import logging

import grpc

from avatar.v1 import llm_pb2_grpc, tts_pb2_grpc
from infinitetalk_live_client.avatar.v1 import session_pb2, session_pb2_grpc
from services.common.server import MAX_MESSAGE_BYTES, run, serve
from services.session.access import require_keys
from services.session.config import SessionConfig, server_config
from services.session.live import PeerStubs
from services.session.placement import Packagers, VideoWorkers
from services.session.service import SessionServicer

log = logging.getLogger("services.session")

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)


def open_stubs(config: SessionConfig) -> tuple[PeerStubs, list[grpc.aio.Channel]]:
    """Stubs for llm and tts, and the video workers and packagers sessions are placed on (VIDEO_ADDR and
    PACKAGER_ADDR may list several; see services.session.placement)."""
    llm = open_channel(config.llm_addr)
    tts = open_channel(config.tts_addr)
    stubs = PeerStubs(
        llm=llm_pb2_grpc.LlmServiceStub(llm),
        tts=tts_pb2_grpc.TtsServiceStub(tts),
        video=VideoWorkers(config.video_addr, open_channel),
        packagers=Packagers(config.packager_addr, open_channel),
    )
    return stubs, [llm, tts]


async def main() -> None:
    config = SessionConfig.from_env()
    listen = server_config()
    require_keys(config.api_keys, listen.host, config.allow_anonymous)
    log.info(
        "access",
        extra={"api_keys": len(config.api_keys), "anonymous_create": not config.api_keys.enabled},
    )
    stubs, channels = open_stubs(config)
    servicer = SessionServicer(config, stubs)
    servicer.start()
    service_name = session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name
    try:
        await serve(
            "session",
            listen,
            lambda server: session_pb2_grpc.add_SessionServiceServicer_to_server(servicer, server),
            [service_name],
            on_shutdown=servicer.shutdown,
        )
    finally:
        for channel in channels:
            await channel.close()
        await stubs.video.close()
        await stubs.packagers.close()


if __name__ == "__main__":
    run("session", main)
