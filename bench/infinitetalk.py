"""InfiniteTalk backend benchmark: chunk generation speed, time to first frame and peak memory.

Runs the real streaming renderer (services/video/infinitetalk) over a spoken utterance long enough for `--chunks`
chunks and prints a table: frames/s of new output, seconds per chunk (first and later: the first has no motion
context to encode), time from the first speech drive to the first speech frame, and peak memory (CUDA peak
allocation on a GPU; the process's peak RSS on CPU).

Without weights it builds the tiny random model (same architecture, official layouts, real loaders):
    .venv/bin/python -m bench.infinitetalk --tiny --size 64 --steps 2
With the weights (see README "Running with InfiniteTalk on a GPU"), set the INFINITETALK_* paths and run:
    .venv/bin/python -m bench.infinitetalk --size 480 --steps 8 --device cuda [--dtype fp8] [--teacache 0.2]
On N GPUs of one node (sequence parallelism; rank 0 prints the table):
    INFINITETALK_SEQUENCE_PARALLEL=1 torchrun --nproc-per-node N -m bench.infinitetalk --size 480 --steps 8
`--tiny --size 480` (or 720) runs the tiny model at the real sequence length (81 frames of 480x480: 21 latent frames
of 30x30 patches), which measures the attention-length and VAE cost of the full shapes on a GPU without the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time

import numpy as np
import torch

from infinitetalk_live.speech_drives import speak
from services.video.backend import Drive, IdleLoop
from services.video.infinitetalk import loader, schedule
from services.video.photo.backend import PhotoBackend


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("INFINITETALK_DEVICE", args.device)
    if args.tiny:
        os.environ["INFINITETALK_TINY"] = "1"
    os.environ["INFINITETALK_STEPS"] = str(args.steps)
    if args.dtype:
        os.environ["INFINITETALK_DTYPE"] = args.dtype
    if args.teacache:
        os.environ["INFINITETALK_TEACACHE"] = str(args.teacache)
    if loader.parallel_rank() > 0:
        loader.follow_from_env()
        return
    backend = loader.backend_from_env(PhotoBackend())
    renderer = backend.open("astronaut-infinitetalk", args.size, args.size, 25, 24000, IdleLoop(240))
    frames_needed = schedule.FRAME_NUM + (args.chunks - 1) * (schedule.FRAME_NUM - schedule.MOTION_FRAME)
    text = (
        "Hello there. " + "This sentence keeps the avatar talking for a while so that several chunks are needed. " * 6
    )
    spoken = await speak(text)
    voiced = [d for d in spoken.drives if d.pcm is not None]
    while len(voiced) < frames_needed:
        voiced += voiced
    drives = [Drive(i, "bench", d.pcm, ()) for i, d in enumerate(voiced[:frames_needed])] + [Drive(frames_needed)]

    async def feed():
        for drive in drives:
            yield drive

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    first_frame_s = None
    chunk_done: list[float] = []
    seen_chunks = 0
    async for _frame in renderer.render(feed()):
        if first_frame_s is None:
            first_frame_s = time.perf_counter() - started
        if renderer.chunks_generated > seen_chunks:
            seen_chunks = renderer.chunks_generated
            chunk_done.append(time.perf_counter() - started)
    total_s = time.perf_counter() - started
    per_chunk = np.diff([0.0, *chunk_done]).tolist()
    new_frames = frames_needed
    model = "tiny model" if args.tiny else "official weights"
    shape = f"{args.size}x{args.size}, {args.steps} steps, {len(per_chunk)} chunks of {schedule.FRAME_NUM} frames"
    print(f"\nInfiniteTalk backend benchmark ({model}, {args.device}, {shape})\n")
    print(f"| {'measure':52s} | {'value':>10s} |")
    print(f"|{'-' * 54}|{'-' * 12}|")
    for name, value in (
        ("new frames per second (output / compute)", new_frames / total_s),
        ("real-time factor (compute s / media s)", total_s / (new_frames / 25)),
        ("seconds for the first chunk", per_chunk[0]),
        ("seconds per later chunk (median)", statistics.median(per_chunk[1:]) if len(per_chunk) > 1 else float("nan")),
        ("time to first speech frame (s)", first_frame_s or float("nan")),
        ("peak memory (GiB)", peak_memory_gib(args.device)),
    ):
        print(f"| {name:52s} | {value:10.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model (no weights needed)")
    parser.add_argument("--size", type=int, default=64, help="square output size (multiple of 16)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="", help="bf16, fp16, fp32 or fp8 (default: INFINITETALK_DTYPE)")
    parser.add_argument("--teacache", type=float, default=0.0, help="TeaCache threshold (0: off; upstream: 0.2)")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
