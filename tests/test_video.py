"""The video service with a real packager in-process: config and request validation, `ready`, the idle loop built
once and uploaded once, rendered chunks spliced into the playlist (decoded and compared with the loop), interrupts,
refusals, capacity and worker status; and the drawn renderer's lip sync measured on its frames."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from infinitetalk_live_client.avatar.v1 import video_pb2
from services.common.errors import invalid_argument_reason
from services.video.backend import AvatarInfo, Drive, FrameByFrameRenderer, IdleLoop, PhonemeSpan, RendererBackend
from services.video.capacity import CapacityMeter
from services.video.drawn import DrawnBackend
from services.video.drawn_geometry import mouth_box
from services.video.idle import loop_frames
from services.video.visemes import MouthTracker, viseme_of
from tests.video_harness import (
    CHUNK,
    FPS,
    RATE,
    Session,
    Stack,
    frame_request,
    psnr,
    render_config,
    render_error,
    reset_request,
    running_packager,
    running_stack,
    wait_until,
)

SAMPLES = RATE // FPS
US = 1_000_000 // FPS
LOOP_FRAMES = loop_frames(FPS, CHUNK)  # 240
SAME = 40.0  # dB: an idle-drive chunk against the loop chunk of its phase (two encodes of the same pictures)
DIFFERENT = 32.0  # dB: the worst frame of a speaking chunk against the loop stays below this


def min_psnr(pictures, reference) -> float:
    assert len(pictures) == len(reference)
    return min(psnr(a.luma, b.luma) for a, b in zip(pictures, reference, strict=True))


# -- config and request validation ----------------------------------------------------------------------------------

PACKAGER = "127.0.0.1:1"  # never dialled: the config is refused first


@pytest.mark.parametrize(
    ("first", "field", "words"),
    [
        (frame_request(0), "config", "first message"),
        (video_pb2.RenderRequest(), "config", "first message"),
        (render_config(PACKAGER, width=127), "config.width", "even"),
        (render_config(PACKAGER, height=4000), "config.height", "1920"),
        (render_config(PACKAGER, fps=0), "config.fps", "fps"),
        (render_config(PACKAGER, sample_rate_hz=7000), "config.sample_rate_hz", "7000"),
        (render_config(PACKAGER, chunk_frames=0), "config.chunk_frames", "from 1 to 60"),
        (render_config(PACKAGER, chunk_frames=61), "config.chunk_frames", "from 1 to 60"),
        (render_config(PACKAGER, idle_phase_offset=5), "config.idle_phase_offset", "multiple of chunk_frames"),
        (render_config(PACKAGER, idle_phase_offset=-12), "config.idle_phase_offset", "non-negative"),
        (render_config("nohost"), "config.packager_address", "host:port"),
        (render_config("http://packager:50055"), "config.packager_address", "host:port"),
        (render_config(""), "config.packager_address", "host:port"),
        (render_config(PACKAGER, publish_token="short"), "config.publish_token", "16 to 128"),
        (render_config(PACKAGER, publish_token=""), "config.publish_token", "16 to 128"),
        (render_config(PACKAGER, session_id="s" * 129), "config.session_id", "16-64 characters"),
        (render_config(PACKAGER, avatar="nobody"), "config.avatar", "drawn-kai"),
        (render_config(PACKAGER, avatar="drawn", portrait=b"\xff\xd8"), "config.portrait", "either avatar or portrait"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_bad_config_is_invalid_argument_naming_the_field(first, field: str, words: str) -> None:
    async with running_stack() as stack:
        error, responses = await render_error(stack.video.stub, [first])
        assert (await stack.video.status()).active_streams == 0
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid_argument_reason(error)[0] == field
    assert words in error.details()
    assert responses == []
    if field == "config.avatar":
        assert "'nobody'" in error.details() and "drawn" in error.details()  # names the avatar and the choices


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (frame_request(2), "frame.frame_index", "strictly increase"),
        (frame_request(3, epoch=1), "frame.frame_index", "strictly increase"),
        (frame_request(-1), "frame.frame_index", "frame_index must be"),
        (frame_request(4, pcm=b"\x00" * 100), "frame.pcm_s16le", f"{2 * SAMPLES} bytes"),
        (frame_request(4, pcm=b"\x00" * (2 * SAMPLES + 2)), "frame.pcm_s16le", f"{2 * SAMPLES} bytes"),
        (frame_request(4, marks=[("a", 0, 1)] * 65), "frame.phonemes", "at most 64"),
        (reset_request(2, 0), "reset.epoch", "greater than"),
        (render_config(PACKAGER), "config", "only be sent once"),
        (video_pb2.RenderRequest(), "request", "empty request"),
    ],
    ids=["backwards", "backwards-new-epoch", "negative", "short-pcm", "long-pcm", "phonemes", "reset-epoch",
         "config-twice", "empty"],
)  # fmt: skip
async def test_bad_request_after_ready_is_invalid_argument(bad, field: str, words: str) -> None:
    async with running_stack() as stack:
        config = render_config(stack.packager.address)
        error, responses = await render_error(stack.video.stub, [config, frame_request(0), frame_request(3), bad])
        await wait_until(lambda: stack.video.servicer.active == 0, "the stream was released")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid_argument_reason(error)[0] == field
    assert words in error.details()
    assert responses[0].HasField("ready")  # the stream was up: the request itself was refused


async def test_a_session_id_the_packager_refuses_is_invalid_argument() -> None:
    async with running_stack() as stack:
        error, _ = await render_error(stack.video.stub, [render_config(stack.packager.address, session_id="s")])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid_argument_reason(error)[0] == "config.session_id"


# -- ready, the idle loop -------------------------------------------------------------------------------------------


async def test_ready_then_status_and_the_loop_is_on_the_packager() -> None:
    async with running_stack() as stack:
        session = await Session.open(stack, publish=False)
        ready = session.ready
        assert ready is not None
        assert ready.idle_loop_frames == LOOP_FRAMES == 240
        assert 0 < ready.settle_frames < CHUNK
        assert re.fullmatch(r"[0-9a-f]{32}", ready.idle_loop_id)
        assert not ready.render_every_chunk
        await wait_until(lambda: len(session.responses) >= 2, "a status after ready")
        assert session.responses[0].HasField("ready")  # ready first, then the pace
        status = session.responses[1].status
        assert session.responses[1].HasField("status")
        assert status.frames_per_second > 0 and status.lookahead_frames == 1
        stored = stack.packager.servicer.loops.get(ready.idle_loop_id)
        assert stored is not None and len(stored.chunks) == LOOP_FRAMES // CHUNK
        assert (stored.width, stored.height, stored.fps, stored.chunk_frames) == (128, 128, FPS, CHUNK)
        assert stack.packager.servicer.loops_wanted == 1
        assert await session.close() == grpc.StatusCode.OK


async def test_a_worker_that_burns_the_clock_wants_every_chunk_rendered() -> None:
    async with running_stack(burn_clock=True) as stack:
        session = await Session.open(stack, publish=False)
        assert session.ready is not None and session.ready.render_every_chunk
        assert await session.close() == grpc.StatusCode.OK


async def test_the_loop_is_built_once_per_avatar_and_size_and_uploaded_once_per_packager() -> None:
    async with running_stack() as stack:
        servicer, packager = stack.video.servicer, stack.packager.servicer
        first = await Session.open(stack, publish=False)
        assert (servicer.loops.builds, packager.loops_wanted) == (1, 1)
        second = await Session.open(stack, publish=False)  # same avatar and size: shared
        assert second.ready.idle_loop_id == first.ready.idle_loop_id
        assert (servicer.loops.builds, packager.loops_wanted, packager.video_streams_opened) == (1, 1, 2)
        bigger = await Session.open(stack, publish=False, width=256, height=256)
        kai = await Session.open(stack, publish=False, avatar="drawn-kai")
        ids = {first.ready.idle_loop_id, bigger.ready.idle_loop_id, kai.ready.idle_loop_id}
        assert len(ids) == 3
        assert (servicer.loops.builds, packager.loops_wanted) == (3, 3)
        assert all(packager.loops.get(loop_id) is not None for loop_id in ids)
        async with running_packager() as other:  # another packager lacks the loop: uploaded there, not rebuilt
            elsewhere = await Session.open(Stack(stack.video, other), publish=False, width=256, height=256)
            assert elsewhere.ready.idle_loop_id == bigger.ready.idle_loop_id
            assert (servicer.loops.builds, other.servicer.loops_wanted) == (3, 1)
            assert await elsewhere.close() == grpc.StatusCode.OK
        for session in (first, second, bigger, kai):
            assert await session.close() == grpc.StatusCode.OK


# -- rendered chunks in the playlist --------------------------------------------------------------------------------


async def test_rendered_chunks_reach_the_packager_and_splice_with_the_loop() -> None:
    async with running_stack() as stack:
        session = await Session.open(stack, idle_phase_offset=24)
        settle = session.ready.settle_frames
        await session.drive_idle(12)  # rendered, but idle: the loop's pictures
        await session.drive_speech(24)
        await session.drive_idle(36)  # the frames after speech, back to the loop within settle_frames
        for start in (12, 24, 36):
            await stack.packager.wait_held(session.session_id, start, 0)
        commits = [await session.commit(start) for start in (0, 12, 24, 36, 48)]
        assert await session.end() == grpc.StatusCode.OK
        assert session.stalls() == []
        segments = [responses[-1].segment for responses in commits]
        assert [s.start_frame_index for s in segments] == [0, 12, 24, 36, 48]
        assert [s.has_speech for s in segments] == [False, False, True, False, False]
        received = stack.packager.servicer.chunks_received[session.session_id]
        assert received == [(12, 12, 0, CHUNK), (24, 24, 0, CHUNK), (36, 36, 0, CHUNK)]

        pictures = await session.pictures()
        assert len(pictures) == 5 * CHUNK
        assert [p.key for p in pictures] == [n % CHUNK == 0 for n in range(5 * CHUNK)]
        assert [session.idle_chunk_index(s) for s in (0, 12, 24, 36, 48)] == [2, 3, 4, 5, 6]
        # Loop chunks are the loop's own pictures.
        for start in (0, 48):
            loop = session.loop_pictures(session.idle_chunk_index(start))
            assert all(
                np.array_equal(a.luma, b.luma) for a, b in zip(pictures[start : start + CHUNK], loop, strict=True)
            )
        # An idle drive renders the loop's picture of its phase (with the offset), not of another phase.
        idle = pictures[12:24]
        assert min_psnr(idle, session.loop_pictures(3)) > SAME
        assert min_psnr(idle, session.loop_pictures(1)) < DIFFERENT  # the phase without the offset
        # Speech differs from the loop, in the mouth.
        speech, loop = pictures[24:36], session.loop_pictures(4)
        assert min_psnr(speech, loop) < DIFFERENT
        x0, y0, x1, y1 = mouth_box(128, 128)
        mouth = [
            float(np.abs(a.luma[y0:y1, x0:x1] - b.luma[y0:y1, x0:x1]).mean()) for a, b in zip(speech, loop, strict=True)
        ]
        assert max(mouth) > 8, mouth
        # After speech the renderer is back on the loop's pictures within settle_frames.
        assert min_psnr(pictures[36 + settle : 48], session.loop_pictures(5)[settle:]) > SAME


async def test_a_reset_inside_a_sent_chunk_sends_only_the_frames_from_the_reset() -> None:
    async with running_stack() as stack:
        session = await Session.open(stack)
        await session.drive_idle(12)
        await stack.packager.wait_held(session.session_id, 12, 0)  # the whole chunk is on the packager
        await session.reset(18)  # epoch 1: from frame 18 on, speech
        await session.drive_speech(12, first=18)
        await stack.packager.wait_held(session.session_id, 12, 1)
        await session.commit(0)
        await session.commit(12)
        assert await session.end() == grpc.StatusCode.OK
        assert session.stalls() == []
        received = stack.packager.servicer.chunks_received[session.session_id]
        assert received == [(12, 12, 0, CHUNK), (12, 18, 1, 6)]  # start, first frame, epoch, frames carried

        pictures = (await session.pictures())[12:24]
        loop = session.loop_pictures(1)
        assert [p.key for p in pictures] == [i in (0, 6) for i in range(CHUNK)]  # an IDR frame where it changed
        assert min_psnr(pictures[:6], loop[:6]) > SAME  # kept from the chunk as sent first
        assert min_psnr(pictures[6:], loop[6:]) < DIFFERENT  # the new content


class _GatedRenderer(FrameByFrameRenderer):
    """Flat pictures: bright for epoch 0, dark for later epochs, mid-grey for idle; holds the drive of utterance
    "hold" until the test opens the gate."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        super().__init__(width, height, fps)
        self.gate = threading.Event()
        self.holding = threading.Event()
        self.rendered: list[tuple[int, int]] = []

    def render_frame(self, drive: Drive) -> bytes:
        if drive.utterance_id == "hold":
            self.holding.set()
            assert self.gate.wait(20)
        self.rendered.append((drive.frame_index, drive.epoch))
        level = (BRIGHT if drive.epoch == 0 else DARK) if drive.utterance_id else 128
        luma = bytes([level]) * (self.width * self.height)
        return luma + bytes([128]) * (self.width * self.height // 2)

    def snapshot(self) -> int:
        return 0

    def restore(self, state: int) -> None:
        pass


class _GatedBackend(RendererBackend):
    name = "gated"

    def __init__(self) -> None:
        self.renderers: list[_GatedRenderer] = []

    def avatars(self) -> list[AvatarInfo]:
        return [AvatarInfo("gated", "test", self.name)]

    def open(self, avatar, width, height, fps, sample_rate_hz, loop) -> _GatedRenderer:
        renderer = _GatedRenderer(width, height, fps)
        self.renderers.append(renderer)
        return renderer


BRIGHT, DARK = 220, 40  # the gated renderer's epoch 0 and epoch 1


def stale_dropped() -> float:
    return REGISTRY.get_sample_value("video_stale_frames_dropped_total") or 0.0


async def interrupt_while_drawing(session: Session, renderer: _GatedRenderer, hold: int, cut: int, end: int) -> None:
    """Drives frames 12..end-1 of epoch 0 with frame `hold` held in the renderer (the later ones wait in the queue),
    then resets from `cut` (epoch 1) and drives cut..end-1 again; opens the gate once the worker has read the reset
    (it dropped a late drive of epoch 0 sent after it)."""
    await session.send([frame_request(i, epoch=0, utterance="hold" if i == hold else "u") for i in range(12, end)])
    await asyncio.to_thread(renderer.holding.wait, 20)
    dropped = stale_dropped()
    await session.reset(cut, 1)
    await session.send([frame_request(cut + 1, epoch=0, utterance="u")])  # late, already stale
    await session.send([frame_request(i, epoch=1, utterance="u") for i in range(cut, end)])
    await wait_until(lambda: stale_dropped() > dropped, "the worker read the reset")
    renderer.gate.set()


def levels(pictures) -> list[int]:
    return [round(float(p.luma[32:96, 32:96].mean())) for p in pictures]


async def test_stale_drives_after_a_reset_never_become_frames() -> None:
    backend = _GatedBackend()
    async with running_stack([backend], default_avatar="gated") as stack:
        session = await Session.open(stack)
        renderer = backend.renderers[-1]  # the session's (the first one drew the loop)
        await interrupt_while_drawing(session, renderer, hold=12, cut=12, end=36)
        await stack.packager.wait_held(session.session_id, 24, 1)
        for start in (0, 12, 24):
            await session.commit(start)
        assert await session.end() == grpc.StatusCode.OK
        assert session.stalls() == []
        assert stack.packager.servicer.chunks_received[session.session_id] == [(12, 12, 1, CHUNK), (24, 24, 1, CHUNK)]
        pictures = (await session.pictures())[12:36]
    old = [index for index, epoch in renderer.rendered if epoch == 0]
    assert old == [12], "only the frame in progress when the reset came was drawn for the old epoch"
    assert [index for index, epoch in renderer.rendered if epoch == 1] == list(range(12, 36))
    assert all(abs(level - DARK) < 8 for level in levels(pictures)), levels(pictures)  # all of the new epoch


async def test_a_stale_frame_in_progress_never_completes_a_chunk() -> None:
    backend = _GatedBackend()
    async with running_stack([backend], default_avatar="gated") as stack:
        session = await Session.open(stack)
        renderer = backend.renderers[-1]
        await interrupt_while_drawing(session, renderer, hold=23, cut=20, end=36)  # 23 ends chunk 12
        await stack.packager.wait_held(session.session_id, 24, 1)
        for start in (0, 12, 24):
            await session.commit(start)
        assert await session.end() == grpc.StatusCode.OK
        pictures = (await session.pictures())[12:36]
        expected = [BRIGHT] * 8 + [DARK] * 16  # frames 12-19 kept, 20-35 of the new epoch
        assert all(abs(a - b) < 8 for a, b in zip(levels(pictures), expected, strict=True)), levels(pictures)
        assert [i for i, epoch in renderer.rendered if epoch == 0] == list(range(12, 24))  # none queued after 23
        assert stack.packager.servicer.chunks_received[session.session_id] == [(12, 12, 1, CHUNK), (24, 24, 1, CHUNK)]


async def test_a_new_stream_may_start_with_frames_of_several_epochs() -> None:
    # A session reconnecting replays the frames of the chunks it wants rendered as they are, with no reset.
    async with running_stack() as stack:
        session = await Session.open(stack)
        await session.send([frame_request(i, epoch=2) for i in range(12, 18)])
        await session.send([frame_request(i, epoch=3) for i in range(18, 24)])
        await stack.packager.wait_held(session.session_id, 12, 3)
        await session.commit(0)
        await session.commit(12, epoch=3)
        assert await session.end() == grpc.StatusCode.OK
        assert session.stalls() == []
        assert stack.packager.servicer.chunks_received[session.session_id] == [(12, 12, 3, CHUNK)]


# -- refusals -------------------------------------------------------------------------------------------------------


async def test_a_packager_that_cannot_be_reached_or_refuses_ends_render_unavailable() -> None:
    async with running_stack() as stack:
        unreachable, responses = await render_error(stack.video.stub, [render_config("127.0.0.1:1")])
        assert unreachable.code() == grpc.StatusCode.UNAVAILABLE
        assert re.search(r"the packager .*video stream", unreachable.details()), unreachable.details()
        assert responses == []

        session = await Session.open(stack)
        imposter = render_config(stack.packager.address, session_id=session.session_id)  # another token
        refused, responses = await render_error(stack.video.stub, [imposter])
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "the packager refused the video stream" in refused.details() and "publish_token" in refused.details()
        assert responses == []
        assert (await stack.video.status()).active_streams == 1  # only the real session's stream

        await session.drive_speech(12)  # the session's own stream still works
        await session.commit(0)
        await session.commit(12)
        assert await session.end() == grpc.StatusCode.OK
        assert session.stalls() == []
        assert stack.packager.servicer.chunks_received[session.session_id] == [(12, 12, 0, CHUNK)]


async def test_past_the_measured_capacity_render_is_resource_exhausted() -> None:
    meter = CapacityMeter(budget_cores=4.0, fps=FPS, speaking_share=0.25, max_streams=2, frame_cpu_s=0.004)
    async with running_stack(meter=meter) as stack:
        assert (await stack.video.status()).capacity == 2
        first, second = await Session.open(stack), await Session.open(stack)
        error, responses = await render_error(stack.video.stub, [render_config(stack.packager.address)])
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already serves 2 sessions" in error.details() and "measured capacity" in error.details()
        assert responses == []
        status = await stack.video.status()
        assert (status.capacity, status.active_streams) == (2, 2)

        for session in (first, second):  # the streams already open keep working
            await session.drive_speech(12)
            await session.commit(0)
            await session.commit(12)
        for session in (first, second):
            assert await session.end() == grpc.StatusCode.OK
            assert session.stalls() == []
            assert stack.packager.servicer.chunks_received[session.session_id] == [(12, 12, 0, CHUNK)]
        await wait_until(lambda: stack.video.servicer.active == 0, "the streams were released")
        third = await Session.open(stack, publish=False)  # room again
        assert await third.close() == grpc.StatusCode.OK


# -- worker status --------------------------------------------------------------------------------------------------


async def test_worker_status_reports_capacity_speaking_and_measured_costs() -> None:
    # 2 cores; a speaking stream is first taken to cost 40 ms a frame (1 core), an idle one 0.002 cores.
    meter = CapacityMeter(budget_cores=2.0, fps=FPS, speaking_share=0.25, max_streams=3, frame_cpu_s=0.04)
    async with running_stack(meter=meter) as stack:
        status = await stack.video.status()
        assert (status.capacity, status.active_streams) == (3, 0)
        assert (status.speaking_capacity, status.speaking_streams) == (2, 0)
        assert status.cpu_budget_cores == 2.0
        assert status.speaking_stream_cores == pytest.approx(1.0)
        assert status.idle_stream_cores == pytest.approx(0.002)
        assert status.worker_id

        session = await Session.open(stack)
        status = await stack.video.status()
        assert (status.active_streams, status.speaking_streams) == (1, 0)
        assert status.speaking_capacity == 1  # (2 - 0.002) // 1.0: the idle stream takes its share first

        reports: list[int] = []

        async def watch() -> None:  # GetWorkerStatus, as placement sees it, while the session speaks
            while True:
                reports.append((await stack.video.status()).speaking_streams)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            await session.drive_speech(12)
            await wait_until(lambda: 1 in reports, "GetWorkerStatus reports the speaking stream")
            # It counts as speaking for about a second after its last speech drive, then no more.
            await wait_until(lambda: reports[-1] == 0 and 1 in reports, "the stream stops counting as speaking")
        finally:
            watcher.cancel()
        await stack.packager.wait_held(session.session_id, 12, 0)
        status = await stack.video.status()
        # Twelve drawn 128x128 frames cost far less than 40 ms each: the measured cost came down.
        assert status.speaking_stream_cores < 0.95
        assert status.speaking_stream_cores == pytest.approx(meter.frame_cpu_s * FPS)
        expected = min(
            status.capacity,
            int((status.cpu_budget_cores - status.active_streams * status.idle_stream_cores)
                // status.speaking_stream_cores),
        )  # fmt: skip
        assert status.speaking_capacity == expected

        await session.drive_idle(24)  # idle drives are not speech
        await stack.packager.wait_held(session.session_id, 24, 0)
        assert (await stack.video.status()).speaking_streams == 0
        assert await session.end() == grpc.StatusCode.OK
        await wait_until(lambda: stack.video.servicer.active == 0, "the stream was released")
        assert (await stack.video.status()).active_streams == 0


# -- streams and avatars --------------------------------------------------------------------------------------------


async def test_list_avatars() -> None:
    async with running_stack() as stack:
        response = await stack.video.stub.ListAvatars(video_pb2.ListAvatarsRequest())
    assert response.default_avatar == "drawn"
    by_name = {avatar.name: avatar for avatar in response.avatars}
    assert {"drawn", "drawn-kai"} <= set(by_name)
    assert by_name["drawn"].backend == "drawn" and by_name["drawn"].description


async def test_concurrent_streams_and_cancellation_clean_up() -> None:
    async with running_stack() as stack:
        a = await Session.open(stack)
        b = await Session.open(stack, avatar="drawn-kai")
        assert a.ready.idle_loop_id != b.ready.idle_loop_id
        await asyncio.gather(a.drive_speech(12), b.drive_speech(12))
        for session in (a, b):
            await session.commit(0)
            await session.commit(12)
        pictures = await asyncio.gather(a.pictures(), b.pictures())
        assert min_psnr(pictures[0][:12], pictures[1][:12]) < 20  # two different avatars
        assert (await stack.video.status()).active_streams == 2
        a.cancel()
        b.cancel()
        await wait_until(lambda: stack.video.servicer.active == 0, "the cancelled streams were released")
        await wait_until(lambda: not stack.packager.servicer._media, "the packager let go of the sessions")
        assert (await stack.video.status()).active_streams == 0
        assert await a.render.code() == grpc.StatusCode.CANCELLED


# -- the drawn renderer ---------------------------------------------------------------------------------------------


def tone(index: int, amplitude: float = 0.3, modulated: bool = False) -> np.ndarray:
    """150 Hz voice-like tone under frame `index` (optionally with a 4 Hz syllable envelope)."""
    t = (np.arange(SAMPLES) + index * SAMPLES) / RATE
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) if modulated else 1.0
    return (np.sin(2 * np.pi * 150 * t) * amplitude * envelope * 32767).astype("<i2")


def drawn_frames(size: int, drives: list[Drive]) -> list[np.ndarray]:
    renderer = DrawnBackend().open("drawn", size, size, FPS, RATE, IdleLoop(LOOP_FRAMES, 0))
    return [
        np.frombuffer(renderer.render_frame(drive), np.uint8)[: size * size].reshape(size, size).astype(np.float32)
        for drive in drives
    ]


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def mouth_opening(luma: np.ndarray) -> int:
    """Dark mouth-interior pixels in the mouth box (lips and skin are much brighter)."""
    return int(np.count_nonzero(crop(luma, mouth_box(*luma.shape[::-1])) < 60))


def box_motion(frames: list[np.ndarray], box: tuple[int, int, int, int]) -> list[float]:
    crops = [crop(frame, box) for frame in frames]
    return [float(np.mean(np.abs(b - a))) for a, b in itertools.pairwise(crops)]


def test_phoneme_marks_open_and_close_the_drawn_mouth() -> None:
    # Marks 'a' (frames 10-17), 'm' (18-21), 'o' (22-29) over a 150 Hz tone; silence from frame 30.
    marks = {
        10: (PhonemeSpan("a", 10 * US, 18 * US),),
        18: (PhonemeSpan("m", 18 * US, 22 * US),),
        22: (PhonemeSpan("o", 22 * US, 30 * US),),
    }
    drives = []
    for i in range(45):
        speech = 10 <= i < 30
        drives.append(Drive(i, "u1" if speech else "", tone(i) if speech else None, marks.get(i, ())))
    frames = drawn_frames(512, drives)
    opening = [mouth_opening(f) for f in frames]
    assert max(opening[:10]) == 0, opening  # the mouth rests closed
    peak_a = max(opening[11:18])
    assert peak_a > 300, opening
    assert opening[21] < 0.05 * peak_a, opening  # closed for 'm'
    assert max(opening[23:30]) > 5 * max(opening[21], 10), opening  # open again for 'o'
    assert max(opening[23:30]) < peak_a  # 'o' is rounder and smaller than 'a'
    assert all(value < 0.05 * peak_a for value in opening[35:]), opening  # back at rest within 5 frames
    motion = box_motion(frames, mouth_box(512, 512))
    assert max(motion[9:30]) > 5 * max([*motion[:9], 0.5])
    assert max(motion[36:]) < 3.0  # and still again


def test_energy_moves_the_drawn_mouth_without_marks() -> None:
    drives = []
    for i in range(40):
        speech = 5 <= i < 30
        drives.append(Drive(i, "u2" if speech else "", tone(i, modulated=True) if speech else None))
    frames = drawn_frames(256, drives)
    opening = [mouth_opening(f) for f in frames]
    assert max(opening[:5]) == 0
    assert max(opening[6:30]) > 10, opening
    assert sum(1 for value in opening[6:30] if value > 3) > 10, opening
    assert all(value <= 0.05 * max(opening) for value in opening[35:]), opening
    motion = box_motion(frames, mouth_box(256, 256))
    assert max(motion[5:30]) > 4 * max(max(motion[:4]), 0.5)


async def test_the_drawn_renderer_rewinds_on_reset_and_replays_the_same_pictures() -> None:
    speech = {i: tone(i, modulated=True) for i in range(8, 40)}
    marks = {8: (PhonemeSpan("a", 8 * US, 14 * US),), 14: (PhonemeSpan("m", 14 * US, 17 * US),)}

    def drives(first: int, last: int, epoch: int) -> list[Drive]:
        return [Drive(i, "u", speech.get(i), marks.get(i, ()), epoch) for i in range(first, last)]

    reference = DrawnBackend().open("drawn", 128, 128, FPS, RATE, IdleLoop(LOOP_FRAMES, 0))
    expected = [reference.render_frame(drive) for drive in drives(0, 40, 0)]
    renderer = DrawnBackend().open("drawn", 128, 128, FPS, RATE, IdleLoop(LOOP_FRAMES, 0))

    async def feed(items: list[Drive]):
        for item in items:
            yield item

    first = [frame async for frame in renderer.render(feed(drives(0, 36, 0)))]
    await renderer.reset(20, 1)
    again = [frame async for frame in renderer.render(feed([*drives(30, 36, 0), *drives(20, 40, 1)]))]
    assert [f.frame_index for f in first] == list(range(36))
    assert [(f.frame_index, f.epoch) for f in again] == [(i, 1) for i in range(20, 40)]  # stale drives dropped
    assert [f.data for f in again] == expected[20:40]  # the state as it was before frame 20


def test_visemes_of_piper_phonemes() -> None:
    assert viseme_of("p") == viseme_of("b") == viseme_of("m") == "closed"
    assert viseme_of("f") == viseme_of("v") == "fv"
    assert viseme_of("ð") == viseme_of("θ") == "th"
    assert viseme_of("ˈ") is None and viseme_of("ː") is None  # noqa: RUF001
    assert viseme_of(" ") == "gap"
    assert viseme_of(".") == viseme_of(",") == viseme_of("") == "rest"
    assert viseme_of("oʊ") == "o" and viseme_of("ɑː") == "a" and viseme_of("tʃ") == "dental"  # noqa: RUF001
    assert viseme_of("u") == "u" and viseme_of("w") == "w" and viseme_of("i") == "i"
    assert viseme_of("\u2603") == "rest"  # unknown symbols never fail


def test_tracker_snaps_shut_for_bilabials_and_settles_after_speech() -> None:
    tracker = MouthTracker(FPS)
    pcm = tone(0)
    opens = []
    for i in range(6):
        marks = (PhonemeSpan("a", 0, 6 * US),) if i == 0 else ()
        opens.append(tracker.step(i, pcm, marks).open)
    assert opens[-1] > 0.8
    shut = [tracker.step(i, pcm, (PhonemeSpan("m", i * US, (i + 1) * US),)).open for i in range(6, 8)]
    assert shut[-1] < 0.05
    for i in range(8, 12):
        tracker.step(i, pcm, (PhonemeSpan("a", 8 * US, 12 * US),) if i == 8 else ())
    assert tracker.state.shape.open > 0.8
    settled = [tracker.step(i, None, ()).open for i in range(12, 12 + tracker.settle_frames)]
    assert settled[-1] == 0.0  # at rest within settle_frames of the end of speech
