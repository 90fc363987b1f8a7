"""The InfiniteTalk backend's streaming loop on CPU with tiny random models saved in the official layouts and loaded
by the real loaders: chunk by chunk output, idle without the model, short utterances, interrupts."""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch

from infinitetalk_live.speech_drives import SpokenText, speak
from services.video.backend import Drive, IdleLoop
from services.video.infinitetalk import schedule
from services.video.infinitetalk.audio import AudioEncoder, save_tiny_wav2vec2
from services.video.infinitetalk.backend import InfiniteTalkBackend, InfiniteTalkRenderer
from services.video.infinitetalk.checkpoint import load_transformer
from services.video.infinitetalk.components import Components, save_tiny_components
from services.video.infinitetalk.model import TINY
from services.video.infinitetalk.pipeline import ChunkGenerator, SamplingOptions, first_frame_mask, timesteps
from services.video.infinitetalk.tiny import save_tiny_checkpoints
from services.video.photo.backend import PhotoBackend

SIZE = 64
LOOP = IdleLoop(240)


@pytest.fixture(scope="module")
def backend() -> InfiniteTalkBackend:
    root = Path(tempfile.mkdtemp(prefix="infinitetalk-tiny-"))
    components = Components.load(save_tiny_components(root / "wan-diffusers", TINY.text_dim, TINY.image_dim))
    audio = AudioEncoder(save_tiny_wav2vec2(root / "chinese-wav2vec2-base"))
    dit_dir, infinitetalk_file = save_tiny_checkpoints(root / "weights")
    transformer = load_transformer(dit_dir, infinitetalk_file, TINY, dtype=torch.float32)
    return InfiniteTalkBackend(ChunkGenerator(transformer, components, SamplingOptions(steps=2)), audio, PhotoBackend())


@pytest.fixture(scope="module")
def spoken() -> SpokenText:
    return asyncio.run(speak("Hello there. This sentence is long enough to need a second chunk of video frames."))


def speech_drives(spoken: SpokenText, start: int, count: int, utterance: str = "u1", epoch: int = 0) -> list[Drive]:
    voiced = [d for d in spoken.drives if d.pcm is not None]
    assert len(voiced) >= count
    return [Drive(start + i, utterance, d.pcm, (), epoch) for i, d in enumerate(voiced[:count])]


async def run(renderer: InfiniteTalkRenderer, drives: list[Drive]) -> list[tuple[int, int, bytes]]:
    """(frame index, chunks generated when it came out, frame) for each frame the renderer yields."""

    async def feed() -> AsyncIterator[Drive]:
        for drive in drives:
            yield drive

    return [(f.frame_index, renderer.chunks_generated, f.data) async for f in renderer.render(feed())]


def test_sampling_schedule_and_first_frame_mask_follow_upstream() -> None:
    steps = timesteps(SamplingOptions(steps=4, shift=7.0))
    assert steps[0] == pytest.approx(1000.0) and steps[-1] == 0.0 and len(steps) == 5
    # shift 7 keeps the schedule at high noise for longer: t=667 (linspace) -> 7x/(1+6x) with x=0.667.
    assert steps[1] == pytest.approx(7 * 0.667 / (1 + 6 * 0.667) * 1000, rel=1e-3)
    mask = first_frame_mask(81, 2, 2)
    assert mask.shape == (1, 4, 21, 2, 2)
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all(), "only the first (given) frame is marked"


def test_a_long_utterance_streams_chunk_by_chunk_between_idle_frames(backend, spoken, monkeypatch) -> None:
    renderer = backend.open("astronaut-infinitetalk", SIZE, SIZE, 25, 24000, LOOP)
    calls: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
    generate = renderer.generator.generate

    def spy(reference, audio, motion, **kwargs):
        video = generate(reference, audio, motion, **kwargs)
        calls.append((audio, motion, video))
        return video

    monkeypatch.setattr(renderer.generator, "generate", spy)
    drives = [Drive(i) for i in range(5)] + speech_drives(spoken, 5, 100) + [Drive(105 + i) for i in range(5)]
    out = asyncio.run(run(renderer, drives))
    # Upstream's overlap: chunk 0 starts from the portrait alone; chunk 1 re-uses chunk 0's last 9 frames as motion.
    assert calls[0][1] is None and calls[1][1] is not None
    torch.testing.assert_close(calls[1][1], calls[0][2][:, :, -schedule.MOTION_FRAME :])
    assert [audio.shape[0] for audio, _, _ in calls] == [schedule.FRAME_NUM] * 2, "81 frames of audio windows each"
    assert [index for index, _, _ in out] == list(range(110)), "one frame per drive, in order"
    assert all(len(data) == SIZE * SIZE * 3 // 2 for _, _, data in out)
    chunks = schedule.plan(100)
    assert renderer.chunks_generated == len(chunks) == 2, "the model ran once per chunk, never for idle frames"
    by_frame = {index: generated for index, generated, _ in out}
    assert all(by_frame[i] == 0 for i in range(5)), "idle frames come before any chunk, without the model"
    # Chunk 0's 81 frames are out as soon as it is decoded, before chunk 1 runs; chunk 1 brings the rest.
    assert all(by_frame[5 + i] == 1 for i in range(chunks[0].emit_start, chunks[0].emit_end))
    assert all(by_frame[5 + i] == 2 for i in range(chunks[1].emit_start, chunks[1].emit_end))
    assert renderer.frames_per_second_capacity > 0
    speech = {index: data for index, _, data in out if 5 <= index < 105}
    idle = {index: data for index, _, data in out if index < 5}
    assert speech[5] != idle[4], "speech frames come from the model"


def test_a_short_utterance_is_one_padded_chunk_trimmed_to_its_length(backend, spoken) -> None:
    renderer = backend.open("astronaut-infinitetalk", SIZE, SIZE, 25, 24000, LOOP)
    drives = speech_drives(spoken, 0, 20) + [Drive(20 + i) for i in range(3)]
    out = asyncio.run(run(renderer, drives))
    assert [index for index, _, _ in out] == list(range(23))
    assert renderer.chunks_generated == 1


def test_an_interrupt_mid_chunk_cancels_it_and_the_next_utterance_plays(backend, spoken) -> None:
    renderer = backend.open("astronaut-infinitetalk", SIZE, SIZE, 25, 24000, LOOP)

    async def scenario() -> list[tuple[int, int]]:
        queue: asyncio.Queue[Drive | None] = asyncio.Queue()

        async def feed() -> AsyncIterator[Drive]:
            while (drive := await queue.get()) is not None:
                yield drive

        out: list[tuple[int, int]] = []

        async def consume() -> None:
            async for frame in renderer.render(feed()):
                out.append((frame.frame_index, frame.epoch))

        consumer = asyncio.create_task(consume())
        for drive in speech_drives(spoken, 0, 90):  # enough for chunk 0 to start sampling
            queue.put_nowait(drive)
        await asyncio.sleep(0.3)  # chunk 0 is being sampled now
        await renderer.reset(40, epoch=1)  # the session cuts the utterance at frame 40
        for drive in [Drive(40 + i, epoch=1) for i in range(5)] + speech_drives(spoken, 45, 20, "u2", epoch=1):
            queue.put_nowait(drive)
        queue.put_nowait(None)
        await asyncio.wait_for(consumer, 120)
        return out

    out = asyncio.run(scenario())
    assert [index for index, _ in out] == list(range(65)), "frames before the cut, then the new epoch, in order"
    assert all(epoch == 0 for index, epoch in out if index < 40) and all(epoch == 1 for index, epoch in out[40:])
    assert renderer.chunks_generated == 1, "the cut chunk was abandoned; only the second utterance's chunk ran"


def test_idle_frames_match_the_photo_renderer(backend) -> None:
    renderer = backend.open("astronaut-infinitetalk", SIZE, SIZE, 25, 24000, LOOP)
    photo = PhotoBackend().open("astronaut", SIZE, SIZE, 25, 24000, LOOP)
    out = asyncio.run(run(renderer, [Drive(i) for i in range(3)]))
    assert [data for _, _, data in out] == [photo.render_frame(Drive(i)) for i in range(3)]
    assert np.frombuffer(out[0][2], np.uint8).std() > 5, "a picture, not a blank"


def test_the_benchmark_runs_on_the_tiny_model() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench.infinitetalk", "--tiny", "--size", "64", "--steps", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line.split("|") for line in done.stdout.splitlines() if re.match(r"\| [a-z].*\| +[\d.]+ \|$", line)]
    rows = {cells[1].strip(): float(cells[2]) for cells in table}
    assert rows["new frames per second (output / compute)"] > 0
    assert 0 < rows["time to first speech frame (s)"] <= rows["seconds for the first chunk"] + 1
