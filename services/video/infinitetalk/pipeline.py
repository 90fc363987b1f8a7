"""One InfiniteTalk chunk: flow-matching sampling of 81 frames conditioned on the reference picture, the previous
chunk's last frames (motion context) and the chunk's audio windows, as upstream `InfiniteTalkPipeline.generate`
does per clip, but one chunk per call so frames can be streamed as each chunk is decoded.

Per chunk (upstream wan/multitalk.py): the reference picture followed by 80 blank frames is VAE-encoded and prefixed
with a 4-channel mask that marks the first frame as given (20 conditioning channels); the motion frames (the
reference for the first chunk, the last 9 generated frames after) are VAE-encoded and written over the first latent
frames before every model call; timesteps run from 1000 to 0 in `steps` steps, warped by `shift`; guidance combines
three passes: `uncond + text_scale * (cond - no_text) + audio_scale * (no_text - uncond)` (no text = the negative
prompt's embedding; no audio = zero audio features). Euler steps on the predicted velocity. Optional TeaCache
(`SamplingOptions.teacache_threshold`) skips the transformer blocks of steps whose timestep modulation barely changed;
its per-branch state is reset at the start of every chunk.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from services.video.infinitetalk.components import Components
from services.video.infinitetalk.speedups import DEFAULT_WARMUP_STEPS, TeaCache, coefficients_for

NUM_TIMESTEPS = 1000
LATENT_CHANNELS = 16
VAE_TIME = 4
VAE_SPACE = 8


class Cancelled(Exception):
    """The chunk was abandoned between two sampling steps (an interrupt)."""


@dataclass(frozen=True)
class SamplingOptions:
    """Upstream defaults: 40 steps, text guidance 5, audio guidance 4, shift 7 at 480p (11 at 720p). With the
    lightx2v / FusionX LoRA merged: 4-8 steps, text guidance 1, audio guidance 2."""

    steps: int = 40
    text_guidance: float = 5.0
    audio_guidance: float = 4.0
    shift: float = 7.0
    seed: int = 0
    # TeaCache step skipping (speedups.TeaCache): 0 = off; upstream suggests 0.2 (higher skips more). The first
    # `teacache_warmup_steps` steps and the last step always run the transformer blocks.
    teacache_threshold: float = 0.0
    teacache_warmup_steps: int = DEFAULT_WARMUP_STEPS


def timesteps(options: SamplingOptions) -> list[float]:
    """The sampling schedule: linspace(1000, 1, steps) then 0, each warped by shift*t / (1 + (shift-1)*t)."""
    raw = [*np.linspace(NUM_TIMESTEPS, 1, options.steps, dtype=np.float32).tolist(), 0.0]
    out = []
    for t in raw:
        x = t / NUM_TIMESTEPS
        out.append(options.shift * x / (1 + (options.shift - 1) * x) * NUM_TIMESTEPS)
    return out


def first_frame_mask(frames: int, latent_h: int, latent_w: int) -> torch.Tensor:
    """[1, 4, latent_frames, h, w]: 1 where the frame is given (the first), folded 4 frames per latent frame."""
    mask = torch.ones(1, frames, latent_h, latent_w)
    mask[:, 1:] = 0
    mask = torch.cat([mask[:, :1].repeat_interleave(VAE_TIME, dim=1), mask[:, 1:]], dim=1)
    return mask.view(1, mask.shape[1] // VAE_TIME, VAE_TIME, latent_h, latent_w).transpose(1, 2)


@dataclass
class Reference:
    """A session's fixed conditioning: the portrait (pixels and CLIP embedding) and the prompt embeddings."""

    pixels: torch.Tensor  # [1, 3, 1, H, W] in [-1, 1]
    image: torch.Tensor  # CLIP embedding
    text: torch.Tensor  # umT5 embedding of the prompt
    text_null: torch.Tensor  # ... of the negative prompt


def to_pixels(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> [1, 3, 1, H, W] in [-1, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1.0


def to_rgb(video: torch.Tensor) -> np.ndarray:
    """[1, 3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8."""
    return ((video[0].permute(1, 2, 3, 0).float().cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


class ChunkGenerator:
    """Resident models; generates one chunk at a time (serialised: one GPU, one chunk in flight)."""

    def __init__(self, transformer: torch.nn.Module, components: Components, options: SamplingOptions) -> None:
        self.transformer = transformer.eval().requires_grad_(False)
        self.components = components
        self.options = options
        self.lock = threading.Lock()
        self.device = components.device
        self.dtype = next(transformer.parameters()).dtype
        self.teacache = (
            TeaCache(options.teacache_threshold, options.steps, warmup_steps=options.teacache_warmup_steps)
            if options.teacache_threshold > 0
            else None
        )

    def reference(self, rgb: np.ndarray, prompt: str, negative_prompt: str) -> Reference:
        c = self.components
        return Reference(to_pixels(rgb), c.encode_image(rgb), c.encode_text(prompt), c.encode_text(negative_prompt))

    @torch.no_grad()
    def generate(
        self,
        reference: Reference,
        audio: torch.Tensor,
        motion: torch.Tensor | None,
        frames: int = 81,
        seed: int = 0,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> torch.Tensor:
        """`audio`: [frames, 5, blocks, channels] windows of this chunk; `motion`: [1, 3, m, H, W] in [-1, 1] (the
        previous chunk's last frames) or None for the first chunk. Returns [1, 3, frames, H, W] in [-1, 1]."""
        with self.lock:
            return self._generate(reference, audio, motion, frames, seed, cancelled)

    def _generate(self, reference, audio, motion, frames, seed, cancelled) -> torch.Tensor:
        c = self.components
        options = self.options
        _, _, _, height, width = reference.pixels.shape
        lat_f, lat_h, lat_w = (frames - 1) // VAE_TIME + 1, height // VAE_SPACE, width // VAE_SPACE
        blank = torch.zeros(1, 3, frames - 1, height, width)
        y = c.encode_video(torch.cat([reference.pixels, blank], dim=2))
        y = torch.cat([first_frame_mask(frames, lat_h, lat_w).to(y), y], dim=1).to(self.device, self.dtype)
        motion_latents = c.encode_video(reference.pixels if motion is None else motion).to(self.device)
        given = motion_latents.shape[2]
        generator = torch.Generator(device="cpu").manual_seed(seed)
        latent = torch.randn(1, LATENT_CHANNELS, lat_f, lat_h, lat_w, generator=generator).to(self.device)
        audio = audio[None].to(self.device, self.dtype)
        silence = torch.zeros_like(audio)
        steps = timesteps(options)
        if self.teacache is not None:  # a chunk starts from noise: nothing from the previous chunk may be re-used
            self.teacache.reset(len(steps) - 1, coefficients_for(height, width))
        use_text = not math.isclose(options.text_guidance, 1.0)
        for i in range(len(steps) - 1):
            if cancelled():
                raise Cancelled
            latent[:, :, :given] = motion_latents
            x = torch.cat([latent.to(self.dtype), y], dim=1)
            t = torch.tensor([steps[i]], device=self.device)
            cond = self._predict(x, t, reference.text, reference.image, audio, ("cond", i))
            if use_text:
                no_text = self._predict(x, t, reference.text_null, reference.image, audio, ("no_text", i))
                uncond = self._predict(x, t, reference.text_null, reference.image, silence, ("uncond", i))
                velocity = (
                    uncond + options.text_guidance * (cond - no_text) + options.audio_guidance * (no_text - uncond)
                )
            else:
                no_audio = self._predict(x, t, reference.text, reference.image, silence, ("no_audio", i))
                velocity = no_audio + options.audio_guidance * (cond - no_audio)
            latent = latent - velocity.float() * ((steps[i] - steps[i + 1]) / NUM_TIMESTEPS)
        latent[:, :, :given] = motion_latents
        return c.decode_video(latent)

    def _predict(self, x, t, text, image, audio, branch: tuple[str, int]) -> torch.Tensor:
        """One model call; `branch` (CFG branch name, step index) keys the TeaCache state when it is on."""
        if self.teacache is None:
            return self.transformer(x, t, text.to(self.dtype), image.to(self.dtype), audio)
        cache = self.teacache.bind(*branch)
        return self.transformer(x, t, text.to(self.dtype), image.to(self.dtype), audio, block_cache=cache)
