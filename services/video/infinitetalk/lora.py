"""Merging LoRAs (lightx2v / FusionX distillation, PEFT exports) into a loaded InfiniteTalk model's weights.

Why apart: a LoRA file has its own key styles (``lora_down``/``lora_up``, PEFT's ``lora_A``/``lora_B``, full
``diff`` deltas; official or diffusers names) and its own arithmetic, and nothing else in loading needs them.
`checkpoint.load_transformer` calls :func:`merge_lora` once per (file, scale) after the base weights are in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from services.video.infinitetalk.checkpoint_files import CheckpointError, read_header
from services.video.infinitetalk.checkpoint_names import official_to_ours
from services.video.infinitetalk.model import InfiniteTalkTransformer

log = logging.getLogger(__name__)

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
    header = read_header(Path(path))
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
