"""`python -m services.video`: the video service (PORT 50054, METRICS_PORT 9104).

Environment: HOST, PORT, METRICS_PORT, SHUTDOWN_GRACE_S (see services.common.config); VIDEO_DEFAULT_AVATAR (drawn),
VIDEO_MAX_QUEUED_FRAMES (50 drives waiting per stream), VIDEO_MAX_STREAMS (16 concurrent Render streams),
VIDEO_WARM_SIZE (512: draws the default avatar's static picture at this square size at start-up; 0 skips).
"""

from __future__ import annotations

import asyncio

import grpc

from avatar.v1 import video_pb2, video_pb2_grpc
from services.common.config import ConfigError, ServerConfig, env_int, env_str
from services.common.server import run, serve
from services.video.drawn import DEFAULT_AVATAR, warm_up
from services.video.service import VideoServicer

SERVICE_NAME = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


async def main() -> None:
    config = ServerConfig.from_env(default_port=50054, default_metrics_port=9104)
    default_avatar = env_str("VIDEO_DEFAULT_AVATAR", DEFAULT_AVATAR)
    try:
        servicer = VideoServicer(
            default_avatar=default_avatar,
            max_queued_frames=env_int("VIDEO_MAX_QUEUED_FRAMES", 50, minimum=1),
            max_streams=env_int("VIDEO_MAX_STREAMS", 16, minimum=1),
        )
    except ValueError as error:
        raise ConfigError(f"VIDEO_DEFAULT_AVATAR: {error}") from None
    warm_size = env_int("VIDEO_WARM_SIZE", 512, minimum=0)
    if warm_size and default_avatar.startswith("drawn"):
        await asyncio.to_thread(warm_up, warm_size, warm_size, default_avatar)

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    await serve("video", config, register, [SERVICE_NAME])


if __name__ == "__main__":
    run("video", main)
