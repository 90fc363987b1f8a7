"""`python -m services.video`: the video service (PORT 50054, METRICS_PORT 9104).

Environment: HOST, PORT, METRICS_PORT, SHUTDOWN_GRACE_S (see services.common.config); VIDEO_DEFAULT_AVATAR
(astronaut, the built-in photo avatar; "drawn" when the face models are not installed), VIDEO_PHOTO_AVATARS (1: offer
photo avatars and uploaded portraits; 0: drawn faces only),
VIDEO_MAX_QUEUED_FRAMES (50 drives waiting per stream); capacity (services.video.capacity): VIDEO_CPU_BUDGET (cores
for rendering and encoding; default 0.75 x the cores this process may use), VIDEO_SPEAKING_SHARE (the fraction of
sessions expected to speak at once, default 0.25), VIDEO_MAX_STREAMS (a ceiling on sessions whatever the measurement
says, default 64); encoding: VIDEO_CRF (x264 quality, default 23), VIDEO_MAX_KBPS (bitrate cap, default 3000, 0 for
none); VIDEO_WARM_SIZE (512: prepares the default avatar at this square size at start-up and measures a speaking
frame's cost; 0 skips); VIDEO_BURN_CLOCK (1: burn each frame's live wall-clock time into it and render every chunk,
for glass-to-glass benchmarks); FACE_MODEL_DIR (where the face landmark models are; default: inside the installed
mediapipe wheel); INFINITETALK and INFINITETALK_* (the GPU model backend: see services.video.infinitetalk.loader).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from avatar.v1 import video_pb2_grpc
from infinitetalk_live_client.avatar.v1 import video_pb2
from services.common.config import ConfigError
from services.common.media import FPS, SAMPLE_RATE_HZ
from services.common.server import run, serve
from services.video.backend import RendererBackend
from services.video.calibration import speaking_frame_cpu_s
from services.video.capacity import CapacityMeter
from services.video.config import VideoConfig
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
    config = VideoConfig.from_env()
    backends: list[RendererBackend] = [DrawnBackend()]
    photo: PhotoBackend | None = None
    if config.photo_avatars:
        try:
            await asyncio.to_thread(FaceLandmarker.shared)
            photo = PhotoBackend()
            backends.insert(0, photo)
        except FaceModelsMissing as error:
            log.warning("photo avatars are off: %s", error)
    if photo is not None and infinitetalk.enabled():
        # Slow (loads the models): before the service reports SERVING. Its avatars are `<photo avatar>-infinitetalk`.
        backends.insert(0, await asyncio.to_thread(infinitetalk.backend_from_env, photo))
    default_avatar = config.default_avatar or (DEFAULT_PHOTO_AVATAR if photo else "drawn")
    warm_size = config.warm_size
    meter = CapacityMeter(
        budget_cores=config.cpu_budget_cores,
        fps=FPS,
        speaking_share=config.speaking_share,
        max_streams=config.max_streams,
        frame_cpu_s=0.01,
    )
    try:
        servicer = VideoServicer(
            backends=backends,
            default_avatar=default_avatar,
            max_queued_frames=config.max_queued_frames,
            meter=meter,
            crf=config.crf,
            max_kbps=config.max_kbps,
            burn_clock=config.burn_clock,
        )
    except ValueError as error:
        raise ConfigError(f"VIDEO_DEFAULT_AVATAR: {error}") from None
    if warm_size:
        backend = next(b for b in backends if default_avatar in {a.name for a in b.avatars()})
        if default_avatar.startswith("drawn"):
            await asyncio.to_thread(warm_up, warm_size, warm_size, default_avatar)
        elif photo is not None:
            await asyncio.to_thread(photo.warp, default_avatar, warm_size, warm_size)
        meter.frame_cpu_s = await speaking_frame_cpu_s(
            backend, default_avatar, warm_size, warm_size, FPS, SAMPLE_RATE_HZ
        )
        log.info(
            "capacity measured",
            extra={
                "speaking_stream_cores": round(meter.speaking_stream_cores, 3),
                "cpu_budget_cores": round(config.cpu_budget_cores, 2),
                "capacity": meter.capacity(),
                "speaking_capacity": meter.speaking_capacity(0),
            },
        )

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    gauges = asyncio.create_task(servicer.keep_gauges_fresh(), name="video-gauges")
    try:
        await serve("video", config.server, register, [SERVICE_NAME])
    finally:
        gauges.cancel()


if __name__ == "__main__":
    run("video", main)
