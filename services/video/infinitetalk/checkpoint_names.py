"""The name mapping between the official InfiniteTalk / Wan2.1 DiT checkpoints and our model's parameters.

The official files use upstream's module names (``blocks.0.self_attn.q.weight``, ``head.modulation``, ...); our model
uses diffusers' names under ``dit.`` plus the audio modules. :func:`official_to_ours` / :func:`ours_to_official` are
the explicit, bijective mapping (the tables below, cross-checked in tests against diffusers' own converter).

Why apart: loading (`checkpoint`), LoRA merging (`lora`) and writing tiny checkpoints (`tiny`) all translate names,
and a renamed upstream module is a one-line change to a table here. Pure: strings in, strings out.
"""

from __future__ import annotations

import re

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
