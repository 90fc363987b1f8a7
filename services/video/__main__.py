"""`python -m services.video`: the video service (PORT 50054, METRICS_PORT 9104).

Environment: HOST, PORT, METRICS_PORT, SHUTDOWN_GRACE_S (see services.common.config); VIDEO_DEFAULT_AVATAR
(astronaut, the built-in photo avatar; "drawn" when the face models are not installed), VIDEO_PHOTO_AVATARS (1: offer
photo avatars and uploaded portraits; 0: drawn faces only),
VIDEO_MAX_QUEUED_FRAMES (50 drives waiting per stream), VIDEO_MAX_STREAMS (16 concurrent Render streams),
VIDEO_WARM_SIZE (512: prepares the default avatar at this square size at start-up; 0 skips), FACE_MODEL_DIR (where the
face landmark models are; default: inside the installed mediapipe wheel); INFINITETALK and INFINITETALK_* (the GPU
model backend: see services.video.infinitetalk.loader).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from avatar.v1 import video_pb2, video_pb2_grpc
from services.common.config import ConfigError, ServerConfig, env_int, env_str
from services.common.server import run, serve
from services.video.backend import RendererBackend
from services.video.drawn import DrawnBackend, warm_up
from services.video.infinitetalk import loader as infinitetalk
from services.video.photo.backend import DEFAULT_PHOTO_AVATAR, PhotoBackend
from services.video.photo.landmarks import FaceLandmarker, FaceModelsMissing
from services.video.service import VideoServicer

log = logging.getLogger(__name__)

SERVICE_NAME = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


async def main() -> None:
    if infinitetalk.enabled() and infinitetalk.parallel_rank() > 0:
        # A sequence-parallel helper rank (torchrun): no gRPC server, it computes its shard of rank 0's forwards.
        await asyncio.to_thread(infinitetalk.follow_from_env)
        return
    config = ServerConfig.from_env(default_port=50054, default_metrics_port=9104)
    backends: list[RendererBackend] = [DrawnBackend()]
    photo: PhotoBackend | None = None
    if env_int("VIDEO_PHOTO_AVATARS", 1, minimum=0):
        try:
            await asyncio.to_thread(FaceLandmarker.shared)
            photo = PhotoBackend()
            backends.insert(0, photo)
        except FaceModelsMissing as error:
            log.warning("photo avatars are off: %s", error)
    if photo is not None and infinitetalk.enabled():
        # Slow (loads the models): before the service reports SERVING. Its avatars are `<photo avatar>-infinitetalk`.
        backends.insert(0, await asyncio.to_thread(infinitetalk.backend_from_env, photo))
    default_avatar = env_str("VIDEO_DEFAULT_AVATAR", DEFAULT_PHOTO_AVATAR if photo else "drawn")
    try:
        servicer = VideoServicer(
            backends=backends,
            default_avatar=default_avatar,
            max_queued_frames=env_int("VIDEO_MAX_QUEUED_FRAMES", 50, minimum=1),
            max_streams=env_int("VIDEO_MAX_STREAMS", 16, minimum=1),
        )
    except ValueError as error:
        raise ConfigError(f"VIDEO_DEFAULT_AVATAR: {error}") from None
    warm_size = env_int("VIDEO_WARM_SIZE", 512, minimum=0)
    if warm_size and default_avatar.startswith("drawn"):
        await asyncio.to_thread(warm_up, warm_size, warm_size, default_avatar)
    elif warm_size and photo is not None:
        await asyncio.to_thread(photo.warp, default_avatar, warm_size, warm_size)

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    await serve("video", config, register, [SERVICE_NAME])


if __name__ == "__main__":
    run("video", main)
