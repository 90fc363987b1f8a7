"""Photo-avatar renderer benchmark: real-time factor on one core at 512x512 and 720x720 (25 fps), and lip sync.

The renderer runs in this process, pinned to one CPU with one OpenCV thread, over a spoken sentence (offline voice,
phoneme marks). For each size it prints the per-frame render time (median, p95 over --runs passes), the real-time
factor (compute s / media s; below 1 is faster than real time) and how many times real time that is. Lip sync is
measured as the tests do: the landmark model reads the mouth opening of every output frame, correlated with the
speech envelope and with the renderer's viseme track; the mouth onset is compared with the audio onset.

Usage: .venv/bin/python -m bench.photo [--runs 3] [--avatar astronaut]   (from the repo root)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import numpy as np

from services.video.drawn import DrawnBackend
from services.video.photo.backend import PhotoBackend
from services.video.photo.lipsync import measure, mouth_openings
from services.video.photo.renderer import i420_to_rgb
from services.video.speech_drives import SpokenText, speak

TEXT = (
    "Hello there! I am a photo that talks. Every word you hear moves my lips, my jaw and my cheeks, "
    "and between sentences I blink and breathe."
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_renderer(backend, avatar: str, size: int, spoken: SpokenText, runs: int) -> list[float]:
    """Per-frame thread CPU seconds over `runs` passes of the sentence (a fresh renderer each pass)."""
    per_frame: list[float] = []
    backend.open(avatar, size, size, spoken.fps, spoken.sample_rate_hz, seed=0)  # preparation is not per frame
    for run in range(runs):
        renderer = backend.open(avatar, size, size, spoken.fps, spoken.sample_rate_hz, seed=run)
        for drive in spoken.drives:
            started = time.thread_time()
            renderer.render_frame(drive)
            per_frame.append(time.thread_time() - started)
    return per_frame


def lip_sync(backend: PhotoBackend, avatar: str, spoken: SpokenText):
    renderer = backend.open(avatar, 512, 512, spoken.fps, spoken.sample_rate_hz, seed=1)
    frames, track = [], []
    for drive in spoken.drives:
        frames.append(i420_to_rgb(renderer.render_frame(drive), 512, 512))
        track.append(renderer.tracker.state.shape.open)
    envelope = spoken.envelope()
    loud = np.nonzero(envelope > 0.01)[0]
    times = np.arange(len(frames)) / spoken.fps
    return measure(mouth_openings(frames), envelope, times, (times[loud[0]], times[loud[-1]] + 1 / spoken.fps),
                   np.array(track))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--avatar", default="astronaut")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    spoken = asyncio.run(speak(TEXT))
    media_s = len(spoken.drives) / spoken.fps
    photo = PhotoBackend()  # sets one OpenCV thread
    rows = []
    for label, backend, avatar in (("photo", photo, args.avatar), ("drawn", DrawnBackend(), "drawn")):
        for size in (512, 720):
            times = time_renderer(backend, avatar, size, spoken, args.runs)
            rtf = sum(times) / (media_s * args.runs)
            rows.append((f"{label} ({avatar}) {size}x{size}", statistics.median(times), percentile(times, 0.95), rtf))
    sync = lip_sync(photo, args.avatar, spoken)

    print(f"\nPhoto-avatar renderer benchmark (one core of {os.cpu_count()}, 25 fps, {media_s:.1f} s of speech "
          f"and idle, {args.runs} runs)\n")  # fmt: skip
    print(f"| {'renderer':28s} | {'ms/frame median':>15s} | {'p95':>6s} | {'RTF':>6s} | {'x real time':>11s} |")
    print(f"|{'-' * 30}|{'-' * 17}|{'-' * 8}|{'-' * 8}|{'-' * 13}|")
    for name, median, p95, rtf in rows:
        print(f"| {name:28s} | {median * 1000:15.1f} | {p95 * 1000:6.1f} | {rtf:6.3f} | {1 / rtf:11.1f} |")
    print(f"\n| {'lip sync (landmark model on the output frames, 512x512)':58s} | {'value':>8s} |")
    print(f"|{'-' * 60}|{'-' * 10}|")
    onset_ms = None if sync.mouth_onset_s is None else (sync.mouth_onset_s - sync.audio_onset_s) * 1000
    for name, value in (
        ("correlation: mouth opening vs speech envelope (r)", sync.envelope_correlation),
        ("correlation: mouth opening vs viseme track (r)", sync.track_correlation),
        ("mouth opening in silence, p95 (x eye distance)", sync.silence_opening),
        ("mouth opening in speech, p90 (x eye distance)", sync.speech_opening),
        ("mouth onset - audio onset (ms)", onset_ms),
    ):
        print(f"| {name:58s} | {'-' if value is None else f'{value:8.3f}':>8s} |")


if __name__ == "__main__":
    main()
