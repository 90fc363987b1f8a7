"""Finding and checking the official DiT checkpoint files before any tensor is read: the shards an index names, the
key -> shape header of a safetensors file, and the folder's config.json.

Why apart: every problem a user can have with a download (wrong folder, a missing shard, a truncated file, the 1.3B
model instead of the 14B) shows up here, as one :class:`CheckpointError` naming the path; `checkpoint` (loading) and
`lora` (merging) both start from these checks.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from services.video.infinitetalk.model import InfiniteTalkConfig

DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SINGLE = "diffusion_pytorch_model.safetensors"


class CheckpointError(Exception):
    """A checkpoint cannot be loaded: wrong path, unreadable file, or tensors missing / unexpected / of wrong shape."""


def read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a safetensors file, without reading tensor data."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc


def dit_shards(dit_dir: Path) -> list[Path]:
    """The safetensors shards of an official DiT folder, found through its index (or the single unsharded file)."""
    dit_dir = Path(dit_dir)
    if not dit_dir.is_dir():
        raise CheckpointError(f"DiT checkpoint folder {dit_dir} does not exist (expected Wan2.1-I2V-14B-480P)")
    index_path = dit_dir / DIT_INDEX
    if not index_path.is_file():
        if (dit_dir / DIT_SINGLE).is_file():
            return [dit_dir / DIT_SINGLE]
        raise CheckpointError(f"no {DIT_INDEX} (nor {DIT_SINGLE}) in DiT checkpoint folder {dit_dir}")
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not an object of file names")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"malformed checkpoint index {index_path}: {exc}") from exc
    shards = sorted(set(weight_map.values()))
    if not shards:
        raise CheckpointError(f"checkpoint index {index_path} lists no shards")
    missing = [name for name in shards if not (dit_dir / name).is_file()]
    if missing:
        raise CheckpointError(f"shard(s) listed in {index_path} are missing: {', '.join(missing)}")
    return [dit_dir / name for name in shards]


def check_config_json(dit_dir: Path, config: InfiniteTalkConfig) -> None:
    """Catch a wrong folder early (e.g. the 1.3B or T2V model) from the official config.json, when present."""
    path = Path(dit_dir) / "config.json"
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"malformed {path}: {exc}") from exc
    want = {
        "model_type": "i2v",
        "dim": config.dim,
        "ffn_dim": config.ffn_dim,
        "num_heads": config.num_heads,
        "num_layers": config.num_layers,
        "in_dim": config.in_channels,
        "out_dim": config.out_channels,
    }
    wrong = [f"{k}={found[k]!r} (expected {v!r})" for k, v in want.items() if k in found and found[k] != v]
    if wrong:
        raise CheckpointError(f"{path} does not describe this model: {', '.join(wrong)}")
