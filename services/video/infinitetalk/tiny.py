"""A tiny random InfiniteTalk model written in the official checkpoint layouts, so CI and benchmarks exercise the real
loader and key mapping without the (undownloadable here) 14B weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from services.video.infinitetalk.checkpoint_files import DIT_INDEX
from services.video.infinitetalk.checkpoint_names import is_audio_key, ours_to_official
from services.video.infinitetalk.model import TINY, InfiniteTalkConfig, InfiniteTalkTransformer

DIT_FOLDER = "Wan2.1-I2V-14B-480P"
INFINITETALK_FILE = Path("InfiniteTalk") / "single" / "infinitetalk.safetensors"
DIT_SHARDS = 2


def build_tiny_model(seed: int = 0, config: InfiniteTalkConfig = TINY) -> InfiniteTalkTransformer:
    """A deterministic random model. Every tensor gets noise (norm weights too), so a swapped or dropped tensor in the
    mapping changes the output instead of hiding behind default values (ones/zeros)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InfiniteTalkTransformer(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval().requires_grad_(False)


def official_state_dict(model: InfiniteTalkTransformer) -> dict[str, torch.Tensor]:
    """The model's tensors under official key names (the inverse of the loader's mapping)."""
    return {ours_to_official(name): t.detach().contiguous() for name, t in model.state_dict().items()}


def write_official_checkpoints(
    model: InfiniteTalkTransformer, root: Path, shards: int = DIT_SHARDS
) -> tuple[Path, Path]:
    """Write ``model`` as Wan-AI's sharded DiT folder (+ index, config.json) and InfiniteTalk's adapter file."""
    root = Path(root)
    dit_dir = root / DIT_FOLDER
    adapter_file = root / INFINITETALK_FILE
    dit_dir.mkdir(parents=True, exist_ok=True)
    adapter_file.parent.mkdir(parents=True, exist_ok=True)
    tensors = official_state_dict(model)
    dit_keys = sorted(k for k in tensors if not is_audio_key(k))
    weight_map: dict[str, str] = {}
    per_shard = -(-len(dit_keys) // shards)
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = dit_keys[i * per_shard : (i + 1) * per_shard]
        save_file({k: tensors[k] for k in chunk}, str(dit_dir / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, name))
    total = sum(tensors[k].numel() * tensors[k].element_size() for k in dit_keys)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dit_dir / DIT_INDEX).write_text(json.dumps(index, indent=2))
    c = model.config
    config_json = {
        "_class_name": "WanModel",
        "model_type": "i2v",
        "dim": c.dim,
        "eps": c.eps,
        "ffn_dim": c.ffn_dim,
        "freq_dim": c.freq_dim,
        "in_dim": c.in_channels,
        "num_heads": c.num_heads,
        "num_layers": c.num_layers,
        "out_dim": c.out_channels,
        "text_len": 512,
    }
    (dit_dir / "config.json").write_text(json.dumps(config_json, indent=2))
    save_file({k: v for k, v in tensors.items() if is_audio_key(k)}, str(adapter_file), metadata={"format": "pt"})
    return dit_dir, adapter_file


def save_tiny_checkpoints(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``build_tiny_model(seed)`` under ``root``; returns (DiT folder, infinitetalk.safetensors path)."""
    return write_official_checkpoints(build_tiny_model(seed), Path(root))
