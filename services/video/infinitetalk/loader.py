"""Building the InfiniteTalk backend from configuration (environment variables of the video service).

Weights are never downloaded: every path points at files the operator fetched beforehand (see the README section
"Running with InfiniteTalk on a GPU"). `INFINITETALK_TINY=1` builds tiny random models of the same architecture in
the official layouts instead and loads them through the same loaders: for demos and tests without weights.

| variable | default | meaning |
| --- | --- | --- |
| `INFINITETALK` | 0 | 1: offer InfiniteTalk avatars (`<photo avatar>-infinitetalk`) |
| `INFINITETALK_WAN_DIR` | required | `Wan-AI/Wan2.1-I2V-14B-480P`: the DiT shards + index, `Wan2.1_VAE.pth`, |
| | | the umT5 and CLIP `.pth` files and `google/umt5-xxl/` (VAE, text and image encoders) |
| `INFINITETALK_DIT_DIR` | `INFINITETALK_WAN_DIR` | the DiT shards + index, if kept elsewhere |
| `INFINITETALK_WAN_DIFFUSERS_DIR` | | optional: `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`; when set, the VAE, umT5 and |
| | | CLIP come from its `vae/`, `text_encoder/`, `image_encoder/` folders instead |
| `INFINITETALK_WEIGHTS` | required | `MeiGen-AI/InfiniteTalk/single/infinitetalk.safetensors` |
| `INFINITETALK_WAV2VEC2_DIR` | required | `TencentGameMate/chinese-wav2vec2-base` |
| `INFINITETALK_DEVICE`, `INFINITETALK_DTYPE` | cuda, bf16 | where and in what precision the DiT runs |
| | | (bf16, fp16, fp32, or fp8: block weights stored in float8, computed in bf16, half the memory) |
| `INFINITETALK_STEPS`, `INFINITETALK_SHIFT` | 40, 7 | sampling steps; timestep shift (11 at 720p) |
| `INFINITETALK_TEXT_GUIDANCE`, `INFINITETALK_AUDIO_GUIDANCE` | 5, 4 | guidance (with a distillation LoRA: 1, 2) |
| `INFINITETALK_LORA`, `INFINITETALK_LORA_SCALE` | , 1 | a lightx2v / FusionX LoRA merged at load time |
| `INFINITETALK_COMPILE` | 0 | 1: `torch.compile` the DiT |
| `INFINITETALK_TEACACHE` | 0 | TeaCache threshold: skip the DiT blocks while the timestep modulation |
| | | barely moves (0 = off; upstream suggests 0.2; higher is faster and less faithful) |
| `INFINITETALK_TEACACHE_WARMUP` | 5 | steps that always run the blocks first (the last step always runs too) |
| `INFINITETALK_PROMPT` | a talking-person prompt | the text condition |
| `INFINITETALK_FPS_ESTIMATE` | 2 | frames/s assumed for pre-roll until the first chunk is measured |
| `INFINITETALK_SEQUENCE_PARALLEL` | 0 | 1 under `torchrun --nproc-per-node N`: the DiT's tokens split over N GPUs |
| `INFINITETALK_TINY` | 0 | 1: tiny random models (no weights needed) |
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from services.common.config import ConfigError, env_float, env_int, env_str
from services.video.infinitetalk.audio import AudioEncoder, save_tiny_wav2vec2
from services.video.infinitetalk.backend import DEFAULT_FPS_ESTIMATE, DEFAULT_PROMPT, InfiniteTalkBackend
from services.video.infinitetalk.checkpoint import load_transformer
from services.video.infinitetalk.components import Components
from services.video.infinitetalk.model import OFFICIAL_14B, TINY, InfiniteTalkConfig
from services.video.infinitetalk.official import save_tiny_official
from services.video.infinitetalk.official_configs import OfficialConfigs
from services.video.infinitetalk.pipeline import ChunkGenerator, SamplingOptions
from services.video.infinitetalk.speedups import DEFAULT_WARMUP_STEPS
from services.video.infinitetalk.tiny import save_tiny_checkpoints
from services.video.photo.backend import PhotoBackend

# "fp8": float8 weight storage of the transformer blocks' Linear layers, computed in bf16 (speedups.Fp8Linear).
DTYPES: dict[str, torch.dtype | str] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8": "fp8",
}


def enabled() -> bool:
    return env_int("INFINITETALK", 0, minimum=0) == 1


def sampling_from_env() -> SamplingOptions:
    return SamplingOptions(
        steps=env_int("INFINITETALK_STEPS", 40, minimum=1),
        text_guidance=env_float("INFINITETALK_TEXT_GUIDANCE", 5.0),
        audio_guidance=env_float("INFINITETALK_AUDIO_GUIDANCE", 4.0),
        shift=env_float("INFINITETALK_SHIFT", 7.0),
        teacache_threshold=teacache_threshold(),
        teacache_warmup_steps=env_int("INFINITETALK_TEACACHE_WARMUP", DEFAULT_WARMUP_STEPS, minimum=1),
    )


def teacache_threshold() -> float:
    value = env_float("INFINITETALK_TEACACHE", 0.0)
    if value < 0:
        raise ConfigError(f"INFINITETALK_TEACACHE={value} must be 0 (off) or positive (upstream suggests 0.2)")
    return value


def tiny_paths(root: Path) -> dict[str, Path]:
    """Writes tiny random models in the official layouts under `root` (VAE, umT5 and CLIP beside the DiT, as in the
    release's folder); returns the paths the loader reads."""
    dit_dir, weights = save_tiny_checkpoints(root / "weights")
    return {
        "wan": save_tiny_official(dit_dir, TINY.text_dim, TINY.image_dim),
        "dit": dit_dir,
        "weights": weights,
        "wav2vec2": save_tiny_wav2vec2(root / "chinese-wav2vec2-base"),
    }


@dataclass(frozen=True)
class ModelSetup:
    """Where the weights are and how the DiT runs (the same on every rank of a sequence-parallel group)."""

    paths: dict[str, Path]
    config: InfiniteTalkConfig
    device: str
    dtype: torch.dtype | str
    fp8_compute: torch.dtype
    tiny: bool
    wan_format: str = "official"  # paths["wan"] is the official folder, or "diffusers": the Diffusers-format one


def wan_paths_from_env() -> tuple[Path, Path, str]:
    """(DiT folder, VAE/umT5/CLIP folder, that folder's format). One official folder serves both by default."""
    official = os.environ.get("INFINITETALK_WAN_DIR", "")
    dit = os.environ.get("INFINITETALK_DIT_DIR", "") or official
    if not dit:
        raise ConfigError(
            "environment variable INFINITETALK_WAN_DIR is required: the folder of Wan-AI/Wan2.1-I2V-14B-480P"
        )
    diffusers = os.environ.get("INFINITETALK_WAN_DIFFUSERS_DIR", "")
    if diffusers:
        return Path(dit), Path(diffusers), "diffusers"
    return Path(dit), Path(official or dit), "official"


def setup_from_env() -> ModelSetup:
    tiny = env_int("INFINITETALK_TINY", 0, minimum=0) == 1
    fp8_compute = torch.bfloat16
    wan_format = "official"
    if tiny:
        paths = tiny_paths(Path(tempfile.mkdtemp(prefix="infinitetalk-tiny-")))
        config, device = TINY, env_str("INFINITETALK_DEVICE", "cpu")
        # Tiny models run in float32; only fp8 storage (computed in float32) is honoured, for tests and demos.
        dtype: torch.dtype | str = "fp8" if env_str("INFINITETALK_DTYPE", "fp32") == "fp8" else torch.float32
        fp8_compute = torch.float32
    else:
        dit_dir, wan_dir, wan_format = wan_paths_from_env()
        paths = {
            "wan": wan_dir,
            "dit": dit_dir,
            "weights": Path(env_str("INFINITETALK_WEIGHTS")),
            "wav2vec2": Path(env_str("INFINITETALK_WAV2VEC2_DIR")),
        }
        config, device = OFFICIAL_14B, env_str("INFINITETALK_DEVICE", "cuda")
        name = env_str("INFINITETALK_DTYPE", "bf16")
        if name not in DTYPES:
            raise ConfigError(f"INFINITETALK_DTYPE={name!r}: choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[name]
    if device == "cuda" and parallel_world() > 1:
        device = f"cuda:{env_int('LOCAL_RANK', 0, minimum=0)}"
    return ModelSetup(paths, config, device, dtype, fp8_compute, tiny, wan_format)


def components_from_setup(setup: ModelSetup, dtype: torch.dtype) -> Components:
    """The VAE, umT5 and CLIP from the official folder (tiny architectures in tiny mode) or the Diffusers one."""
    if setup.wan_format == "diffusers":
        return Components.load(setup.paths["wan"], device=setup.device, dtype=dtype)
    configs = OfficialConfigs.tiny(TINY.text_dim, TINY.image_dim) if setup.tiny else None
    return Components.load_official(setup.paths["wan"], device=setup.device, dtype=dtype, configs=configs)


def parallel_world() -> int:
    """Ranks of the sequence-parallel group: WORLD_SIZE under torchrun with INFINITETALK_SEQUENCE_PARALLEL=1."""
    if env_int("INFINITETALK_SEQUENCE_PARALLEL", 0, minimum=0) != 1:
        return 1
    return env_int("WORLD_SIZE", 1, minimum=1)


def parallel_rank() -> int:
    """This process's rank (0 serves gRPC; the others follow it); joins the process group on first use."""
    if parallel_world() == 1:
        return 0
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if env_str("INFINITETALK_DEVICE", "cuda").startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank()


def transformer_from_env(setup: ModelSetup):
    """The DiT, sharded over the sequence-parallel group when there is one (then rank 0 gets the proxy that drives
    the others)."""
    lora = os.environ.get("INFINITETALK_LORA", "")
    loras = [(Path(lora), env_float("INFINITETALK_LORA_SCALE", 1.0))] if lora else []
    transformer = load_transformer(
        setup.paths["dit"],
        setup.paths["weights"],
        setup.config,
        dtype=setup.dtype,
        device=setup.device,
        loras=loras,
        fp8_compute_dtype=setup.fp8_compute,
    )
    world = parallel_world()
    if world > 1:
        from services.video.infinitetalk import parallel

        rank = parallel_rank()
        hook = parallel.install(transformer, rank, world)
        return (parallel.ParallelTransformer(transformer, hook) if rank == 0 else transformer), hook
    if env_int("INFINITETALK_COMPILE", 0, minimum=0) == 1:
        transformer = torch.compile(transformer)  # type: ignore[assignment]
    return transformer, None


def follow_from_env() -> int:
    """A rank > 0 of a sequence-parallel video worker: computes its shard of every forward rank 0 runs."""
    from services.video.infinitetalk import parallel

    transformer, hook = transformer_from_env(setup_from_env())
    return parallel.follow(transformer, hook)


def backend_from_env(photo: PhotoBackend) -> InfiniteTalkBackend:
    """The backend the environment describes (ConfigError naming what is missing)."""
    options = sampling_from_env()  # before loading gigabytes: a bad value fails at once
    if parallel_world() > 1 and options.teacache_threshold > 0:
        raise ConfigError("INFINITETALK_TEACACHE cannot be combined with INFINITETALK_SEQUENCE_PARALLEL yet")
    setup = setup_from_env()
    transformer, _ = transformer_from_env(setup)
    dtype = setup.dtype
    component_dtype = torch.float32 if setup.tiny else (setup.fp8_compute if dtype == "fp8" else dtype)
    paths, device = setup.paths, setup.device
    components = components_from_setup(setup, component_dtype)  # type: ignore[arg-type]
    audio = AudioEncoder(paths["wav2vec2"], device=device)
    generator = ChunkGenerator(transformer, components, options)
    return InfiniteTalkBackend(
        generator,
        audio,
        photo,
        prompt=env_str("INFINITETALK_PROMPT", DEFAULT_PROMPT),
        fps_estimate=env_float("INFINITETALK_FPS_ESTIMATE", DEFAULT_FPS_ESTIMATE),
    )
