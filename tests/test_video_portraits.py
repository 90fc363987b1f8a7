"""Uploaded portraits in the video service: PrepareAvatar, Render with `config.portrait`, and clear refusals."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from PIL import Image

from avatar.v1 import video_pb2, video_pb2_grpc
from services.video.drawn import DrawnBackend
from services.video.photo.backend import PhotoBackend
from services.video.photo.landmarks import FaceLandmarker
from tests.video_harness import Session, Stack, decode_rgb, render_config, render_error, running_stack, running_video


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
async def stack() -> AsyncIterator[Stack]:
    async with running_stack([DrawnBackend(), PhotoBackend()]) as running:
        yield running


@pytest.fixture
def video(stack: Stack) -> video_pb2_grpc.VideoServiceStub:
    return stack.video.stub


def violation(error: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest.FieldViolation:
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(details).details[0].Unpack(bad)
    return bad.field_violations[0]


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


async def test_render_animates_an_uploaded_portrait(stack: Stack):
    session = await Session.open(stack, width=256, height=256, portrait=astronaut_jpeg())
    assert session.ready is not None and session.ready.settle_frames > 0
    assert stack.packager.servicer.loops.get(session.ready.idle_loop_id) is not None
    assert stack.video.servicer.loops.builds == 1
    await session.drive_speech(12)
    await session.commit(0)  # the portrait's idle loop
    await session.commit(12)  # rendered speech
    assert await session.end() == grpc.StatusCode.OK
    assert session.stalls() == []
    frames = decode_rgb(await session.media())
    assert len(frames) == 24 and frames[0].shape == (256, 256, 3)
    landmarker = FaceLandmarker.shared()
    faces = [landmarker.find(frames[i]) for i in (0, 6, *range(13, 24))]
    assert all(face is not None for face in faces), "every decoded picture shows the portrait's face"
    idle = max(face.mouth_opening() for face in faces[:2])
    speaking = max(face.mouth_opening() for face in faces[2:])
    assert speaking > 1.5 * idle, (idle, speaking)  # and it speaks in the rendered chunk
    # The same portrait again (another session): prepared and looped already.
    again = await Session.open(stack, width=256, height=256, portrait=astronaut_jpeg(), publish=False)
    assert again.ready.idle_loop_id == session.ready.idle_loop_id
    assert stack.video.servicer.loops.builds == 1
    assert await again.close() == grpc.StatusCode.OK


async def test_render_refuses_a_portrait_with_an_avatar_name_and_a_bare_portrait_name(stack: Stack, video):
    portrait = astronaut_jpeg()
    name = (await video.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=portrait), timeout=60)).avatar.name
    address = stack.packager.address
    for config, field in (
        (render_config(address, avatar="drawn", portrait=portrait), "config.portrait"),
        (render_config(address, avatar=name), "config.avatar"),
        (render_config(address, portrait=gradient_png()), "config.portrait"),
    ):
        error, responses = await render_error(video, [config])
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation(error).field == field
        assert responses == []
    assert stack.video.servicer.active == 0


async def test_a_service_without_a_photo_renderer_says_so():
    async with running_video([DrawnBackend()]) as video:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await video.stub.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=astronaut_jpeg()), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "portrait" in caught.value.details()
        error, _ = await render_error(video.stub, [render_config("127.0.0.1:1", portrait=astronaut_jpeg())])
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "portrait" in error.details()
        assert video.servicer.active == 0
