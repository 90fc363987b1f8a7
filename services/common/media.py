"""Media constants of the pipeline and small PCM helpers: one session clock for every service."""

from __future__ import annotations

import numpy as np

FPS = 25
SAMPLE_RATE_HZ = 24_000
SAMPLES_PER_FRAME = SAMPLE_RATE_HZ // FPS
WIDTH = 512
HEIGHT = 512
US_PER_FRAME = 1_000_000 // FPS


def frame_start_us(frame_index: int, fps: int = FPS) -> int:
    return frame_index * 1_000_000 // fps


def samples_to_us(samples: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> int:
    return samples * 1_000_000 // sample_rate_hz


def pcm_to_float(pcm_s16le: bytes) -> np.ndarray:
    return np.frombuffer(pcm_s16le, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def rms(pcm_s16le: bytes) -> float:
    """Root mean square of s16le PCM, as a fraction of full scale (0 for empty input)."""
    if not pcm_s16le:
        return 0.0
    samples = pcm_to_float(pcm_s16le)
    return float(np.sqrt(np.mean(samples * samples)))


# Uploaded portraits (CreateSession.portrait): the limit the session and video services both enforce.
MAX_PORTRAIT_BYTES = 8 * 1024 * 1024
