"""Decoding what a viewer receives (fMP4 HLS) and measuring it: speech spans, mouth motion, onsets."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import av
import numpy as np


@dataclass
class DecodedMedia:
    video_codec: str
    width: int
    height: int
    fps: float
    audio_codec: str
    sample_rate: int
    audio: np.ndarray  # mono float32, starting at audio_start_s
    audio_start_s: float
    frames: list[np.ndarray]  # luma planes
    frame_times: list[float]


def decode(data: bytes) -> DecodedMedia:
    with av.open(io.BytesIO(data), format="mp4") as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames: list[np.ndarray] = []
        times: list[float] = []
        for frame in container.decode(video):
            frames.append(frame.to_ndarray(format="gray"))
            times.append(float(frame.pts * frame.time_base))
        fps = float(video.average_rate or video.guessed_rate or 0)
        vcodec, width, height = video.codec_context.name, video.codec_context.width, video.codec_context.height
    with av.open(io.BytesIO(data), format="mp4") as container:
        audio = container.streams.audio[0]
        chunks: list[np.ndarray] = []
        start: float | None = None
        for frame in container.decode(audio):
            if start is None:
                start = float(frame.pts * frame.time_base)
            samples = frame.to_ndarray()
            chunks.append(samples.mean(axis=0) if samples.ndim == 2 and samples.shape[0] > 1 else samples.reshape(-1))
        acodec, rate = audio.codec_context.name, audio.codec_context.sample_rate
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size and np.abs(samples).max() > 2.0:  # integer sample formats
        samples = samples / 32768.0
    return DecodedMedia(vcodec, width, height, fps, acodec, rate, samples, start or 0.0, frames, times)


def window_rms(audio: np.ndarray, sample_rate: int, window_s: float = 0.01) -> np.ndarray:
    size = max(1, int(sample_rate * window_s))
    usable = audio[: audio.size // size * size].reshape(-1, size)
    return np.sqrt((usable.astype(np.float64) ** 2).mean(axis=1))


def loud_span(
    audio: np.ndarray, sample_rate: int, threshold: float = 0.02, window_s: float = 0.01
) -> tuple[float, float] | None:
    """First and last time (s, from the start of `audio`) where the windowed RMS exceeds `threshold`."""
    rms = window_rms(audio, sample_rate, window_s)
    loud = np.nonzero(rms > threshold)[0]
    if loud.size == 0:
        return None
    return float(loud[0] * window_s), float((loud[-1] + 1) * window_s)


def region(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return frame[y0:y1, x0:x1].astype(np.float32)


def motion(frames: list[np.ndarray], box: tuple[int, int, int, int]) -> np.ndarray:
    """Mean absolute change of the box from each frame to the next (one value per frame after the first)."""
    return np.array([np.abs(region(b, box) - region(a, box)).mean() for a, b in itertools.pairwise(frames)])


def deviation(frames: list[np.ndarray], box: tuple[int, int, int, int], reference: np.ndarray) -> np.ndarray:
    """Mean absolute difference of the box from a reference (rest) frame, per frame."""
    ref = region(reference, box)
    return np.array([np.abs(region(f, box) - ref).mean() for f in frames])


def mouth_onset(media: DecodedMedia, box: tuple[int, int, int, int], audio_onset_s: float) -> float | None:
    """Time of the first frame (within a second before the audio onset, or after) whose mouth change stands out of
    the idle motion before the speech; None if the mouth never moves."""
    times = np.array(media.frame_times)
    changes = motion(media.frames, box)
    change_times = times[1:]
    idle_before = changes[(change_times > 0.2) & (change_times < audio_onset_s - 0.3)]
    threshold = max(3 * idle_before.max(), 2.0) if idle_before.size else 2.0
    moving = np.nonzero((changes > threshold) & (change_times > audio_onset_s - 1.0))[0]
    return float(change_times[moving[0]]) if moving.size else None
