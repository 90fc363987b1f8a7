"""Decoding what a viewer receives (fMP4 HLS) and measuring it: speech spans, lip sync."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np

from services.video.photo.lipsync import LipSync, frame_envelope, measure, mouth_openings


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
    rgb_frames: list[np.ndarray] | None = None  # when decoded with rgb=True


def decode(data: bytes, rgb: bool = False) -> DecodedMedia:
    """Video frames (luma; RGB too when asked) and mono audio of an fMP4 stream."""
    rgb_frames: list[np.ndarray] | None = [] if rgb else None
    with av.open(io.BytesIO(data), format="mp4") as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames: list[np.ndarray] = []
        times: list[float] = []
        for frame in container.decode(video):
            frames.append(frame.to_ndarray(format="gray"))
            if rgb_frames is not None:
                rgb_frames.append(frame.to_ndarray(format="rgb24"))
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
    return DecodedMedia(vcodec, width, height, fps, acodec, rate, samples, start or 0.0, frames, times, rgb_frames)


def lip_sync(media: DecodedMedia, speech: tuple[float, float]) -> LipSync:
    """Lip-sync figures of a decoded stream (decoded with rgb=True): the landmark model reads the mouth of every
    frame; the envelope comes from the stream's own audio."""
    assert media.rgb_frames is not None, "decode(..., rgb=True)"
    times = np.array(media.frame_times)
    offset = round(media.audio_start_s * media.sample_rate)  # AAC priming can put the first sample before 0
    audio = np.concatenate([np.zeros(offset, np.float32), media.audio]) if offset >= 0 else media.audio[-offset:]
    envelope = frame_envelope(audio, media.sample_rate, times, media.fps)
    return measure(mouth_openings(media.rgb_frames), envelope, times, speech)


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


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    found = []
    while start < end:
        size, kind = struct.unpack_from(">I4s", data, start)
        assert 8 <= size <= end - start, f"bad box size {size} at {start}"
        found.append((kind, start + 8, start + size))
        start += size
    return found


def track_ends(fragment: bytes) -> dict[int, int]:
    """track id → end of its samples in this moof + mdat fragment (base decode time plus durations), in the
    track's timescale. Reads what the packager writes: tfdt, and trun with per-sample durations."""
    ends: dict[int, int] = {}
    (moof, moof_start, moof_end), *_ = boxes(fragment)
    assert moof == b"moof"
    for kind, traf_start, traf_end in boxes(fragment, moof_start, moof_end):
        if kind != b"traf":
            continue
        children = {k: start for k, start, _ in boxes(fragment, traf_start, traf_end)}
        (track_id,) = struct.unpack_from(">I", fragment, children[b"tfhd"] + 4)
        tfdt = children[b"tfdt"]
        (base,) = struct.unpack_from(">Q" if fragment[tfdt] else ">I", fragment, tfdt + 4)
        trun = children[b"trun"]
        flags = struct.unpack_from(">I", fragment, trun)[0] & 0xFFFFFF
        (count,) = struct.unpack_from(">I", fragment, trun + 4)
        assert flags & 0x100, "per-sample durations"
        position = trun + 8 + 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)
        entry = 4 * sum(bool(flags & bit) for bit in (0x100, 0x200, 0x400, 0x800))
        durations = (struct.unpack_from(">I", fragment, position + i * entry)[0] for i in range(count))
        ends[track_id] = base + sum(durations)
    return ends
