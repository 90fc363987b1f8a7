"""Building the InfiniteTalk backend from configuration (environment variables of the video service).

Weights are never downloaded: every path points at files the operator fetched beforehand (see the README section
"Running with InfiniteTalk on a GPU"). `INFINITETALK_TINY=1` builds tiny random models of the same architecture in
the official layouts instead and loads them through the same loaders: for demos and tests without weights.

| variable | default | meaning |
| --- | --- | --- |
| `INFINITETALK` | 0 | 1: offer InfiniteTalk avatars (`<photo avatar>-infinitetalk`) |
| `INFINITETALK_WAN_DIFFUSERS_DIR` | required | `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers` (VAE, umT5, CLIP parts) |
| `INFINITETALK_DIT_DIR` | required | `Wan-AI/Wan2.1-I2V-14B-480P` (the official DiT shards + index) |
| `INFINITETALK_WEIGHTS` | required | `MeiGen-AI/InfiniteTalk/single/infinitetalk.safetensors` |
| `INFINITETALK_WAV2VEC2_DIR` | required | `TencentGameMate/chinese-wav2vec2-base` |
| `INFINITETALK_DEVICE`, `INFINITETALK_DTYPE` | cuda, bf16 | where and in what precision the DiT runs |
| `INFINITETALK_STEPS`, `INFINITETALK_SHIFT` | 40, 7 | sampling steps; timestep shift (11 at 720p) |
| `INFINITETALK_TEXT_GUIDANCE`, `INFINITETALK_AUDIO_GUIDANCE` | 5, 4 | guidance (with a distillation LoRA: 1, 2) |
| `INFINITETALK_LORA`, `INFINITETALK_LORA_SCALE` | , 1 | a lightx2v / FusionX LoRA merged at load time |
| `INFINITETALK_COMPILE` | 0 | 1: `torch.compile` the DiT |
| `INFINITETALK_PROMPT` | a talking-person prompt | the text condition |
| `INFINITETALK_FPS_ESTIMATE` | 2 | frames/s assumed for pre-roll until the first chunk is measured |
| `INFINITETALK_TINY` | 0 | 1: tiny random models (no weights needed) |
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from services.common.config import ConfigError, env_float, env_int, env_str
from services.video.infinitetalk.audio import AudioEncoder, save_tiny_wav2vec2
from services.video.infinitetalk.backend import DEFAULT_FPS_ESTIMATE, DEFAULT_PROMPT, InfiniteTalkBackend
from services.video.infinitetalk.checkpoint import load_transformer
from services.video.infinitetalk.components import Components, save_tiny_components
from services.video.infinitetalk.model import OFFICIAL_14B, TINY
from services.video.infinitetalk.pipeline import ChunkGenerator, SamplingOptions
from services.video.infinitetalk.tiny import save_tiny_checkpoints
from services.video.photo.backend import PhotoBackend

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def enabled() -> bool:
    return env_int("INFINITETALK", 0, minimum=0) == 1


def sampling_from_env() -> SamplingOptions:
    return SamplingOptions(
        steps=env_int("INFINITETALK_STEPS", 40, minimum=1),
        text_guidance=env_float("INFINITETALK_TEXT_GUIDANCE", 5.0),
        audio_guidance=env_float("INFINITETALK_AUDIO_GUIDANCE", 4.0),
        shift=env_float("INFINITETALK_SHIFT", 7.0),
    )


def tiny_paths(root: Path) -> dict[str, Path]:
    """Writes tiny random models in the official layouts under `root`; returns the paths the loader reads."""
    dit_dir, weights = save_tiny_checkpoints(root / "weights")
    return {
        "wan": save_tiny_components(root / "Wan2.1-I2V-14B-480P-Diffusers", TINY.text_dim, TINY.image_dim),
        "dit": dit_dir,
        "weights": weights,
        "wav2vec2": save_tiny_wav2vec2(root / "chinese-wav2vec2-base"),
    }


def backend_from_env(photo: PhotoBackend) -> InfiniteTalkBackend:
    """The backend the environment describes (ConfigError naming what is missing)."""
    tiny = env_int("INFINITETALK_TINY", 0, minimum=0) == 1
    if tiny:
        paths = tiny_paths(Path(tempfile.mkdtemp(prefix="infinitetalk-tiny-")))
        config, device, dtype = TINY, env_str("INFINITETALK_DEVICE", "cpu"), torch.float32
    else:
        paths = {
            "wan": Path(env_str("INFINITETALK_WAN_DIFFUSERS_DIR")),
            "dit": Path(env_str("INFINITETALK_DIT_DIR")),
            "weights": Path(env_str("INFINITETALK_WEIGHTS")),
            "wav2vec2": Path(env_str("INFINITETALK_WAV2VEC2_DIR")),
        }
        config, device = OFFICIAL_14B, env_str("INFINITETALK_DEVICE", "cuda")
        name = env_str("INFINITETALK_DTYPE", "bf16")
        if name not in DTYPES:
            raise ConfigError(f"INFINITETALK_DTYPE={name!r}: choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[name]
    lora = os.environ.get("INFINITETALK_LORA", "")
    loras = [(Path(lora), env_float("INFINITETALK_LORA_SCALE", 1.0))] if lora else []
    transformer = load_transformer(paths["dit"], paths["weights"], config, dtype=dtype, device=device, loras=loras)
    if env_int("INFINITETALK_COMPILE", 0, minimum=0) == 1:
        transformer = torch.compile(transformer)  # type: ignore[assignment]
    components = Components.load(paths["wan"], device=device, dtype=dtype if not tiny else torch.float32)
    audio = AudioEncoder(paths["wav2vec2"], device=device)
    generator = ChunkGenerator(transformer, components, sampling_from_env())
    return InfiniteTalkBackend(
        generator,
        audio,
        photo,
        prompt=env_str("INFINITETALK_PROMPT", DEFAULT_PROMPT),
        fps_estimate=env_float("INFINITETALK_FPS_ESTIMATE", DEFAULT_FPS_ESTIMATE),
    )
