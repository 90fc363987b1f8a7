"""Uploaded portraits in the video service: PrepareAvatar, Render with `config.portrait`, and clear refusals."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from PIL import Image

from avatar.v1 import video_pb2_grpc
from infinitetalk_live_client.avatar.v1 import video_pb2
from services.video.backend import AvatarInfo, PortraitBackend
from services.video.drawn import DrawnBackend
from services.video.photo.backend import PhotoBackend
from services.video.photo.landmarks import FaceLandmarker
from services.video.photo.portrait import decode_portrait
from services.video.portraits import THREAD_NAME_PREFIX
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


# -- preparation under load and abuse: its own pool, permits held by the work, formats settled before parsing -------


class SlowPortraits(DrawnBackend, PortraitBackend):
    """A photo backend stand-in whose decode blocks until `release`: what a large photo does to its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.started: list[str] = []  # the thread each decode ran on
        self.finished = 0

    def prepare_portrait(self, data: bytes) -> AvatarInfo:
        self.started.append(threading.current_thread().name)
        self.release.wait(30)
        self.finished += 1
        return AvatarInfo("portrait-" + data.hex().ljust(32, "0")[:32], "slow", self.name)


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_cancelled_prepare_keeps_its_permit_until_its_decode_ends():
    slow = SlowPortraits()
    async with running_video([slow], max_concurrent_prepares=1) as video:
        pool = video.servicer.portraits
        cancelled = asyncio.Event()
        run = pool.run

        async def watched_run(work, *args):
            try:
                return await run(work, *args)
            except asyncio.CancelledError:
                cancelled.set()  # the server's handler saw its client go
                raise

        pool.run = watched_run  # type: ignore[method-assign]
        first = video.stub.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=b"first"), timeout=30)
        await wait_until(lambda: len(slow.started) == 1, "the first decode to start")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(cancelled.wait(), 10)
        assert pool.running == 1  # its request is gone, its decode runs on, holding the only permit

        async def prepare_second() -> video_pb2.PrepareAvatarResponse:
            return await video.stub.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=b"second"), timeout=30)

        second = asyncio.create_task(prepare_second())
        await wait_until(lambda: pool.waiting == 1, "the second request to wait for a permit")
        await asyncio.sleep(0.3)
        assert len(slow.started) == 1, "a second decode started while the cancelled one still ran"
        slow.release.set()
        response = await asyncio.wait_for(second, 10)
        assert response.avatar.name.startswith("portrait-")
        assert slow.finished == 2 and pool.running == 0 and pool.waiting == 0
        # Both ran in the portrait pool's own threads, not in the default executor that frame rendering uses.
        assert all(name.startswith(THREAD_NAME_PREFIX) for name in slow.started), slow.started


def encoded_as(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 120, 90)).save(buffer, kind)
    return buffer.getvalue()


@pytest.fixture
def parsers_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Pillow parser that looks at a file (its `accept` check or its opener), in order."""
    Image.init()  # every plugin registered, so none is imported (and registered unwatched) later
    used: list[str] = []
    for kind, (factory, accept) in list(Image.OPEN.items()):

        def watched_accept(prefix: bytes, kind: str = kind, accept=accept):
            used.append(kind)
            return accept(prefix) if accept else True

        def watched_factory(fp, filename=None, kind: str = kind, factory=factory):
            used.append(kind)
            return factory(fp, filename)

        monkeypatch.setitem(Image.OPEN, kind, (watched_factory, watched_accept))
    return used


@pytest.mark.parametrize("kind", ["GIF", "BMP", "TIFF"])
async def test_other_formats_are_refused_before_any_parser_reads_them(video, parsers_used, kind):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await video.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=encoded_as(kind)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"the portrait is a {kind} file; send a JPEG, PNG or WebP image"
    field = violation(caught.value)
    assert (field.field, field.reason) == ("image", "unsupported_format")
    assert parsers_used == []


async def test_a_damaged_file_is_read_by_its_own_parser_only(video, parsers_used):
    damaged_png = b"\x89PNG\r\n\x1a\n" + bytes(512)  # PNG's signature, then nothing a PNG parser can read
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await video.PrepareAvatar(video_pb2.PrepareAvatarRequest(image=damaged_png), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "damaged" in caught.value.details()
    assert violation(caught.value).reason == "not_an_image"
    assert parsers_used and set(parsers_used) == {"PNG"}  # not offered to every other parser in turn


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP"])
def test_the_accepted_formats_still_decode_with_their_parser_alone(parsers_used, kind):
    assert decode_portrait(encoded_as(kind)).shape == (256, 256, 3)
    assert set(parsers_used) == {kind}
