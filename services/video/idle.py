"""Idle life shared by the CPU avatars: blinks, glances, head sway and breathing, as pure functions of the idle-loop
phase (see `services.video.backend.IdleLoop`).

Idle is a loop: everything here repeats every `frames` frames, so an avatar's idle animation can be rendered and
encoded once and replayed by every idle session. Blinks and glances are scheduled inside one loop period with the
gap across the wrap drawn like any other gap (no blink is in progress at the wrap, no glance starts on phase 0), and
sway, lean and breathing are sinusoids with a whole number of cycles per period, so the step from the last frame of
the loop to its first is as smooth as any other step. The only input that is not the phase is speech: while the
avatar speaks, the head nods and turns a little with the speech energy (a function of the frame index, not of the
phase); with no energy those terms are exactly zero.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

IDLE_LOOP_SECONDS = 9.6
GAZES: tuple[tuple[float, float], ...] = ((0.0, 0.0), (-3.0, 0.0), (3.0, 0.0), (-2.0, 1.5), (2.0, 1.5), (0.0, -1.5))

BLINK_GAP_S = (2.0, 6.0)  # from one blink to the next (a double blink counts as one)
DOUBLE_BLINK_CHANCE = 0.12
DOUBLE_BLINK_S = 0.4  # the second blink of a double, after the first
BLINK_S = 0.27  # a blink's length (closing 75 ms, closed 35 ms, opening 160 ms)
GLANCE_GAP_S = (1.2, 4.0)
# Periods of the idle sinusoids before rounding to a whole number of cycles per loop.
SWAY_S = (7.3, 3.1)  # sideways sway, two components
BOB_S = 4.4  # up and down
LEAN_S = 9.7  # head roll
BREATH_S = 60.0 / 14.0  # 14 breaths a minute
# Speech: nods and small turns while the voice has energy (free-running on the frame index).
NOD_S = 0.9
TURN_S = 1.7


def loop_frames(fps: int, chunk_frames: int) -> int:
    """Frames in an idle loop: about IDLE_LOOP_SECONDS, a whole number of chunks."""
    return chunk_frames * max(1, round(IDLE_LOOP_SECONDS * fps / chunk_frames))


def avatar_seed(avatar: str) -> int:
    """The idle schedule's seed for an avatar: the same for every session (and every worker) that shows it."""
    return zlib.crc32(avatar.encode())


def _cyclic_gaps(rng: np.random.Generator, period: float, low: float, high: float, mean: float) -> list[float]:
    """Gaps that each lie in [low, high] (as far as the period allows) and add up to exactly `period`."""
    if period <= high:
        return [period]  # one event a period (a loop shorter than `low` cannot keep the spacing)
    fewest = math.ceil(period / high)
    most = max(fewest, math.floor(period / low))
    expected = period / mean
    count = math.floor(expected) + (1 if rng.random() < expected - math.floor(expected) else 0)
    count = min(most, max(fewest, count))
    for _ in range(64):
        gaps = rng.uniform(low, high, size=count)
        gaps *= period / gaps.sum()
        if gaps.min() >= low - 1e-9 and gaps.max() <= high + 1e-9:
            return [float(g) for g in gaps]
    return [period / count] * count


class IdleSchedule:
    """The idle animation of one avatar over one loop of `frames` frames at `fps`, from a seed.

    `blinks` are the phases (frames) where blinks start, sorted; `glances` the phases where the gaze moves to
    `glance_targets` (indices into GAZES). Every method takes a phase in [0, frames) (other integers are reduced
    modulo `frames`) and is a pure function of it."""

    def __init__(self, seed: int, frames: int, fps: int) -> None:
        if frames < 1 or fps < 1:
            raise ValueError("an idle schedule needs at least one frame and a positive rate")
        self.frames = frames
        self.fps = fps
        self.period_s = frames / fps
        rng = np.random.default_rng(seed)
        self.blinks = self._blink_starts(rng)
        self.glances, self.glance_targets = self._glances(rng)
        self.phases = rng.uniform(0.0, 2.0 * math.pi, size=6)
        self.sway_cycles = tuple(self.cycles(p) for p in SWAY_S)
        self.bob_cycles = self.cycles(BOB_S)
        self.lean_cycles = self.cycles(LEAN_S)
        self.breath_cycles = self.cycles(BREATH_S)
        self._blink_curve = self._blink_shape()

    def cycles(self, period_s: float) -> int:
        """Whole cycles per loop of a sinusoid meant to have about `period_s`."""
        return max(1, round(self.period_s / period_s))

    # -- events ---------------------------------------------------------------------------------------------------
    def _blink_starts(self, rng: np.random.Generator) -> np.ndarray:
        period = self.period_s
        gaps = _cyclic_gaps(rng, period, *BLINK_GAP_S, mean=sum(BLINK_GAP_S) / 2)
        doubles = [bool(rng.random() < DOUBLE_BLINK_CHANCE) for _ in gaps]
        offsets = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
        # Place the first blink so that the last one (a double included) is over before the loop wraps.
        last = BLINK_S + (DOUBLE_BLINK_S if doubles[-1] else 0.0)
        margin = 1.0 / self.fps
        room = max(margin, gaps[-1] - last - margin)
        first = float(rng.uniform(margin, room))
        starts: list[int] = []
        for offset, double in zip(offsets, doubles, strict=True):
            t = first + float(offset)
            starts.append(round(t * self.fps) % self.frames)
            if double and min(gaps) > DOUBLE_BLINK_S + BLINK_S:
                starts.append(round((t + DOUBLE_BLINK_S) * self.fps) % self.frames)
        return np.array(sorted(set(starts)), dtype=np.int64)

    def _glances(self, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, ...]]:
        period = self.period_s
        gaps = _cyclic_gaps(rng, period, *GLANCE_GAP_S, mean=sum(GLANCE_GAP_S) / 2)
        offsets = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
        margin = 1.0 / self.fps
        first = float(rng.uniform(margin, max(margin, gaps[-1] - margin)))
        starts = [max(1, round((first + float(o)) * self.fps)) % self.frames for o in offsets]
        targets = [0 if rng.random() < 0.5 else int(rng.integers(1, len(GAZES))) for _ in starts]
        order = np.argsort(starts, kind="stable")
        return np.array(starts, dtype=np.int64)[order], tuple(targets[i] for i in order)

    def _blink_shape(self) -> np.ndarray:
        """Eyelid closure at each frame of a blink (frame 0 is the blink's start)."""
        values = []
        for k in range(self.frames):
            tau = (k + 1) / self.fps
            if tau < 0.075:
                values.append(math.sin(0.5 * math.pi * tau / 0.075))
            elif tau < 0.11:
                values.append(1.0)
            elif tau < BLINK_S:
                values.append(0.5 + 0.5 * math.cos(math.pi * (tau - 0.11) / 0.16))
            else:
                break
        return np.array(values, dtype=np.float64)

    def blink(self, phase: int) -> float:
        """Eyelid closure from blinking, 0..1."""
        phase %= self.frames
        closure = 0.0
        curve = self._blink_curve
        for start in self.blinks:
            k = (phase - int(start)) % self.frames
            if k < len(curve):
                closure = max(closure, float(curve[k]))
        return closure

    def gaze(self, phase: int) -> int:
        """Index into GAZES of where the eyes look (the last glance before the phase, across the wrap)."""
        phase %= self.frames
        i = int(np.searchsorted(self.glances, phase, side="right")) - 1
        return self.glance_targets[i]  # i == -1: the last glance of the loop is still on

    # -- motion ---------------------------------------------------------------------------------------------------
    def _angle(self, phase: int, cycles: int, which: int) -> float:
        return 2.0 * math.pi * cycles * (phase % self.frames) / self.frames + float(self.phases[which])

    def sway(self, phase: int, limit: float, energy: float = 0.0, frame_index: int = 0) -> tuple[float, float]:
        """Head offset in pixels, each axis within +-limit: a slow sway (horizontal) and bob (vertical), plus a
        small nod while speaking (`energy` > 0, free-running on `frame_index`)."""
        amplitude = 0.55 * limit + 0.25
        dx = amplitude * (
            0.75 * math.sin(self._angle(phase, self.sway_cycles[0], 0))
            + 0.25 * math.sin(self._angle(phase, self.sway_cycles[1], 1))
        )
        dy = amplitude * 0.9 * math.sin(self._angle(phase, self.bob_cycles, 2))
        if energy > 0.0:
            t = frame_index / self.fps
            dy += limit * 0.6 * energy * math.sin(2 * math.pi * t / NOD_S + float(self.phases[3]))
        return max(-limit, min(limit, dx)), max(-limit, min(limit, dy))

    def tilt(self, phase: int, energy: float = 0.0, frame_index: int = 0) -> float:
        """Head roll in radians: a slow lean (about half a degree) and livelier small turns while speaking."""
        lean = 0.008 * math.sin(self._angle(phase, self.lean_cycles, 4))
        if energy > 0.0:
            t = frame_index / self.fps
            lean += 0.006 * energy * math.sin(2 * math.pi * t / TURN_S + float(self.phases[5]))
        return lean

    def breath(self, phase: int) -> float:
        """Chest rise, -1..1, at about 14 breaths a minute (a whole number of breaths per loop)."""
        return math.sin(2 * math.pi * self.breath_cycles * (phase % self.frames) / self.frames)
