"""Load the official Wan2.1-I2V-14B DiT and InfiniteTalk adapter checkpoints into :class:`InfiniteTalkTransformer`.

The official files use upstream's module names (``blocks.0.self_attn.q.weight``, ``head.modulation``, ...); our model
uses diffusers' names under ``dit.`` plus the audio modules. :func:`official_to_ours` / :func:`ours_to_official` are
the explicit, bijective mapping (tables below, cross-checked in tests against diffusers' own converter), applied to
every tensor. Loading is strict: every parameter must come from exactly the expected shape, nothing may be left over,
and all problems are reported together in one :class:`CheckpointError`. Tensors are read one at a time with
``safe_open`` into a model built on the meta device, so a 14B checkpoint never exists twice in memory.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from safetensors import SafetensorError, safe_open
from torch import nn

from services.video.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkTransformer
from services.video.infinitetalk.speedups import FP8, quantize_linears_fp8

log = logging.getLogger(__name__)

DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SINGLE = "diffusion_pytorch_model.safetensors"

# Official (upstream wan/modules/multitalk_model.py) module path -> our module path, for modules whose parameters are
# "weight"/"bias". Top level first, then per transformer block.
TOP_MODULES: dict[str, str] = {
    "patch_embedding": "dit.patch_embedding",
    "text_embedding.0": "dit.condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "dit.condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "dit.condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "dit.condition_embedder.time_embedder.linear_2",
    "time_projection.1": "dit.condition_embedder.time_proj",
    "img_emb.proj.0": "dit.condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "dit.condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "dit.condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "dit.condition_embedder.image_embedder.norm2",
    "head.head": "dit.proj_out",
    # InfiniteTalk audio projection (same names on both sides).
    "audio_proj.proj1": "audio_proj.proj1",
    "audio_proj.proj1_vf": "audio_proj.proj1_vf",
    "audio_proj.proj2": "audio_proj.proj2",
    "audio_proj.proj3": "audio_proj.proj3",
    "audio_proj.norm": "audio_proj.norm",
}
# Bare parameters (no weight/bias leaf).
TOP_PARAMS: dict[str, str] = {"head.modulation": "dit.scale_shift_table"}

BLOCK_MODULES: dict[str, str] = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    # Upstream's affine cross-attention norm is norm3 (its norm2 is the parameter-free FFN norm); diffusers swaps them.
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    # InfiniteTalk per-block audio modules (same names on both sides).
    "audio_cross_attn.q_linear": "audio_cross_attn.q_linear",
    "audio_cross_attn.kv_linear": "audio_cross_attn.kv_linear",
    "audio_cross_attn.proj": "audio_cross_attn.proj",
    "norm_x": "norm_x",
}
BLOCK_PARAMS: dict[str, str] = {"modulation": "scale_shift_table"}

LEAVES = ("weight", "bias")
_OFFICIAL_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_OUR_BLOCK = re.compile(r"dit\.blocks\.(\d+)\.(.+)")
# Prefixes that training frameworks put in front of the official names (ComfyUI / diffusers' converter strip them too).
_STRIP_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Modules kept in float32 when loading in half precision: diffusers' WanTransformer3DModel._keep_in_fp32_modules
# (timestep embedder, modulation tables, norms) plus our norm_x. They are tiny and numerically sensitive.
FP32_MODULES = frozenset({"rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_x"})


class CheckpointError(Exception):
    """A checkpoint cannot be loaded: wrong path, unreadable file, or tensors missing / unexpected / of wrong shape."""


def _invert(table: dict[str, str]) -> dict[str, str]:
    inverse = {v: k for k, v in table.items()}
    assert len(inverse) == len(table), "mapping tables must be one-to-one"
    return inverse


_TOP_MODULES_INV = _invert(TOP_MODULES)
_TOP_PARAMS_INV = _invert(TOP_PARAMS)
_BLOCK_MODULES_INV = _invert(BLOCK_MODULES)
_BLOCK_PARAMS_INV = _invert(BLOCK_PARAMS)


def _map(name: str, top_modules: dict[str, str], top_params: dict[str, str], block_modules: dict[str, str],
         block_params: dict[str, str], block_re: re.Pattern[str], block_prefix: str) -> str | None:  # fmt: skip
    if name in top_params:
        return top_params[name]
    match = block_re.fullmatch(name)
    if match:
        index, rest = match.groups()
        if rest in block_params:
            return f"{block_prefix}{index}.{block_params[rest]}"
        module, _, leaf = rest.rpartition(".")
        if leaf in LEAVES and module in block_modules:
            return f"{block_prefix}{index}.{block_modules[module]}.{leaf}"
        return None
    module, _, leaf = name.rpartition(".")
    if leaf in LEAVES and module in top_modules:
        return f"{top_modules[module]}.{leaf}"
    return None


def official_to_ours(name: str) -> str | None:
    """Our parameter name for an official checkpoint key, or None if the key is not part of the architecture."""
    for prefix in _STRIP_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return _map(name, TOP_MODULES, TOP_PARAMS, BLOCK_MODULES, BLOCK_PARAMS, _OFFICIAL_BLOCK, "dit.blocks.")


def ours_to_official(name: str) -> str:
    """The official checkpoint key for one of our parameter names (used to write checkpoints, e.g. the tiny model)."""
    mapped = _map(name, _TOP_MODULES_INV, _TOP_PARAMS_INV, _BLOCK_MODULES_INV, _BLOCK_PARAMS_INV, _OUR_BLOCK, "blocks.")
    if mapped is None:
        raise KeyError(f"no official name for parameter {name!r}")
    return mapped


def is_audio_key(official_name: str) -> bool:
    """Whether an official key belongs to the InfiniteTalk adapter (shipped in infinitetalk.safetensors)."""
    return official_name.startswith("audio_proj.") or bool(
        re.fullmatch(r"blocks\.\d+\.(audio_cross_attn\.|norm_x\.).+", official_name)
    )


@dataclass(frozen=True)
class _Source:
    file: Path
    key: str  # the key as stored in the file
    shape: tuple[int, ...]


def _read_header(path: Path) -> dict[str, tuple[int, ...]]:
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


def _check_config_json(dit_dir: Path, config: InfiniteTalkConfig) -> None:
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


def _expected(config: InfiniteTalkConfig) -> tuple[InfiniteTalkTransformer, dict[str, tuple[int, ...]]]:
    with torch.device("meta"):
        model = InfiniteTalkTransformer(config)
    return model, {name: tuple(t.shape) for name, t in model.state_dict().items()}


def plan_load(
    files: Sequence[Path], expected: dict[str, tuple[int, ...]], infinitetalk_file: Path | None = None
) -> dict[str, _Source]:
    """Map every tensor of ``files`` (later files override earlier ones, as upstream's dict merge) onto ``expected``.

    Raises one CheckpointError naming every missing tensor, every unexpected tensor and every shape mismatch.
    """
    plan: dict[str, _Source] = {}
    unexpected: list[str] = []
    mismatched: dict[str, str] = {}  # our name -> message
    for file in files:
        header = _read_header(file)
        for key, shape in header.items():
            ours = official_to_ours(key)
            if ours is None or ours not in expected:
                unexpected.append(f"{key} (in {file})")
            elif shape != expected[ours]:
                mismatched[ours] = f"{key} (in {file}): expected {list(expected[ours])}, found {list(shape)}"
            else:
                if ours in plan and plan[ours].file != file:
                    log.info("%s from %s overrides %s", key, file.name, plan[ours].file.name)
                plan[ours] = _Source(file, key, shape)
                mismatched.pop(ours, None)  # a later file with the right shape supersedes a wrong earlier one
    missing = []
    for name, shape in expected.items():
        if name in plan or name in mismatched:
            continue
        official = ours_to_official(name)
        where = f"InfiniteTalk file {infinitetalk_file}" if is_audio_key(official) else "DiT checkpoint"
        missing.append(f"{official} (expected shape {list(shape)}, from the {where})")
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s):\n  " + "\n  ".join(missing))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s):\n  " + "\n  ".join(unexpected))
        if mismatched:
            lines = "\n  ".join(mismatched.values())
            parts.append(f"{len(mismatched)} tensor(s) with the wrong shape:\n  {lines}")
        raise CheckpointError("checkpoint does not match the InfiniteTalk model: " + "\n".join(parts))
    return plan


def _param_dtype(name: str, dtype: torch.dtype, keep_fp32: bool) -> torch.dtype:
    if keep_fp32 and dtype != torch.float32 and FP32_MODULES.intersection(name.split(".")):
        return torch.float32
    return dtype


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor


def _materialise_rope(model: InfiniteTalkTransformer, device: torch.device | str) -> None:
    """The rotary tables are computed buffers (not in checkpoints); the meta-built ones must be rebuilt for real."""
    old = model.dit.rope
    rope = WanRotaryPosEmbed(old.attention_head_dim, old.patch_size, old.max_seq_len)
    model.dit.rope = rope.to(device)


def load_transformer(
    dit_dir: Path,
    infinitetalk_file: Path,
    config: InfiniteTalkConfig,
    dtype: torch.dtype | str = torch.bfloat16,
    device: torch.device | str = "cpu",
    *,
    loras: Iterable[tuple[Path, float]] = (),
    keep_fp32_modules: bool = True,
    fp8_compute_dtype: torch.dtype = torch.bfloat16,
) -> InfiniteTalkTransformer:
    """Build the model for ``config`` and fill it from the official DiT folder and ``single/infinitetalk.safetensors``.

    ``dtype``: bf16/fp16/fp32 (norms, modulation tables and the timestep embedder stay fp32 unless
    ``keep_fp32_modules`` is False, as diffusers does). ``loras``: (file, scale) pairs merged into the weights after
    loading (lightx2v / FusionX distillation LoRAs). Raises CheckpointError on any path or tensor problem.

    ``dtype="fp8"`` (or ``torch.float8_e4m3fn``): the model is loaded on the host in ``fp8_compute_dtype``, LoRAs are
    merged, then the transformer blocks' Linear weights are quantised to float8 one by one on ``device``
    (``speedups.quantize_linears_fp8``) and the rest is moved there; forward computes in ``fp8_compute_dtype``.
    """
    fp8 = dtype in ("fp8", FP8)
    target_device = device
    if fp8:
        dtype, device = fp8_compute_dtype, "cpu"  # full precision only ever on the host
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"unsupported dtype {dtype}; use torch.bfloat16, torch.float16, torch.float32 or 'fp8'")
    infinitetalk_file = Path(infinitetalk_file)
    shards = dit_shards(Path(dit_dir))
    _check_config_json(Path(dit_dir), config)
    if not infinitetalk_file.is_file():
        raise CheckpointError(
            f"InfiniteTalk checkpoint {infinitetalk_file} does not exist "
            "(expected InfiniteTalk/single/infinitetalk.safetensors)"
        )
    model, expected = _expected(config)
    # The InfiniteTalk file comes last: where it also carries DiT tensors, they win (upstream merges it last too).
    plan = plan_load([*shards, infinitetalk_file], expected, infinitetalk_file)

    by_file: dict[Path, list[tuple[str, _Source]]] = {}
    for name, source in plan.items():
        by_file.setdefault(source.file, []).append((name, source))
    for file, entries in by_file.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name, source in entries:
                    raw = f.get_tensor(source.key)
                    tensor = raw.to(device=device, dtype=_param_dtype(name, dtype, keep_fp32_modules))
                    if tensor.data_ptr() == raw.data_ptr():
                        # safetensors' buffers may be unaligned, which sends CPU kernels down other (numerically
                        # different) paths; a fresh allocation makes a loaded model bit-identical to the saved one.
                        tensor = tensor.clone()
                    _set_tensor(model, name, tensor)
        except SafetensorError as exc:
            raise CheckpointError(f"cannot read tensors from {file}: {exc}") from exc
    _materialise_rope(model, device)
    for lora_path, scale in loras:
        merge_lora(model, Path(lora_path), scale)
    if fp8:
        count = quantize_linears_fp8(model, fp8_compute_dtype, device=target_device)
        model.to(target_device)
        log.info("stored %d Linear weights in float8 (compute in %s)", count, fp8_compute_dtype)
    return model.eval().requires_grad_(False)


# --- LoRA ------------------------------------------------------------------------------------------------------------

_LORA_PAIRS = ((".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight"))
_LORA_PREFIXES = ("diffusion_model.", "model.diffusion_model.", "transformer.")


def _lora_target(base: str, params: dict[str, nn.Parameter]) -> str | None:
    """Our parameter for a LoRA base name: official names (lightx2v/FusionX/ComfyUI) or diffusers names (PEFT)."""
    if base.startswith("transformer.") and f"dit.{base[len('transformer.') :]}" in params:
        return f"dit.{base[len('transformer.') :]}"
    for prefix in _LORA_PREFIXES:
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    ours = official_to_ours(base)
    return ours if ours in params else None


@torch.no_grad()
def merge_lora(model: InfiniteTalkTransformer, path: Path, scale: float = 1.0) -> int:
    """Merge a LoRA into the weights in place: W += scale * (alpha/rank) * up @ down; ``diff``/``diff_b`` add directly.

    Key styles: ``<name>.lora_down.weight``/``lora_up.weight`` (+ optional ``<name>.alpha``), PEFT
    ``<name>.lora_A.weight``/``lora_B.weight``, full deltas ``<name>.diff``/``<name>.diff_b``; ``<name>`` official
    (optionally prefixed ``diffusion_model.``) or diffusers (``transformer.``). Upstream ignores ``alpha``; where it
    equals the rank (as assumed for the published lightx2v/FusionX files) both agree.
    Returns the number of tensors changed.
    """
    header = _read_header(Path(path))
    params = dict(model.named_parameters())
    updates: list[tuple[str, str, str | None, str]] = []  # (target, key_a, key_b, kind)
    unknown: list[str] = []
    used: set[str] = set()
    for key in header:
        for down_sfx, up_sfx in _LORA_PAIRS:
            if key.endswith(down_sfx):
                base = key[: -len(down_sfx)]
                up_key = base + up_sfx
                target = _lora_target(base + ".weight", params)
                if up_key not in header or target is None:
                    unknown.append(key)
                else:
                    updates.append((target, key, up_key, base + ".alpha"))
                    used.update({key, up_key, base + ".alpha"})
        for sfx, leaf in ((".diff", ".weight"), (".diff_b", ".bias")):
            if key.endswith(sfx):
                target = _lora_target(key[: -len(sfx)] + leaf, params)
                if target is None:
                    unknown.append(key)
                else:
                    updates.append((target, key, None, "diff"))
                    used.add(key)
    leftovers = [k for k in header if k not in used and k not in unknown]
    if unknown or leftovers:
        raise CheckpointError(
            f"LoRA {path} has tensors that match no parameter of the model: {', '.join(sorted(unknown + leftovers))}"
        )
    changed = 0
    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = set(f.keys())
        for target, key_a, key_b, alpha_key in updates:
            param = params[target]
            if key_b is None:
                delta = f.get_tensor(key_a).float() * scale
            else:
                down = f.get_tensor(key_a).float()
                up = f.get_tensor(key_b).float()
                factor = scale
                if alpha_key in keys:
                    factor *= float(f.get_tensor(alpha_key).float().item()) / down.shape[0]
                delta = (up.flatten(1) @ down.flatten(1)) * factor
            if delta.numel() != param.numel():
                raise CheckpointError(f"LoRA {path}: {key_a} gives a delta of {delta.numel()} values for {target} "
                                      f"of shape {list(param.shape)}")  # fmt: skip
            merged = param.float() + delta.reshape(param.shape).to(param.device)
            param.copy_(merged.to(param.dtype))
            changed += 1
    log.info("merged LoRA %s (scale %s) into %d tensors", path, scale, changed)
    return changed
