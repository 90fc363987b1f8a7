"""Name mappings between the official Wan2.1 files (upstream wan/modules/vae.py, t5.py, clip.py) and the maintained
implementations (diffusers' `AutoencoderKLWan`, transformers' `UMT5EncoderModel` and `CLIPVisionModel`), both ways.

The VAE's official -> diffusers direction is diffusers' own converter (maintained with diffusers); umT5 and CLIP use
ours. The inverse mappings let `official` check a file against a model's needs by name and shape, and write models
back in the official layouts (tiny checkpoints). An unknown name is a `ComponentError`, never skipped silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from services.video.infinitetalk.errors import ComponentError

# Tensors of the official CLIP file the vision encoder does not use: the XLM-RoBERTa text tower, the contrastive
# temperature and the image projection head (Wan conditions on the penultimate block's tokens, before the head).
CLIP_UNUSED = re.compile(r"^(textual\..*|log_scale|visual\.head)$")


# -- umT5: official <-> transformers names ------------------------------------------------------------------------
_T5_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    # upstream: fc2(fc1(x) * gelu(gate(x))); transformers: wo(gelu(wi_0(x)) * wi_1(x))
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_T5_BLOCK_BACK = {hf: official for official, hf in _T5_BLOCK.items()}


def t5_official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official umT5 encoder tensors -> UMT5EncoderModel's (the embedding is shared by `shared` and the encoder)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "token_embedding.weight":
            out["shared.weight"] = tensor
            out["encoder.embed_tokens.weight"] = tensor
        elif name == "norm.weight":
            out["encoder.final_layer_norm.weight"] = tensor
        elif (m := re.fullmatch(r"blocks\.(\d+)\.(.+)", name)) and m[2] in _T5_BLOCK:
            out[f"encoder.block.{m[1]}.{_T5_BLOCK[m[2]]}"] = tensor
        else:
            raise ComponentError(f"umT5: no mapping for official tensor {name!r}")
    return out


def t5_hf_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """UMT5EncoderModel tensors -> the official names (the inverse of `t5_official_to_hf`)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "shared.weight":
            out["token_embedding.weight"] = tensor
        elif name == "encoder.embed_tokens.weight":
            continue  # the same tensor as shared.weight
        elif name == "encoder.final_layer_norm.weight":
            out["norm.weight"] = tensor
        elif (m := re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", name)) and m[2] in _T5_BLOCK_BACK:
            out[f"blocks.{m[1]}.{_T5_BLOCK_BACK[m[2]]}"] = tensor
        else:
            raise ComponentError(f"umT5: no official name for {name!r}")
    return out


# -- CLIP vision: official <-> transformers names -----------------------------------------------------------------
_CLIP_LAYER = {
    "norm1": "layer_norm1",
    "attn.proj": "self_attn.out_proj",
    "norm2": "layer_norm2",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
}
_CLIP_LAYER_BACK = {hf: official for official, hf in _CLIP_LAYER.items()}
_CLIP_TOP = {
    "visual.patch_embedding.weight": "embeddings.patch_embedding.weight",
    "visual.pre_norm.weight": "pre_layrnorm.weight",
    "visual.pre_norm.bias": "pre_layrnorm.bias",
    "visual.post_norm.weight": "post_layernorm.weight",
    "visual.post_norm.bias": "post_layernorm.bias",
}
_CLIP_TOP_BACK = {hf: official for official, hf in _CLIP_TOP.items()}


def clip_official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official CLIP tensors (vision tower only; `CLIP_UNUSED` dropped) -> CLIPVisionModel's, without the
    `vision_model.` prefix some transformers versions add. The fused `to_qkv` is split into q, k, v (rows in that
    order, as upstream's `.view(b, s, 3, n, d)` reads them)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if CLIP_UNUSED.match(name):
            continue
        if name in _CLIP_TOP:
            out[_CLIP_TOP[name]] = tensor
        elif name == "visual.cls_embedding":  # [1, 1, D] -> [D]
            out["embeddings.class_embedding"] = tensor.reshape(-1)
        elif name == "visual.pos_embedding":  # [1, N, D] -> [N, D]
            out["embeddings.position_embedding.weight"] = tensor.reshape(-1, tensor.shape[-1])
        elif m := re.fullmatch(r"visual\.transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)", name):
            if tensor.shape[0] % 3:
                raise ComponentError(f"CLIP: {name} has shape {tuple(tensor.shape)}: rows not divisible by 3 (q, k, v)")
            for part, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0), strict=True):
                out[f"encoder.layers.{m[1]}.self_attn.{part}_proj.{m[2]}"] = chunk
        elif (m := re.fullmatch(r"visual\.transformer\.(\d+)\.(.+)\.(weight|bias)", name)) and m[2] in _CLIP_LAYER:
            out[f"encoder.layers.{m[1]}.{_CLIP_LAYER[m[2]]}.{m[3]}"] = tensor
        else:
            raise ComponentError(f"CLIP: no mapping for official tensor {name!r}")
    return out


def clip_hf_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPVisionModel tensors -> the official names (q, k, v fused back into `to_qkv`)."""
    state = {name.removeprefix("vision_model."): tensor for name, tensor in state.items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name in _CLIP_TOP_BACK:
            out[_CLIP_TOP_BACK[name]] = tensor
        elif name == "embeddings.class_embedding":
            out["visual.cls_embedding"] = tensor.reshape(1, 1, -1)
        elif name == "embeddings.position_embedding.weight":
            out["visual.pos_embedding"] = tensor.unsqueeze(0)
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", name):
            if m[2] == "q":
                prefix = f"encoder.layers.{m[1]}.self_attn"
                parts = [state[f"{prefix}.{p}_proj.{m[3]}"] for p in "qkv"]
                out[f"visual.transformer.{m[1]}.attn.to_qkv.{m[3]}"] = torch.cat(parts, dim=0)
        elif (m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", name)) and m[2] in _CLIP_LAYER_BACK:
            out[f"visual.transformer.{m[1]}.{_CLIP_LAYER_BACK[m[2]]}.{m[3]}"] = tensor
        else:
            raise ComponentError(f"CLIP: no official name for {name!r}")
    return out


# -- VAE: diffusers' converter one way, ours back ------------------------------------------------------------------
def vae_official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' maintained converter of the original Wan VAE (it keeps names it does not know unchanged, so the
    strict check in `official` still catches strays)."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    return convert_wan_vae_to_diffusers(dict(state))


_RESIDUAL = [
    ("norm1.gamma", "residual.0.gamma"),
    ("conv1.", "residual.2."),
    ("norm2.gamma", "residual.3.gamma"),
    ("conv2.", "residual.6."),
    ("conv_shortcut.", "shortcut."),
]


def _residual_back(rest: str) -> str:
    for hf, official in _RESIDUAL:
        if rest.startswith(hf):
            return official + rest[len(hf) :]
    return rest  # resample.* and time_conv.* keep their names


def vae_hf_to_official(state: Mapping[str, torch.Tensor], num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """AutoencoderKLWan tensors -> upstream WanVAE_ names (our inverse of diffusers' converter)."""
    per_level = num_res_blocks + 2  # upstream decoder level: num_res_blocks + 1 residual blocks, then the upsampler
    fixed = {
        "quant_conv": "conv1",
        "post_quant_conv": "conv2",
        "encoder.conv_in": "encoder.conv1",
        "decoder.conv_in": "decoder.conv1",
        "encoder.norm_out": "encoder.head.0",
        "encoder.conv_out": "encoder.head.2",
        "decoder.norm_out": "decoder.head.0",
        "decoder.conv_out": "decoder.head.2",
    }
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        module, _, leaf = name.rpartition(".")
        if module in fixed:
            new = f"{fixed[module]}.{leaf}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", name):
            new = f"{m[1]}.middle.{2 * int(m[2])}.{_residual_back(m[3])}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", name):
            new = f"{m[1]}.middle.1.{m[2]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", name):
            new = f"encoder.downsamples.{m[1]}.{_residual_back(m[2])}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name):
            new = f"decoder.upsamples.{per_level * int(m[1]) + int(m[2])}.{_residual_back(m[3])}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", name):
            new = f"decoder.upsamples.{per_level * int(m[1]) + per_level - 1}.{m[2]}"
        else:
            raise ComponentError(f"VAE: no official name for {name!r}")
        out[new] = tensor
    return out
