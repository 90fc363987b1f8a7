"""Uploaded portraits through the running stack: CreateSession with a photo becomes a live session of that face, and
a file that cannot be animated gets a clear INVALID_ARGUMENT while the other sessions stream on."""

from __future__ import annotations

import asyncio
import io
import os

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from infinitetalk_live.client import control_metadata
from infinitetalk_live.hls import PlaylistFollower, fetch
from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.errors import invalid_argument_reason
from tests.hls_analysis import decode
from tests.test_e2e_pipeline import client_for, hls_url, segments_on

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

MIB = 1024 * 1024


def astronaut_jpeg() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def gradient_png() -> bytes:
    """A smooth 512x512 gradient: a valid image with no face in it."""
    ramp = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    return png(Image.fromarray(np.dstack([ramp, ramp.T, 255 - ramp])))


def huge_png() -> bytes:
    """50 megapixels of one colour: a small file that would take gigabytes to decode."""
    return png(Image.new("RGB", (8660, 5774), (90, 120, 200)))


async def video_serving(stack) -> bool:
    async with grpc.aio.insecure_channel(stack.ports.addr("video")) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="avatar.v1.VideoService"), timeout=5
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def live_sessions(stack) -> float:
    """The session service's gauge of open sessions."""
    metrics = await asyncio.to_thread(fetch, f"http://127.0.0.1:{stack.ports.metrics['session']}/metrics")
    line = next(x for x in metrics.decode().splitlines() if x.startswith("session_live_sessions "))
    return float(line.split()[1])


async def test_a_portrait_becomes_a_live_session_that_speaks(stack):
    client = await client_for(stack)
    try:
        session = await client.create(portrait=astronaut_jpeg())
        try:
            assert session.avatar.startswith("portrait-") and len(session.avatar) == len("portrait-") + 32
            url = hls_url(stack, session)
            first = await segments_on(url, count=1)
            assert await segments_on(url, count=3, timeout_s=15) > first  # the playlist grows
            follower = PlaylistFollower(url)
            result = await client.speak(session, "Hello, this is my own face.", hls_url=url, follower=follower)
            assert result.reason == session_pb2.FINISH_REASON_COMPLETED and not result.errors
            media = decode(follower.fmp4_bytes())
            assert (media.width, media.height) == (session.width, session.height)
            # A photograph, not the flat drawn cartoon: many distinct colours in a frame.
            frame = media.frames[len(media.frames) // 2]
            assert len(np.unique(frame.reshape(-1, frame.shape[-1]) // 8, axis=0)) > 500
        finally:
            await client.end(session)
        # The same photo again is prepared once (content-addressed): same avatar name.
        again = await client.create(portrait=astronaut_jpeg())
        assert again.avatar == session.avatar
        await client.end(again)
    finally:
        await client.close()


async def test_files_that_cannot_be_animated_get_clear_errors_and_harm_nothing(stack):
    client = await client_for(stack)
    try:
        bystander = await client.create()
        url = hls_url(stack, bystander)
        watch = client.stub.WatchSession(
            session_pb2.WatchSessionRequest(session_id=bystander.session_id), metadata=control_metadata(bystander)
        )
        await watch.read()
        events: list[session_pb2.WatchSessionResponse] = []

        async def collect() -> None:
            while (event := await watch.read()) is not grpc.aio.EOF:
                events.append(event)

        collector = asyncio.create_task(collect())
        before = await segments_on(url)
        live_before = await live_sessions(stack)

        async def expect(request: session_pb2.CreateSessionRequest, *words: str, reason: str = "") -> None:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.stub.CreateSession(request, timeout=60)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
            details = caught.value.details()
            for word in words:
                assert word in details, details
            assert invalid_argument_reason(caught.value) == ("portrait", reason)
            assert await video_serving(stack)

        await expect(
            session_pb2.CreateSessionRequest(portrait=os.urandom(64 * 1024)),
            "not a JPEG, PNG or WebP",
            reason="not_an_image",
        )
        await expect(session_pb2.CreateSessionRequest(portrait=gradient_png()), "no face", reason="no_face")
        await expect(
            session_pb2.CreateSessionRequest(portrait=huge_png()), "megapixels", "25", reason="too_many_pixels"
        )
        await expect(session_pb2.CreateSessionRequest(portrait=os.urandom(9 * MIB)), "8 MiB", reason="too_large")
        await expect(session_pb2.CreateSessionRequest(avatar="drawn", portrait=astronaut_jpeg()), "either", "not both")
        assert await live_sessions(stack) == live_before  # no session was created for a refused portrait

        # Meanwhile the bystander kept streaming, with no error events.
        await asyncio.sleep(1.2)
        assert await segments_on(url) > before
        watch.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        assert not [e for e in events if e.WhichOneof("event") == "error"]
        assert await video_serving(stack)
        await client.end(bystander)
    finally:
        await client.close()
