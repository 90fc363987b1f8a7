"""What a video worker can take, from its CPU budget and what it measures, not from a fixed count.

An idle stream costs the worker almost nothing (its pictures are the shared idle loop); a speaking stream costs the
CPU time of rendering and encoding its frames in real time. Both are measured: every rendered frame's CPU time (the
renderer's and the encoder's, on their threads), and the process's remaining CPU spread over its streams. Then:

  speaking_capacity = floor((budget - streams x idle_cost) / speaking_cost)   streams that may speak at once (>= 1)
  capacity          = floor(budget / (idle_cost + share x speaking_cost))     streams it accepts, at most max_streams

where `share` is the fraction of sessions the operator expects to speak at the same time (VIDEO_SPEAKING_SHARE).
A Say beyond speaking_capacity is refused by the session service, so admitted sessions never stall each other.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

IDLE_COST_FLOOR = 0.0005
INITIAL_IDLE_COST = 0.002
SMOOTHING = 0.02  # per frame: the speaking cost follows the last few seconds of rendering
IDLE_WINDOW_S = 10.0


def available_cores() -> float:
    """CPU cores this process may use: the cgroup's quota (containers) or the CPU affinity set."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(0.1, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)


@dataclass
class CapacityMeter:
    budget_cores: float
    fps: int
    speaking_share: float
    max_streams: int
    frame_cpu_s: float  # CPU seconds to render and encode one speaking frame (measured; a calibration at first)
    idle_stream_cores: float = INITIAL_IDLE_COST
    _window_started: float = field(default_factory=time.monotonic)
    _window_cpu: float = field(default_factory=time.process_time)
    _window_work: float = 0.0
    _window_stream_seconds: float = 0.0
    _streams: int = 0
    _streams_since: float = field(default_factory=time.monotonic)

    @property
    def speaking_stream_cores(self) -> float:
        return self.frame_cpu_s * self.fps

    def observe_frame(self, cpu_s: float) -> None:
        """A frame rendered and encoded live, at `cpu_s` CPU seconds."""
        self.frame_cpu_s += (cpu_s - self.frame_cpu_s) * SMOOTHING
        self._window_work += cpu_s

    def observe_work(self, cpu_s: float) -> None:
        """CPU spent on work that is not per-stream idling (e.g. building an idle loop)."""
        self._window_work += cpu_s

    def streams_changed(self, streams: int) -> None:
        now = time.monotonic()
        self._window_stream_seconds += self._streams * (now - self._streams_since)
        self._streams, self._streams_since = streams, now
        self._maybe_close_window(now)

    def _maybe_close_window(self, now: float) -> None:
        elapsed = now - self._window_started
        if elapsed < IDLE_WINDOW_S:
            return
        self._window_stream_seconds += self._streams * (now - self._streams_since)
        self._streams_since = now
        cpu = time.process_time()
        if self._window_stream_seconds > 0:
            rest = max(0.0, cpu - self._window_cpu - self._window_work)
            self.idle_stream_cores = max(IDLE_COST_FLOOR, rest / self._window_stream_seconds)
        self._window_started, self._window_cpu = now, cpu
        self._window_work = self._window_stream_seconds = 0.0

    def capacity(self) -> int:
        """At least one: the idle cost is measured only while streams run, so a worker that refused its first stream
        on a bad estimate (e.g. one taken while numba compiled the renderer's kernels on a fresh machine) would keep
        that estimate, and refuse, for good."""
        self._maybe_close_window(time.monotonic())
        per_stream = self.idle_stream_cores + self.speaking_share * self.speaking_stream_cores
        return max(1, min(self.max_streams, math.floor(self.budget_cores / per_stream)))

    def speaking_capacity(self, streams: int) -> int:
        """At least one: a worker never refuses its only speaker (who would stall no one but itself)."""
        left = self.budget_cores - streams * self.idle_stream_cores
        return max(1, min(self.capacity(), math.floor(left / self.speaking_stream_cores)))
