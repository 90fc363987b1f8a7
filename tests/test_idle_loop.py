"""Idle is a loop: the CPU renderers draw an idle drive as exactly the loop frame of its phase (whatever they drew
before, once settled), settle back to it within `settle_frames` silent drives after speech, and the loop's wrap is
as smooth as any other step; the idle schedule is periodic."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from infinitetalk_live.speech_drives import SpokenText, speak
from services.video.backend import Drive, IdleLoop, PhonemeSpan, RendererBackend
from services.video.drawn import DrawnBackend
from services.video.idle import BLINK_GAP_S, GAZES, IDLE_LOOP_SECONDS, IdleSchedule, avatar_seed, loop_frames
from services.video.photo.backend import PhotoBackend
from services.video.visemes import REST, MouthTracker

FPS = 25
CHUNK = 12
SIZE = 256
L = loop_frames(FPS, CHUNK)


@pytest.fixture(scope="module")
def photo() -> PhotoBackend:
    return PhotoBackend()


@pytest.fixture(scope="module", params=["photo", "drawn"])
def case(request, photo: PhotoBackend) -> tuple[RendererBackend, str]:
    return (photo, "astronaut") if request.param == "photo" else (DrawnBackend(), "drawn")


@pytest.fixture(scope="module")
def loops(case) -> list[bytes]:
    """The loop of each backend, rendered as the video service does: a fresh renderer from phase 0."""
    backend, avatar = case
    renderer = backend.open(avatar, SIZE, SIZE, FPS, 24000, IdleLoop(L, 0))
    return [renderer.render_frame(Drive(i)) for i in range(L)]


@pytest.fixture(scope="module")
def spoken() -> SpokenText:
    return asyncio.run(speak("Hello! Watch my mouth move, then rest."))


def planes(frame: bytes) -> np.ndarray:
    return np.frombuffer(frame, np.uint8).astype(np.int16)


def mean_step(a: bytes, b: bytes) -> float:
    return float(np.abs(planes(a) - planes(b)).mean())


# ---------------------------------------------------------------------------------------------------------------------


def test_loop_length_is_whole_chunks_of_about_the_loop_seconds() -> None:
    assert loop_frames(25, 12) == 240
    assert loop_frames(30, 12) == 288
    assert loop_frames(25, 81) == 243
    assert loop_frames(25, 400) == 400, "at least one chunk"
    for fps in (15, 24, 25, 30, 50):
        for chunk in (1, 8, 12, 25, 60):
            frames = loop_frames(fps, chunk)
            assert frames % chunk == 0
            assert abs(frames / fps - IDLE_LOOP_SECONDS) <= chunk / fps / 2 + 1e-9


def test_settle_frames_are_few(case) -> None:
    backend, avatar = case
    renderer = backend.open(avatar, SIZE, SIZE, FPS, 24000, IdleLoop(L, 0))
    assert 1 <= renderer.settle_frames <= 8, "about a third of a second at 25 fps"
    assert renderer.settle_frames == MouthTracker(FPS).settle_frames


def test_idle_drives_render_the_loop_from_any_phase_offset(case, loops: list[bytes]) -> None:
    backend, avatar = case
    assert len(set(loops)) > L // 8, "the loop is alive, not a still"
    # Another session of the avatar, 36 frames into the loop, joining at frame 1000: it shows the loop's frames,
    # across the wrap too.
    offset, start = 36, 1000
    renderer = backend.open(avatar, SIZE, SIZE, FPS, 24000, IdleLoop(L, offset))
    first = L - 10 - (start + offset) % L  # a few frames later, so the run crosses the wrap
    for index in range(start, start + first + 20):
        frame = renderer.render_frame(Drive(index))
        if index >= start + first:
            assert frame == loops[(index + offset) % L], index


def test_after_speech_the_renderer_is_back_on_the_loop_within_settle_frames(
    case, loops: list[bytes], spoken: SpokenText
) -> None:
    backend, avatar = case
    offset = 48
    renderer = backend.open(avatar, SIZE, SIZE, FPS, 24000, IdleLoop(L, offset))
    drives = list(spoken.drives)
    voiced = [d.frame_index for d in drives if d.pcm is not None or d.phonemes]
    first, last = voiced[0], voiced[-1]
    # The last phoneme mark outlasts the audio by a second (a bad end time must not hold the mouth open).
    end_us = (last + 1) * 1_000_000 // FPS
    drives[last] = Drive(
        last, "u1", drives[last].pcm, (*drives[last].phonemes, PhonemeSpan("a", end_us - 30_000, end_us + 1_000_000))
    )
    frames = [renderer.render_frame(drive) for drive in drives[: last + 1]]
    assert frames[:first] == [loops[(i + offset) % L] for i in range(first)], "idle before the speech: the loop"
    assert sum(frames[i] != loops[(i + offset) % L] for i in voiced) > len(voiced) // 2, "speech is drawn"
    settle = renderer.settle_frames
    after = [renderer.render_frame(Drive(i)) for i in range(last + 1, last + settle + 30)]
    # The settle_frames-th silent drive already draws the loop frame, and every one after it does.
    for k in range(settle - 1, len(after)):
        assert after[k] == loops[(last + 1 + k + offset) % L], k
    assert renderer.tracker.state.shape == REST and renderer.tracker.state.energy == 0.0


def test_the_wrap_is_as_smooth_as_any_step(loops: list[bytes]) -> None:
    steps = [mean_step(loops[i], loops[i + 1]) for i in range(L - 1)]
    assert mean_step(loops[-1], loops[0]) <= max(steps)
    assert mean_step(loops[-1], loops[0]) <= float(np.percentile(steps, 90)), "the wrap is an ordinary step"


def test_infinitetalk_loops_are_the_photo_avatars(photo: PhotoBackend) -> None:
    pytest.importorskip("torch")
    from services.video.infinitetalk.backend import InfiniteTalkBackend

    backend = InfiniteTalkBackend(None, None, photo)  # type: ignore[arg-type]  # loop_key needs neither model
    assert backend.loop_key("astronaut-infinitetalk") == photo.loop_key("astronaut")
    assert photo.loop_key("astronaut") != DrawnBackend().loop_key("astronaut")


# ---------------------------------------------------------------------------------------------------------------------
# The schedule


@pytest.mark.parametrize("frames", [L, 250, 48, 12])
@pytest.mark.parametrize("seed", [avatar_seed("astronaut"), avatar_seed("drawn"), 7])
def test_the_schedule_is_periodic_and_smooth_across_the_wrap(seed: int, frames: int) -> None:
    schedule = IdleSchedule(seed, frames, FPS)
    again = IdleSchedule(seed, frames, FPS)
    assert np.array_equal(schedule.blinks, again.blinks), "a function of the seed"
    limit = 1.6
    for phase in range(frames):
        for shifted in (phase + frames, phase - frames, phase + 7 * frames):
            assert schedule.blink(shifted) == schedule.blink(phase)
            assert schedule.gaze(shifted) == schedule.gaze(phase)
            assert schedule.sway(shifted, limit) == pytest.approx(schedule.sway(phase, limit), abs=1e-12)
            assert schedule.tilt(shifted) == pytest.approx(schedule.tilt(phase), abs=1e-12)
            assert schedule.breath(shifted) == pytest.approx(schedule.breath(phase), abs=1e-12)

    def motion(phase: int) -> np.ndarray:
        return np.array([*schedule.sway(phase, limit), schedule.tilt(phase) * 100, schedule.breath(phase)])

    steps = [np.abs(motion(p + 1) - motion(p)).max() for p in range(frames - 1)]
    assert np.abs(motion(0) - motion(frames - 1)).max() <= max(steps) + 1e-9
    # No blink is under way at the wrap, and no glance starts on it.
    assert schedule.blink(0) == 0.0 or frames < 25
    assert 0 not in schedule.glances or frames < 25


def test_blinks_are_natural_across_the_wrap() -> None:
    counts = []
    for seed in range(40):
        schedule = IdleSchedule(seed, L, FPS)
        starts = schedule.blinks / FPS
        assert all(0 <= index < len(GAZES) for index in schedule.glance_targets)
        gaps = np.diff(np.concatenate([starts, [starts[0] + L / FPS]]))  # the gap across the wrap counts
        singles = gaps[gaps > 1.0]  # a double blink's second comes 0.4 s after the first
        assert singles.min() >= BLINK_GAP_S[0] - 0.4 - 1 / FPS and singles.max() <= BLINK_GAP_S[1] + 1 / FPS
        counts.append(len(singles))
        closed = [schedule.blink(p) for p in range(L)]
        assert max(closed) == 1.0, "the eyes close fully"
        assert sum(c > 0 for c in closed) <= 12 * len(starts), "blinks are brief"
    assert 2.0 <= float(np.mean(counts)) <= 3.5, "a blink every ~4 s"
    # Sinusoids have a whole number of cycles per loop, near their nominal periods.
    schedule = IdleSchedule(1, L, FPS)
    assert schedule.sway_cycles == (1, 3) and schedule.bob_cycles == 2 and schedule.lean_cycles == 1
    assert math.isclose(60.0 * schedule.breath_cycles / (L / FPS), 12.5), "breaths a minute"
