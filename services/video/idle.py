"""Idle life shared by the CPU avatars: blink times, glances, head sway and breathing, as deterministic functions
of the frame index and a per-session seed, so a rewound timeline replays them exactly."""

from __future__ import annotations

import math

import numpy as np

_SCHEDULE_PERIOD_S = 600.0
GAZES: tuple[tuple[float, float], ...] = ((0.0, 0.0), (-3.0, 0.0), (3.0, 0.0), (-2.0, 1.5), (2.0, 1.5), (0.0, -1.5))


class IdleSchedule:
    """Blink start times (2-6 s apart, sometimes a double blink) and glances, from a seed."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        blinks: list[float] = []
        t = float(rng.uniform(0.5, 2.5))
        while t < _SCHEDULE_PERIOD_S:
            blinks.append(t)
            if rng.random() < 0.12:
                blinks.append(t + 0.4)
            t += float(rng.uniform(2.0, 6.0))
        self.blinks = np.array(blinks)
        glances: list[tuple[float, int]] = []
        t = float(rng.uniform(1.0, 3.0))
        while t < _SCHEDULE_PERIOD_S:
            index = 0 if rng.random() < 0.5 else int(rng.integers(1, len(GAZES)))
            glances.append((t, index))
            t += float(rng.uniform(1.2, 4.0))
        self.glance_times = np.array([g[0] for g in glances])
        self.glance_targets = [g[1] for g in glances]
        self.phases = rng.uniform(0.0, 2.0 * math.pi, size=6)

    def blink(self, frame_index: int, fps: int) -> float:
        """Eyelid closure from blinking, 0..1."""
        t = (frame_index / fps) % _SCHEDULE_PERIOD_S
        i = int(np.searchsorted(self.blinks, t, side="right")) - 1
        if i < 0:
            return 0.0
        start = round(self.blinks[i] * fps)
        tau = ((frame_index % round(_SCHEDULE_PERIOD_S * fps)) - start + 1) / fps
        if tau <= 0:
            return 0.0
        if tau < 0.075:
            return math.sin(0.5 * math.pi * tau / 0.075)
        if tau < 0.11:
            return 1.0
        if tau < 0.27:
            return 0.5 + 0.5 * math.cos(math.pi * (tau - 0.11) / 0.16)
        return 0.0

    def gaze(self, frame_index: int, fps: int) -> int:
        t = (frame_index / fps) % _SCHEDULE_PERIOD_S
        i = int(np.searchsorted(self.glance_times, t, side="right")) - 1
        return 0 if i < 0 else self.glance_targets[i]

    def sway(self, frame_index: int, fps: int, energy: float, limit: float) -> tuple[float, float]:
        """Head offset in pixels: slow breathing (vertical) and sway (horizontal), a small nod while speaking."""
        t = frame_index / fps
        ph = self.phases
        amplitude = 0.55 * limit + 0.25
        dx = amplitude * (
            0.75 * math.sin(2 * math.pi * t / 7.3 + ph[0]) + 0.25 * math.sin(2 * math.pi * t / 3.1 + ph[1])
        )
        dy = amplitude * 0.9 * math.sin(2 * math.pi * t / 4.4 + ph[2])
        dy += limit * 0.6 * energy * math.sin(2 * math.pi * t / 0.9 + ph[3])
        return max(-limit, min(limit, dx)), max(-limit, min(limit, dy))

    def tilt(self, frame_index: int, fps: int, energy: float) -> float:
        """Head roll in radians: a slow lean (about half a degree) and livelier small turns while speaking."""
        t = frame_index / fps
        ph = self.phases
        lean = 0.008 * math.sin(2 * math.pi * t / 9.7 + ph[4])
        return lean + 0.006 * energy * math.sin(2 * math.pi * t / 1.7 + ph[5])

    @staticmethod
    def breath(frame_index: int, fps: int) -> float:
        """Chest rise, -1..1, at a resting 14 breaths a minute."""
        return math.sin(2 * math.pi * frame_index / fps / (60.0 / 14.0))
