"""A spoken sentence as the video service sees it: offline speech (Piper) cut into per-frame drives.

For tools that exercise a renderer without the whole stack: the contact sheet, the renderer benchmark and the
lip-sync tests. The drives carry exactly what the session service would send: each frame's PCM and the phoneme
marks that start in it.

It joins two services (the tts service's voice, the video service's drives), which no service may do, so it lives
here in the tool package rather than in services/video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.media import FPS, SAMPLE_RATE_HZ
from services.video.backend import Drive, PhonemeSpan


@dataclass(frozen=True)
class SpokenText:
    drives: list[Drive]
    pcm: np.ndarray  # int16 mono at sample_rate_hz, the whole timeline (silence included)
    sample_rate_hz: int
    fps: int
    speech_start_s: float
    speech_end_s: float
    words: list[tuple[str, float, float]]  # (word, start_s, end_s) on the timeline

    def envelope(self) -> np.ndarray:
        """RMS of the audio under each frame (0..1 of full scale)."""
        per_frame = self.sample_rate_hz // self.fps
        frames = self.pcm[: len(self.drives) * per_frame].astype(np.float32).reshape(-1, per_frame) / 32768.0
        return np.sqrt((frames * frames).mean(axis=1))


def frame_drives(
    pcm: np.ndarray,
    phonemes: list[tuple[str, float, float]],
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    fps: int = FPS,
    with_marks: bool = True,
) -> list[Drive]:
    """One drive per frame of `pcm` (padded with silence to whole frames); marks are (phoneme, start_s, end_s)."""
    per_frame = sample_rate_hz // fps
    count = -(-len(pcm) // per_frame)
    padded = np.zeros(count * per_frame, dtype=np.int16)
    padded[: len(pcm)] = pcm
    by_frame: dict[int, list[PhonemeSpan]] = {}
    if with_marks:
        for phoneme, start_s, end_s in phonemes:
            span = PhonemeSpan(phoneme, round(start_s * 1e6), round(end_s * 1e6))
            by_frame.setdefault(int(start_s * fps), []).append(span)
    drives = []
    for index in range(count):
        chunk = padded[index * per_frame : (index + 1) * per_frame]
        silent = not chunk.any()
        drives.append(
            Drive(index, "" if silent else "spoken", None if silent else chunk, tuple(by_frame.get(index, ())))
        )
    return drives


async def speak(
    text: str, lead_s: float = 0.6, tail_s: float = 0.8, sample_rate_hz: int = SAMPLE_RATE_HZ, fps: int = FPS
) -> SpokenText:
    """`text` spoken by the offline voice, with silence before and after, as per-frame drives."""
    from services.tts.piper import PiperEngine
    from services.tts.resample import resample

    engine = PiperEngine()
    pieces = [np.zeros(round(lead_s * sample_rate_hz), dtype=np.int16)]
    phonemes: list[tuple[str, float, float]] = []
    words: list[tuple[str, float, float]] = []
    offset = lead_s
    async for audio in engine.synthesize(text, engine.voices()[0].name):
        pcm = resample(audio.pcm, audio.sample_rate_hz, sample_rate_hz)
        pieces.append(pcm)
        phonemes += [(p, offset + s, offset + e) for p, s, e in audio.phonemes]
        words += [(w, offset + s, offset + e) for w, s, e in audio.words]
        offset += len(pcm) / sample_rate_hz
    speech_end = offset
    pieces.append(np.zeros(round(tail_s * sample_rate_hz), dtype=np.int16))
    pcm = np.concatenate(pieces)
    per_frame = sample_rate_hz // fps
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % per_frame, dtype=np.int16)])
    return SpokenText(
        frame_drives(pcm, phonemes, sample_rate_hz, fps), pcm, sample_rate_hz, fps, lead_s, speech_end, words
    )
