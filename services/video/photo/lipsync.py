"""Measuring lip sync on rendered frames, as a viewer would see it: the landmark model reads the mouth opening of
every output frame, and that is compared with the speech audio (its loudness envelope) and with the viseme track.

Used by the tests (which assert it), the renderer benchmark (which reports it) and the end-to-end test on the HLS
stream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.video.photo.landmarks import Face, FaceLandmarker


def mouth_openings(frames_rgb: list[np.ndarray], landmarker: FaceLandmarker | None = None) -> np.ndarray:
    """Inner-lip gap relative to the eye distance, per frame (NaN where no face was found). The face is detected
    in the first frame and tracked from frame to frame, as in video."""
    landmarker = landmarker or FaceLandmarker.shared()
    openings = np.full(len(frames_rgb), np.nan)
    face: Face | None = None
    for index, rgb in enumerate(frames_rgb):
        if face is not None:
            tracked = landmarker.track(rgb, face)
            face = tracked if tracked.presence >= 0.5 else None
        if face is None:
            face = landmarker.find(rgb)
        if face is not None:
            openings[index] = face.mouth_opening()
    return openings


def frame_envelope(audio: np.ndarray, sample_rate: int, frame_times: np.ndarray, fps: float) -> np.ndarray:
    """RMS of the audio under each frame (audio starts at time 0)."""
    per_frame = sample_rate / fps
    out = np.zeros(len(frame_times))
    for index, t in enumerate(frame_times):
        a, b = int(t * sample_rate), int(t * sample_rate + per_frame)
        chunk = audio[max(0, a) : max(0, b)]
        out[index] = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) if chunk.size else 0.0
    return out


def smooth(values: np.ndarray, frames: int = 3) -> np.ndarray:
    """Moving average over `frames` (the mouth integrates the phonemes of ~100 ms; so does the envelope here)."""
    kernel = np.ones(frames) / frames
    return np.convolve(values, kernel, mode="same")


@dataclass(frozen=True)
class LipSync:
    """How well the mouth follows the speech."""

    envelope_correlation: float  # Pearson r of opening vs smoothed audio envelope, during speech
    track_correlation: float | None  # Pearson r of opening vs the renderer's own mouth track, during speech
    silence_opening: float  # 95th percentile of the opening in silence
    speech_opening: float  # 90th percentile of the opening during speech
    mouth_onset_s: float | None  # first frame, near the audio onset, where the mouth opens out of its rest range
    audio_onset_s: float


def measure(
    openings: np.ndarray,
    envelope: np.ndarray,
    frame_times: np.ndarray,
    speech: tuple[float, float],
    track: np.ndarray | None = None,
) -> LipSync:
    """Lip-sync figures for one utterance. `speech` is (onset_s, offset_s) of the audio; frames well outside it
    (more than 0.3 s before or 0.5 s after) count as silence."""
    onset, offset = speech
    speaking = (frame_times >= onset) & (frame_times <= offset) & ~np.isnan(openings)
    silent = ((frame_times < onset - 0.3) | (frame_times > offset + 0.5)) & ~np.isnan(openings)

    def correlation(a: np.ndarray, b: np.ndarray) -> float:
        if a.std() < 1e-9 or b.std() < 1e-9:
            return 0.0
        return float(np.corrcoef(a, b)[0, 1])

    env = smooth(envelope)
    before = silent & (frame_times < onset)
    rest = openings[before] if before.any() else openings[silent]
    threshold = float(np.median(rest) + max(0.02, 4 * np.std(rest))) if rest.size else 0.05
    opened = np.nonzero((openings > threshold) & (frame_times > onset - 0.5))[0]
    return LipSync(
        envelope_correlation=correlation(openings[speaking], env[speaking]),
        track_correlation=None if track is None else correlation(openings[speaking], track[speaking]),
        silence_opening=float(np.percentile(openings[silent], 95)) if silent.any() else float("nan"),
        speech_opening=float(np.percentile(openings[speaking], 90)) if speaking.any() else float("nan"),
        mouth_onset_s=float(frame_times[opened[0]]) if opened.size else None,
        audio_onset_s=onset,
    )
