"""The InfiniteTalk renderer backend: the model animates speech chunk by chunk; idle frames come from the CPU photo
renderer, so the model never runs while nobody speaks.

Streaming: a speech run is the consecutive drives of one utterance. Chunk k of a run covers its audio frames
[72k, 72k + 81) (schedule.plan); it is generated as soon as the run has that much audio (or has ended: then the
last chunk is padded and trimmed as upstream does), and its new frames are yielded at once, in order, each on its
drive's frame index. The renderer therefore holds up to one chunk of drives before it emits (`lookahead_frames`).
Between chunks the models stay resident. An interrupt (reset) cancels the chunk being sampled at its next step;
frames of the cut run that are still owed (before the cut) are rendered by the photo renderer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from services.video.backend import (
    AvatarInfo,
    AvatarRenderer,
    Drive,
    IdleLoop,
    PortraitBackend,
    RenderedFrame,
    StaleFilter,
)
from services.video.idle import avatar_seed
from services.video.infinitetalk import schedule
from services.video.infinitetalk.audio import AudioEncoder, frame_windows
from services.video.infinitetalk.pipeline import Cancelled, ChunkGenerator, Reference, to_rgb
from services.video.photo.backend import PhotoBackend
from services.video.photo.renderer import PhotoRenderer
from services.video.pixels import rgb_to_i420

SUFFIX = "-infinitetalk"
DEFAULT_PROMPT = "A person is talking to the camera, natural head movements, clear lip movements, studio lighting."
DEFAULT_FPS_ESTIMATE = 2.0  # frames/s assumed before anything was measured (a 14B model on one GPU is slower)
NEGATIVE_PROMPT_DEFAULT = "static, blurred, low quality, deformed face, extra limbs, subtitles, watermark"


@dataclass
class _Run:
    """The drives of one utterance that are not yet all emitted."""

    utterance_id: str
    drives: list[Drive] = field(default_factory=list)
    ended: bool = False
    next_chunk: int = 0
    emitted: int = 0  # frames of the run already yielded
    tail: torch.Tensor | None = None  # the last motion_frame generated frames, [1, 3, m, H, W]

    def pcm(self, samples_per_frame: int) -> np.ndarray:
        parts = [d.pcm if d.pcm is not None else np.zeros(samples_per_frame, np.int16) for d in self.drives]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


class InfiniteTalkRenderer(AvatarRenderer):
    def __init__(
        self,
        generator: ChunkGenerator,
        audio: AudioEncoder,
        idle: PhotoRenderer,
        reference: Reference,
        sample_rate_hz: int,
        seed: int,
        frame_num: int = schedule.FRAME_NUM,
        motion_frame: int = schedule.MOTION_FRAME,
    ) -> None:
        self.width, self.height, self.fps = idle.width, idle.height, idle.fps
        self.generator = generator
        self.audio = audio
        self.idle = idle
        self.reference = reference
        self.sample_rate_hz = sample_rate_hz
        self.seed = seed
        self.frame_num = frame_num
        self.motion_frame = motion_frame
        self._stale = StaleFilter()
        self._cancel = threading.Event()
        self._fps_measured = 0.0
        self.chunks_generated = 0
        self.pace: dict[tuple[int, int], float] = {}  # shared with the backend: the last pace per size
        self.pace_estimate = DEFAULT_FPS_ESTIMATE

    @property
    def lookahead_frames(self) -> int:
        return self.frame_num

    @property
    def settle_frames(self) -> int:
        """After speech, idle frames come from the photo renderer, which settles like the photo avatar."""
        return self.idle.settle_frames

    @property
    def frames_per_second_capacity(self) -> float:
        """This stream's measured pace; before its first chunk, the backend's last measurement at this size, or
        the configured estimate."""
        return self._fps_measured or self.pace.get((self.width, self.height), self.pace_estimate)

    async def reset(self, from_frame_index: int, epoch: int) -> None:
        self._stale.add(from_frame_index, epoch)
        self._cancel.set()  # the chunk in progress (if any) stops at its next sampling step
        await self.idle.reset(from_frame_index, epoch)

    async def render(self, drives: AsyncIterator[Drive]) -> AsyncIterator[RenderedFrame]:
        run: _Run | None = None
        async for drive in drives:
            if self._stale.is_stale(drive.frame_index, drive.epoch):
                continue
            if run is not None:
                run.drives = [d for d in run.drives if not self._stale.is_stale(d.frame_index, d.epoch)]
                if self._cancel.is_set():  # a reset cut the run: what it still owes is drawn by the photo renderer
                    self._cancel.clear()
                    for owed in run.drives[run.emitted :]:
                        yield await self._idle_frame(owed)
                    run = None
            speech = bool(drive.utterance_id)
            if run is not None and (not speech or drive.utterance_id != run.utterance_id):
                run.ended = True
                async for frame in self._advance(run):
                    yield frame
                run = None
            if not speech:
                yield await self._idle_frame(drive)
                continue
            if run is None:
                run = _Run(drive.utterance_id)
            run.drives.append(drive)
            async for frame in self._advance(run):
                yield frame
        if run is not None:
            run.ended = True
            async for frame in self._advance(run):
                yield frame

    async def _idle_frame(self, drive: Drive) -> RenderedFrame:
        return await asyncio.to_thread(self._render_idle, drive)

    def _render_idle(self, drive: Drive) -> RenderedFrame:
        started, cpu_started = time.perf_counter(), time.thread_time()
        data = self.idle.render_frame(drive)
        cpu_s = time.thread_time() - cpu_started
        return RenderedFrame(drive.frame_index, drive.epoch, data, time.perf_counter() - started, cpu_s)

    async def _advance(self, run: _Run) -> AsyncIterator[RenderedFrame]:
        """Generates and yields every chunk of `run` whose audio is complete."""
        while True:
            total = len(run.drives)
            if run.ended:
                chunks = schedule.plan(total, self.frame_num, self.motion_frame)
                if run.next_chunk >= len(chunks):
                    return
                chunk = chunks[run.next_chunk]
            else:
                chunk = schedule.chunk_at(run.next_chunk, None, self.frame_num, self.motion_frame)
                if total < chunk.audio_end:
                    return  # not enough audio yet
            started = time.perf_counter()
            self._cancel.clear()
            try:
                video = await asyncio.to_thread(self._generate, run, chunk)
            except Cancelled:
                return  # render() sees the cancel flag and settles the run
            elapsed = time.perf_counter() - started
            self.chunks_generated += 1
            frames = to_rgb(video)
            new = frames[chunk.skip : chunk.skip + chunk.emitted]
            self._fps_measured = len(new) / max(elapsed, 1e-6)
            self.pace[(self.width, self.height)] = self._fps_measured
            run.tail = video[:, :, -self.motion_frame :]
            run.next_chunk += 1
            per_frame = elapsed / max(1, len(new))
            for offset, rgb in enumerate(new):
                drive = run.drives[chunk.emit_start + offset]
                if self._stale.is_stale(drive.frame_index, drive.epoch):
                    continue
                run.emitted = chunk.emit_start + offset + 1
                yield RenderedFrame(drive.frame_index, drive.epoch, self._to_i420(rgb), per_frame)

    def _generate(self, run: _Run, chunk: schedule.Chunk) -> torch.Tensor:
        samples_per_frame = self.sample_rate_hz // self.fps
        pcm = run.pcm(samples_per_frame)
        if run.ended:
            features, _ = self.audio.encode_utterance(
                pcm, self.sample_rate_hz, self.fps, self.frame_num, self.motion_frame
            )
        else:
            features = self.audio.encode(pcm, self.sample_rate_hz, self.fps)
        windows = frame_windows(features, chunk.audio_start, chunk.audio_end)
        motion = None if chunk.index == 0 else run.tail
        return self.generator.generate(
            self.reference,
            windows,
            motion,
            frames=self.frame_num,
            seed=self.seed + chunk.index,
            cancelled=self._cancel.is_set,
        )

    def _to_i420(self, rgb: np.ndarray) -> bytes:
        if rgb.shape[:2] != (self.height, self.width):
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return rgb_to_i420(np.ascontiguousarray(rgb))

    async def close(self) -> None:
        self._cancel.set()


class InfiniteTalkBackend(PortraitBackend):
    """InfiniteTalk avatars: each photo avatar (built-in or uploaded) animated by the model while it speaks."""

    name = "infinitetalk"

    def __init__(
        self,
        generator: ChunkGenerator,
        audio: AudioEncoder,
        photo: PhotoBackend,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = NEGATIVE_PROMPT_DEFAULT,
        frame_num: int = schedule.FRAME_NUM,
        motion_frame: int = schedule.MOTION_FRAME,
        fps_estimate: float = DEFAULT_FPS_ESTIMATE,
    ) -> None:
        self.generator = generator
        self.audio = audio
        self.photo = photo
        self.fps_estimate = fps_estimate
        self.pace: dict[tuple[int, int], float] = {}
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.frame_num = frame_num
        self.motion_frame = motion_frame
        self._references: dict[tuple[str, int, int], Reference] = {}
        self._lock = threading.Lock()

    def avatars(self) -> list[AvatarInfo]:
        return [
            AvatarInfo(a.name + SUFFIX, a.description + "; animated by InfiniteTalk", self.name)
            for a in self.photo.avatars()
        ]

    def prepare_portrait(self, data: bytes) -> AvatarInfo:
        info = self.photo.prepare_portrait(data)
        return AvatarInfo(info.name, info.description, self.name)

    def loop_key(self, avatar: str) -> str:
        # Idle frames are the photo renderer's: the same loop as the photo avatar's.
        return self.photo.loop_key(avatar.removesuffix(SUFFIX))

    def open(
        self, avatar: str, width: int, height: int, fps: int, sample_rate_hz: int, loop: IdleLoop
    ) -> AvatarRenderer:
        photo_avatar = avatar.removesuffix(SUFFIX)
        idle = self.photo.open(photo_avatar, width, height, fps, sample_rate_hz, loop)
        seed = avatar_seed(photo_avatar) & 0x7FFFFFFF  # the model's noise: per avatar, like its idle loop
        key = (photo_avatar, width, height)
        with self._lock:
            reference = self._references.get(key)
        if reference is None:
            picture = idle.warp.rig.image
            reference = self.generator.reference(picture, self.prompt, self.negative_prompt)
            with self._lock:
                self._references[key] = reference
        renderer = InfiniteTalkRenderer(
            self.generator, self.audio, idle, reference, sample_rate_hz, seed, self.frame_num, self.motion_frame
        )
        renderer.pace = self.pace
        renderer.pace_estimate = self.fps_estimate
        return renderer
