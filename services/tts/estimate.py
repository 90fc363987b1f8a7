"""Word timings for speech that comes without any: voiced regions from the audio's energy, words spread over them by
their written length. Rough (a word may be off by a syllable), but marks stay in order, inside the audio, and on
speech rather than on pauses, which is what the transcript and the video's energy fallback need."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FRAME_S = 0.02
FLOOR_DB = -50.0
BELOW_PEAK_DB = 30.0
MIN_GAP_S = 0.08  # shorter quiet stretches (stop closures) stay inside a voiced region


def frame_levels_db(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Level of each 20 ms frame in dBFS (the last partial frame included)."""
    size = max(1, int(rate * FRAME_S))
    n = len(pcm)
    if n == 0:
        return np.zeros(0)
    padded = np.zeros(-(-n // size) * size, dtype=np.float64)
    padded[:n] = np.asarray(pcm, dtype=np.float64) / 32768
    power = np.mean(padded.reshape(-1, size) ** 2, axis=1)
    return 10 * np.log10(np.maximum(power, 1e-12))


def voiced_regions(pcm: np.ndarray, rate: int, peak_db: float | None = None) -> list[tuple[float, float]]:
    """(start_s, end_s) of the loud stretches, relative to `pcm`; `peak_db` is the speech level to judge against
    (default: this audio's own loudest frame)."""
    levels = frame_levels_db(pcm, rate)
    if not len(levels):
        return []
    peak = float(levels.max()) if peak_db is None else peak_db
    threshold = max(FLOOR_DB, peak - BELOW_PEAK_DB)
    loud = levels > threshold
    regions: list[list[float]] = []
    duration = len(pcm) / rate
    for i in np.flatnonzero(loud):
        start, end = i * FRAME_S, min((i + 1) * FRAME_S, duration)
        if regions and start - regions[-1][1] < MIN_GAP_S:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    return [(s, e) for s, e in regions if e > s]


def spread_words(
    words: Sequence[str], regions: Sequence[tuple[float, float]], duration_s: float
) -> list[tuple[str, float, float]]:
    """Gives each word a span of the voiced time in proportion to its length (the whole audio if nothing is voiced);
    a word that straddles a pause keeps the pause inside its span."""
    if not words:
        return []
    if not regions:
        regions = [(0.0, duration_s)] if duration_s > 0 else []
    if not regions:
        return []
    total = sum(e - s for s, e in regions)
    weights = [len(w) + 1 for w in words]
    scale = total / sum(weights)
    bounds = np.cumsum([0.0, *[w * scale for w in weights]])

    def at(x: float) -> float:
        """Seconds at position x of the voiced time."""
        for s, e in regions:
            if x < e - s - 1e-9:
                return s + max(0.0, x)
            x -= e - s
        return regions[-1][1]

    spans = []
    for word, lo, hi in zip(words, bounds[:-1], bounds[1:], strict=True):
        start, end = at(lo), at(hi)
        spans.append((word, start, max(end, start + 1e-3)))
    return spans
