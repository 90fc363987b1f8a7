"""A first measurement of what a speaking stream costs, before any session spoke: render and encode a short
synthetic speech passage (a vowel-consonant sequence over a voiced tone) of the default avatar and take the median
CPU time per frame. Live frames refine it from then on (`CapacityMeter.observe_frame`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator

import numpy as np

from services.video.backend import Drive, IdleLoop, PhonemeSpan, RendererBackend
from services.video.encoding import EncoderSettings, FrameEncoder

PHONEMES = ("h", "ə", "l", "oʊ", "m", "a", "ɪ", "n", "eɪ", "m", "ɪ", "z", "ɑ", "d", "ə")  # noqa: RUF001
CALIBRATION_FRAMES = 36


def speech_drives(fps: int, sample_rate_hz: int, frames: int) -> list[Drive]:
    """Drives of a voiced passage with a phoneme every ~100 ms (deterministic)."""
    per_frame = sample_rate_hz // fps
    t = np.arange(frames * per_frame) / sample_rate_hz
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    pcm = (8000 * envelope * np.sin(2 * np.pi * 140.0 * t)).astype("<i2")
    drives = []
    for index in range(frames):
        start_us = index * 1_000_000 // fps
        marks: tuple[PhonemeSpan, ...] = ()
        if index % 3 == 0:
            phoneme = PHONEMES[(index // 3) % len(PHONEMES)]
            marks = (PhonemeSpan(phoneme, start_us, start_us + 3 * 1_000_000 // fps),)
        drives.append(Drive(index, "calibration", pcm[index * per_frame : (index + 1) * per_frame], marks))
    return drives


async def speaking_frame_cpu_s(
    backend: RendererBackend, avatar: str, width: int, height: int, fps: int, sample_rate_hz: int
) -> float:
    """Median CPU seconds to render and encode one speaking frame."""
    renderer = backend.open(avatar, width, height, fps, sample_rate_hz, IdleLoop(fps * 10, 0))
    encoder = FrameEncoder(EncoderSettings(width, height, fps))
    drives = speech_drives(fps, sample_rate_hz, CALIBRATION_FRAMES)

    async def feed() -> AsyncIterator[Drive]:
        for drive in drives:
            yield drive

    costs = []
    try:
        async for frame in renderer.render(feed()):
            started = time.thread_time()
            encoder.encode(frame.data, frame.frame_index == 0)
            costs.append(frame.cpu_s + time.thread_time() - started)
    finally:
        await renderer.close()
    return statistics.median(costs[len(costs) // 3 :])
