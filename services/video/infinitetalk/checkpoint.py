"""Load the official Wan2.1-I2V-14B DiT and InfiniteTalk adapter checkpoints into :class:`InfiniteTalkTransformer`.

Every tensor of the files is mapped to our parameter names (`checkpoint_names`). Loading is strict: every parameter
must come from exactly the expected shape, nothing may be left over, and all problems are reported together in one
:class:`CheckpointError` (the files themselves are found and checked by `checkpoint_files`). Tensors are read one at
a time with ``safe_open`` into a model built on the meta device, so a 14B checkpoint never exists twice in memory.
LoRAs are merged afterwards (`lora`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from safetensors import SafetensorError, safe_open
from torch import nn

from services.video.infinitetalk.checkpoint_files import CheckpointError, check_config_json, dit_shards, read_header
from services.video.infinitetalk.checkpoint_names import is_audio_key, official_to_ours, ours_to_official
from services.video.infinitetalk.lora import merge_lora
from services.video.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkTransformer
from services.video.infinitetalk.speedups import FP8, quantize_linears_fp8

log = logging.getLogger(__name__)

# Modules kept in float32 when loading in half precision: diffusers' WanTransformer3DModel._keep_in_fp32_modules
# (timestep embedder, modulation tables, norms) plus our norm_x. They are tiny and numerically sensitive.
FP32_MODULES = frozenset({"rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_x"})


@dataclass(frozen=True)
class _Source:
    file: Path
    key: str  # the key as stored in the file
    shape: tuple[int, ...]


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
        header = read_header(file)
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
    check_config_json(Path(dit_dir), config)
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
