"""The video service through a real in-process gRPC server: frames per drive, lip sync, blinks, resets, errors."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import numpy as np
import pytest

from avatar.v1 import media_pb2, video_pb2, video_pb2_grpc
from services.common.server import create_server
from services.video.backend import (
    AvatarInfo,
    Drive,
    FrameByFrameRenderer,
    PhonemeSpan,
    RendererBackend,
)
from services.video.drawn import eye_box, i420_to_rgb, mouth_box, png_bytes
from services.video.idle import IdleSchedule
from services.video.service import VideoServicer
from services.video.visemes import MouthTracker, viseme_of

FPS = 25
RATE = 24000
SAMPLES = RATE // FPS
US = 1_000_000 // FPS
SPEAKING_PNG = "/tmp/video_speaking_frame.png"


async def start(servicer: VideoServicer | None = None):
    servicer = servicer or VideoServicer()

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    server, port, _health = await create_server("127.0.0.1:0", register, ["avatar.v1.VideoService"])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, video_pb2_grpc.VideoServiceStub(channel), servicer


def config(width: int = 512, height: int = 512, **overrides) -> video_pb2.RenderRequest:
    fields = dict(
        session_id="test-session",
        avatar="",
        width=width,
        height=height,
        fps=FPS,
        sample_rate_hz=RATE,
        pixel_format=media_pb2.PIXEL_FORMAT_I420,
    )
    fields.update(overrides)
    return video_pb2.RenderRequest(config=video_pb2.RenderConfig(**fields))


def drive(index: int, pcm: bytes = b"", marks: Iterable[tuple[str, int, int]] = (), epoch: int = 0, utt: str = ""):
    return video_pb2.RenderRequest(
        frame=video_pb2.FrameDrive(
            frame_index=index,
            utterance_id=utt,
            pcm_s16le=pcm,
            phonemes=[media_pb2.PhonemeMark(phoneme=p, start_us=s, end_us=e) for p, s, e in marks],
            epoch=epoch,
        )
    )


def reset(from_index: int, epoch: int) -> video_pb2.RenderRequest:
    return video_pb2.RenderRequest(reset=video_pb2.ResetTimeline(from_frame_index=from_index, epoch=epoch))


def tone(index: int, amplitude: float = 0.3, modulated: bool = False) -> bytes:
    """150 Hz voice-like tone under frame `index` (optionally with a 4 Hz syllable envelope)."""
    t = (np.arange(SAMPLES) + index * SAMPLES) / RATE
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) if modulated else 1.0
    return (np.sin(2 * np.pi * 150 * t) * amplitude * envelope * 32767).astype("<i2").tobytes()


async def run(stub, requests: list[video_pb2.RenderRequest], hold_open: bool = False) -> list[media_pb2.VideoFrame]:
    """Sends `requests` and collects the frames. `hold_open` keeps the request side open afterwards (for requests the
    server rejects: a grpc-aio client that writes after the server ended the call reports INTERNAL instead of the
    server's status)."""

    async def feed() -> AsyncIterator[video_pb2.RenderRequest]:
        for request in requests:
            yield request
        if hold_open:
            await asyncio.Event().wait()

    return [
        response.frame
        async for response in stub.Render(feed(), metadata=(("x-session-id", "test-session"),))
        if response.HasField("frame")
    ]


def luma(frame: media_pb2.VideoFrame) -> np.ndarray:
    w, h = frame.width, frame.height
    return np.frombuffer(frame.data, dtype=np.uint8)[: w * h].reshape(h, w).astype(np.float32)


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def box_motion(frames: list[media_pb2.VideoFrame], box: tuple[int, int, int, int]) -> list[float]:
    """Frame-to-frame mean absolute luma difference inside `box`."""
    crops = [crop(luma(frame), box) for frame in frames]
    return [float(np.mean(np.abs(b - a))) for a, b in itertools.pairwise(crops)]


def mouth_opening(frame: media_pb2.VideoFrame) -> int:
    """Dark mouth-interior pixels in the mouth box (lips and skin are much brighter)."""
    return int(np.count_nonzero(crop(luma(frame), mouth_box(frame.width, frame.height)) < 60))


async def test_idle_frames_in_order_and_drawn() -> None:
    server, channel, stub, _ = await start()
    try:
        frames = await run(stub, [config(), *[drive(i) for i in range(50)]])
    finally:
        await channel.close()
        await server.stop(0)
    assert [f.frame_index for f in frames] == list(range(50))
    for f in frames:
        assert (f.width, f.height, f.epoch) == (512, 512, 0)
        assert f.pixel_format == media_pb2.PIXEL_FORMAT_I420
        assert len(f.data) == 512 * 512 * 3 // 2
        assert f.pts_us == f.frame_index * US
    y = luma(frames[0])
    assert y.std() > 20  # a real picture, not a flat fill
    assert len(np.unique(y)) > 100
    rgb = i420_to_rgb(frames[0].data, 512, 512)
    assert len(np.unique(rgb.reshape(-1, 3) // 16, axis=0)) > 30  # several distinct colours
    assert mouth_opening(frames[0]) == 0  # the mouth rests closed
    idle = box_motion(frames, mouth_box(512, 512))
    assert max(idle) < 1.5, idle  # breathing and sway keep the mouth nearly still


async def test_phoneme_marks_open_and_close_the_mouth() -> None:
    # Marks 'a' (frames 10-17), 'm' (18-21), 'o' (22-29) over a 150 Hz tone; silence from frame 30.
    marks = {10: [("a", 10 * US, 18 * US)], 18: [("m", 18 * US, 22 * US)], 22: [("o", 22 * US, 30 * US)]}
    requests = [config()]
    for i in range(45):
        speech = 10 <= i < 30
        requests.append(drive(i, tone(i) if speech else b"", marks.get(i, ()), utt="u1" if speech else ""))
    server, channel, stub, _ = await start()
    try:
        frames = await run(stub, requests)
    finally:
        await channel.close()
        await server.stop(0)
    assert [f.frame_index for f in frames] == list(range(45))
    opening = [mouth_opening(f) for f in frames]
    peak_a = max(opening[11:18])
    assert peak_a > 300, opening
    assert opening[21] < 0.05 * peak_a, opening  # closed for 'm'
    assert max(opening[23:30]) > 5 * max(opening[21], 10), opening  # open again for 'o'
    assert max(opening[23:30]) < peak_a  # 'o' is rounder and smaller than 'a'
    assert all(value < 0.05 * peak_a for value in opening[35:]), opening  # back at rest within 5 frames
    motion = box_motion(frames, mouth_box(512, 512))
    assert max(motion[9:30]) > 5 * max([*box_motion(frames[:10], mouth_box(512, 512)), 0.5])
    assert max(motion[36:]) < 3.0  # and still again
    speaking = frames[int(np.argmax(opening))]
    await asyncio.to_thread(Path(SPEAKING_PNG).write_bytes, png_bytes(i420_to_rgb(speaking.data, 512, 512)))


async def test_energy_fallback_moves_the_mouth_without_marks() -> None:
    requests = [config(320, 240)]
    for i in range(40):
        speech = 5 <= i < 30
        requests.append(drive(i, tone(i, modulated=True) if speech else b"", utt="u2" if speech else ""))
    server, channel, stub, _ = await start()
    try:
        frames = await run(stub, requests)
    finally:
        await channel.close()
        await server.stop(0)
    opening = [mouth_opening(f) for f in frames]
    assert max(opening[:5]) == 0
    assert max(opening[6:30]) > 40, opening
    assert sum(1 for value in opening[6:30] if value > 10) > 10, opening
    assert all(value <= 0.05 * max(opening) for value in opening[35:]), opening
    motion = box_motion(frames, mouth_box(320, 240))
    assert max(motion[5:30]) > 4 * max(max(motion[:4]), 0.5)


async def test_blinks_within_a_few_seconds_of_idle() -> None:
    server, channel, stub, _ = await start()
    try:
        frames = await run(stub, [config(256, 256), *[drive(i) for i in range(90)]])
    finally:
        await channel.close()
        await server.stop(0)
    eyes = eye_box(256, 256)
    first = crop(luma(frames[0]), eyes)
    change = [float(np.mean(np.abs(crop(luma(f), eyes) - first))) for f in frames]
    assert max(change) > 8.0, change  # eyelids closed over the whites and irises
    assert max(box_motion(frames, mouth_box(256, 256))) < 2.5  # blinks stay out of the mouth box
    x0, _, x1, y1 = eyes
    mx0, my0, mx1, _ = mouth_box(256, 256)
    assert y1 <= my0 or x1 <= mx0 or mx1 <= x0


def test_blink_schedule_is_seeded_and_natural() -> None:
    a, b, c = IdleSchedule(1), IdleSchedule(1), IdleSchedule(2)
    assert np.array_equal(a.blinks, b.blinks)
    assert not np.array_equal(a.blinks, c.blinks)
    gaps = np.diff(a.blinks)
    singles = gaps[gaps > 1.0]  # doubles are 0.4 s apart
    assert 0.5 <= a.blinks[0] <= 2.5
    assert singles.min() >= 2.0 - 0.4 and singles.max() <= 6.0
    assert len(gaps[gaps < 1.0]) < 0.3 * len(gaps)


async def test_reset_rewinds_and_reemits_with_new_epoch() -> None:
    speech = {i: tone(i, modulated=True) for i in range(8, 40)}
    marks = {8: [("a", 8 * US, 14 * US)], 14: [("m", 14 * US, 17 * US)], 17: [("u", 17 * US, 24 * US)]}

    def drives(first: int, last: int, epoch: int) -> list[video_pb2.RenderRequest]:
        return [drive(i, speech.get(i, b""), marks.get(i, ()), epoch=epoch, utt="u") for i in range(first, last)]

    server, channel, stub, _ = await start()
    try:
        reference = await run(stub, [config(256, 256), *drives(0, 40, 0)])
        seen_35 = asyncio.Event()

        async def feed() -> AsyncIterator[video_pb2.RenderRequest]:
            yield config(256, 256)
            for request in drives(0, 40, 0):
                yield request
            await seen_35.wait()  # frames up to 35 are rendered: the reset must rewind the renderer's state
            yield reset(20, 1)
            for request in drives(20, 40, 1):
                yield request

        frames = []
        async for response in stub.Render(feed()):
            if not response.HasField("frame"):
                continue
            frames.append(response.frame)
            if response.frame.frame_index == 35:
                seen_35.set()
    finally:
        await channel.close()
        await server.stop(0)
    first_new = next(n for n, f in enumerate(frames) if f.epoch == 1)
    assert all(f.epoch == 1 for f in frames[first_new:])  # nothing of the old epoch after the reset
    assert [f.frame_index for f in frames[first_new:]] == list(range(20, 40))
    assert [f.frame_index for f in frames[:first_new]] == list(range(first_new))
    assert first_new > 35
    # The rewound renderer replays the same drives into the same pictures.
    assert all(frames[first_new + i - 20].data == reference[i].data for i in range(20, 40))
    assert frames[first_new].data != frames[first_new - 1].data


class _GatedRenderer(FrameByFrameRenderer):
    """Renders flat frames, but holds frame `gate_at` until the test opens the gate."""

    def __init__(self, width: int, height: int, fps: int, gate_at: int) -> None:
        super().__init__(width, height, fps)
        self.gate_at = gate_at
        self.gate = threading.Event()
        self.reset_seen = threading.Event()
        self.rendered: list[tuple[int, int]] = []

    def render_frame(self, drive: Drive) -> bytes:
        if drive.frame_index == self.gate_at:
            assert self.gate.wait(10)
        self.rendered.append((drive.frame_index, drive.epoch))
        return bytes(self.width * self.height * 3 // 2)

    def snapshot(self) -> int:
        return 0

    def restore(self, state: int) -> None:
        pass

    async def reset(self, from_frame_index: int, epoch: int) -> None:
        self.reset_seen.set()
        await super().reset(from_frame_index, epoch)


class _GatedBackend(RendererBackend):
    name = "gated"

    def __init__(self) -> None:
        self.renderers: list[_GatedRenderer] = []

    def avatars(self) -> list[AvatarInfo]:
        return [AvatarInfo("gated", "test", self.name)]

    def open(self, avatar, width, height, fps, sample_rate_hz, seed) -> _GatedRenderer:
        renderer = _GatedRenderer(width, height, fps, gate_at=10)
        self.renderers.append(renderer)
        return renderer


async def test_reset_drops_queued_frames_of_the_old_epoch() -> None:
    backend = _GatedBackend()
    server, channel, stub, _ = await start(VideoServicer([backend], default_avatar="gated"))
    try:
        requests = [
            config(64, 64),
            *[drive(i) for i in range(30)],
            reset(20, 1),
            *[drive(i, epoch=1) for i in range(20, 25)],
        ]
        call = asyncio.ensure_future(run(stub, requests))
        while not backend.renderers or not backend.renderers[0].reset_seen.is_set():
            await asyncio.sleep(0.01)  # frame 10 is held, so frames 11-29 of epoch 0 sit in the queue
        backend.renderers[0].gate.set()
        frames = await asyncio.wait_for(call, 20)
    finally:
        await channel.close()
        await server.stop(0)
    assert [(f.frame_index, f.epoch) for f in frames] == [(i, 0) for i in range(20)] + [(i, 1) for i in range(20, 25)]
    assert all(epoch == 1 for index, epoch in backend.renderers[0].rendered if index >= 20)


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (config(511, 512), "width"),
        (config(512, 4000), "height"),
        (config(fps=0), "fps"),
        (config(sample_rate_hz=7000), "sample_rate_hz"),
        (config(pixel_format=media_pb2.PIXEL_FORMAT_RGB24), "PIXEL_FORMAT_RGB24"),
        (config(avatar="nobody"), "drawn"),
        (drive(0), "first message"),
    ],
)
async def test_bad_config_is_invalid_argument(request_, words: str) -> None:
    server, channel, stub, _ = await start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await run(stub, [request_], hold_open=True)
    finally:
        await channel.close()
        await server.stop(0)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.value.details()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (drive(2), "strictly increase"),
        (drive(4, pcm=b"\x00" * 100), "1920 bytes"),
        (drive(-1), "frame_index must be"),
        (drive(3, epoch=1), "strictly increase"),
        (config(), "only be sent once"),
        (reset(2, 0), "greater than"),
        (video_pb2.RenderRequest(), "empty request"),
    ],
)
async def test_bad_stream_request_is_invalid_argument(bad, words: str) -> None:
    server, channel, stub, _ = await start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await run(stub, [config(64, 64), drive(0), drive(3), bad], hold_open=True)
    finally:
        await channel.close()
        await server.stop(0)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.value.details()


async def test_new_stream_may_replay_frames_of_several_epochs() -> None:
    # A session reconnecting replays unrendered frames as they are: older epochs first, then newer, no reset.
    server, channel, stub, _ = await start()
    try:
        frames = await run(stub, [config(64, 64), drive(7, epoch=2), drive(8, epoch=2), drive(9, epoch=3), reset(9, 4)])
    finally:
        await channel.close()
        await server.stop(0)
    assert [(f.frame_index, f.epoch) for f in frames][:2] == [(7, 2), (8, 2)]
    assert all(f.frame_index < 9 or f.epoch == 3 for f in frames)


async def test_list_avatars() -> None:
    server, channel, stub, _ = await start()
    try:
        response = await stub.ListAvatars(video_pb2.ListAvatarsRequest())
    finally:
        await channel.close()
        await server.stop(0)
    assert response.default_avatar == "drawn"
    by_name = {avatar.name: avatar for avatar in response.avatars}
    assert by_name["drawn"].backend == "drawn" and by_name["drawn"].description


async def test_concurrent_streams_and_cancellation_clean_up() -> None:
    server, channel, stub, servicer = await start()
    try:
        both = await asyncio.gather(
            run(stub, [config(128, 128, session_id="a"), *[drive(i) for i in range(20)]]),
            run(stub, [config(128, 128, session_id="b", avatar="drawn-kai"), *[drive(i) for i in range(20)]]),
        )
        assert [len(frames) for frames in both] == [20, 20]
        assert both[0][0].data != both[1][0].data  # two avatars

        async def endless() -> AsyncIterator[video_pb2.RenderRequest]:
            yield config(128, 128)
            index = 0
            while True:
                yield drive(index)
                index += 1
                await asyncio.sleep(0.005)

        call = stub.Render(endless())
        received = 0
        async for _ in call:
            received += 1
            if received == 3:
                break
        call.cancel()
        for _ in range(500):
            if servicer._active == 0:
                break
            await asyncio.sleep(0.01)
        assert servicer._active == 0
    finally:
        await channel.close()
        await server.stop(0)


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
    pcm = np.frombuffer(tone(0), dtype="<i2")
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
    settled = [tracker.step(i, None, ()).open for i in range(12, 17)]
    assert settled[-1] == 0.0  # at rest within 5 frames (0.2 s) of the end of speech
