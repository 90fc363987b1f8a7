"""Photo-avatar renderer benchmark: per-frame cost on one core at 512x512 and 720x720 (25 fps), and lip sync.

The renderer runs in this process, pinned to one CPU with one OpenCV thread. For each size it times the frames of a
spoken sentence (offline voice, phoneme marks) and of one idle loop, and prints the render time per frame (thread
CPU time, median and p95 over --runs passes) separately for idle frames (no voice, the renderer at rest: what the
idle loop is made of, rendered once per avatar) and speaking frames (the voice's frames and the few after it while
the mouth settles), with the real-time factor over the sentence (compute s / media s; below 1 is faster than real
time) and how many times real time that is. Lip sync is measured as the tests do: the landmark model reads the mouth
opening of every output frame, correlated with the speech envelope and with the renderer's viseme track; the mouth
onset is compared with the audio onset.

Usage: .venv/bin/python -m bench.photo [--runs 3] [--avatar astronaut]   (from the repo root)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from bench.stats import percentile
from infinitetalk_live.speech_drives import SpokenText, speak
from services.video.backend import Drive, IdleLoop
from services.video.drawn import DrawnBackend
from services.video.idle import loop_frames
from services.video.photo.backend import PhotoBackend
from services.video.photo.lipsync import measure, mouth_openings
from services.video.pixels import i420_to_rgb
from services.video.visemes import REST

CHUNK_FRAMES = 12  # the idle loop is a whole number of 480 ms chunks
TEXT = (
    "Hello there! I am a photo that talks. Every word you hear moves my lips, my jaw and my cheeks, "
    "and between sentences I blink and breathe."
)


@dataclass
class Timings:
    idle: list[float] = field(default_factory=list)  # thread CPU seconds per frame
    speaking: list[float] = field(default_factory=list)
    sentence_s: float = 0.0  # total over the sentence passes


def time_renderer(backend, avatar: str, size: int, spoken: SpokenText, runs: int) -> Timings:
    """Per-frame thread CPU seconds over `runs` passes of the sentence and of one idle loop (a fresh renderer each
    pass), split into idle and speaking frames."""
    loop = IdleLoop(loop_frames(spoken.fps, CHUNK_FRAMES))
    timings = Timings()
    renderer = backend.open(avatar, size, size, spoken.fps, spoken.sample_rate_hz, loop)  # preparation, compiling
    renderer.render_frame(Drive(0))
    idle_drives = [Drive(index) for index in range(loop.frames)]
    for run in range(runs):
        renderer = backend.open(avatar, size, size, spoken.fps, spoken.sample_rate_hz, IdleLoop(loop.frames, 12 * run))
        for drive in spoken.drives:
            started = time.thread_time()
            renderer.render_frame(drive)
            elapsed = time.thread_time() - started
            timings.sentence_s += elapsed
            state = renderer.tracker.state
            at_rest = drive.pcm is None and not drive.phonemes and state.shape == REST and state.energy == 0.0
            (timings.idle if at_rest else timings.speaking).append(elapsed)
        renderer = backend.open(avatar, size, size, spoken.fps, spoken.sample_rate_hz, loop)
        for drive in idle_drives:
            started = time.thread_time()
            renderer.render_frame(drive)
            timings.idle.append(time.thread_time() - started)
    return timings


def lip_sync(backend: PhotoBackend, avatar: str, spoken: SpokenText):
    renderer = backend.open(
        avatar, 512, 512, spoken.fps, spoken.sample_rate_hz, IdleLoop(loop_frames(spoken.fps, CHUNK_FRAMES))
    )
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
            t = time_renderer(backend, avatar, size, spoken, args.runs)
            rtf = t.sentence_s / (media_s * args.runs)
            rows.append((f"{label} ({avatar}) {size}x{size}", t, rtf))

    print(f"\nPhoto-avatar renderer benchmark (one core of {os.cpu_count()}, 25 fps, {media_s:.1f} s of speech "
          f"and idle, {args.runs} runs)\n")  # fmt: skip
    print("ms per frame (thread CPU time); idle: at rest without voice (the idle loop); speaking: the voice's frames")
    print("and the frames after it until the mouth is at rest; RTF over the sentence.\n")
    print(f"| {'renderer':28s} | {'idle median':>11s} | {'idle p95':>8s} | {'speaking median':>15s} "
          f"| {'speaking p95':>12s} | {'RTF':>6s} | {'x real time':>11s} |")  # fmt: skip
    print(f"|{'-' * 30}|{'-' * 13}|{'-' * 10}|{'-' * 17}|{'-' * 14}|{'-' * 8}|{'-' * 13}|")
    for name, t, rtf in rows:
        print(f"| {name:28s} | {statistics.median(t.idle) * 1000:11.2f} | {percentile(t.idle, 0.95) * 1000:8.2f} "
              f"| {statistics.median(t.speaking) * 1000:15.2f} | {percentile(t.speaking, 0.95) * 1000:12.2f} "
              f"| {rtf:6.3f} | {1 / rtf:11.1f} |")  # fmt: skip
    sync = lip_sync(photo, args.avatar, spoken)
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
