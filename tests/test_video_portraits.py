"""Uploaded portraits in the video service: PrepareAvatar, Render with `config.portrait`, and clear refusals."""

from __future__ import annotations

import io
import os

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from PIL import Image

from avatar.v1 import media_pb2, video_pb2, video_pb2_grpc
from services.common.server import create_server
from services.video.drawn import DrawnBackend
from services.video.photo.backend import PhotoBackend
from services.video.service import VideoServicer

FPS = 25
RATE = 24000


def astronaut_jpeg() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def gradient_png() -> bytes:
    ramp = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([ramp, ramp.T, 255 - ramp])).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def video():
    servicer = VideoServicer([DrawnBackend(), PhotoBackend()])

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    server, port, _ = await create_server("127.0.0.1:0", register, ["avatar.v1.VideoService"])
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 12 * 1024 * 1024)]
    )
    try:
        yield video_pb2_grpc.VideoServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def violation(error: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest.FieldViolation:
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(details).details[0].Unpack(bad)
    return bad.field_violations[0]


def render_config(**fields) -> video_pb2.RenderRequest:
    base = dict(session_id="s", width=256, height=256, fps=FPS, sample_rate_hz=RATE)
    return video_pb2.RenderRequest(config=video_pb2.RenderConfig(**{**base, **fields}))


def drives(count: int) -> list[video_pb2.RenderRequest]:
    return [video_pb2.RenderRequest(frame=video_pb2.FrameDrive(frame_index=i)) for i in range(count)]


async def test_prepare_avatar_names_a_private_portrait(video):
    response = await video.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=astronaut_jpeg()), timeout=60)
    assert response.avatar.name.startswith("portrait-") and len(response.avatar.name) == len("portrait-") + 32
    assert response.avatar.backend == "photo"
    again = await video.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=astronaut_jpeg()), timeout=60)
    assert again.avatar.name == response.avatar.name  # content-addressed
    listed = await video.ListAvatars(video_pb2.ListAvatarsRequest(), timeout=10)
    assert not [a for a in listed.avatars if a.name.startswith("portrait-")]


@pytest.mark.parametrize(
    ("image", "reason", "words"),
    [
        (os.urandom(4096), "not_an_image", "not a JPEG, PNG or WebP"),
        (b"", "not_an_image", "empty"),
        (gradient_png(), "no_face", "no face"),
        (b"\xff" * (8 * 1024 * 1024 + 1), "too_large", "8 MiB"),
    ],
    ids=["random", "empty", "no-face", "too-large"],
)
async def test_prepare_avatar_refuses_files_it_cannot_animate(video, image, reason, words):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await video.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=image), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details()
    field = violation(caught.value)
    assert (field.field, field.reason) == ("image", reason)


async def test_render_animates_an_uploaded_portrait(video):
    portrait = astronaut_jpeg()
    call = video.Render(iter([render_config(portrait=portrait), *drives(3)]), timeout=60)
    frames = [response.frame async for response in call if response.HasField("frame")]
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert all(len(f.data) == 256 * 256 * 3 // 2 and f.pixel_format == media_pb2.PIXEL_FORMAT_I420 for f in frames)
    # Not the drawn avatar: the portrait's own colours (the astronaut's photo is far from a flat cartoon).
    luma = np.frombuffer(frames[0].data[: 256 * 256], np.uint8)
    assert luma.std() > 20


async def test_render_refuses_a_portrait_with_an_avatar_name_and_a_bare_portrait_name(video):
    portrait = astronaut_jpeg()
    name = (await video.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=portrait), timeout=60)).avatar.name
    for config, field in (
        (render_config(avatar="drawn", portrait=portrait), "config.portrait"),
        (render_config(avatar=name), "config.avatar"),
        (render_config(portrait=gradient_png()), "config.portrait"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in video.Render(iter([config, *drives(1)]), timeout=60):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation(caught.value).field == field


async def test_a_service_without_a_photo_renderer_says_so():
    servicer = VideoServicer([DrawnBackend()])

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    server, port, _ = await create_server("127.0.0.1:0", register, ["avatar.v1.VideoService"])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = video_pb2_grpc.VideoServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=astronaut_jpeg()), timeout=10)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "portrait" in caught.value.details()
    finally:
        await server.stop(0)
