"""The architectures of the official Wan2.1 VAE, umT5-XXL encoder and CLIP ViT-H/14 vision tower, as the arguments
diffusers' and transformers' classes take, plus tiny versions of the same structure for CI and demos.

Why apart: `official` builds each model on the meta device from these before pouring the release's tensors in, and
the strict checks there compare against whatever these describe; a bigger or smaller variant is a change here only.
The transformers config classes are imported when a config is made, not with this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The tiny umT5 tokenizer's vocabulary (`official.save_tiny_tokenizer`); its size is the tiny text encoder's.
TINY_WORDS = ["<pad>", "</s>", "<unk>", "a", "person", "talking", "face", "camera", "speaks", "clearly", "the", "to"]


def vae_config(base_dim: int = 96) -> dict:
    """AutoencoderKLWan arguments of the Wan2.1 VAE (upstream `_video_vae`: dim 96, z 16, mults 1-2-4-4, two residual
    blocks per level). diffusers' converter expects exactly this block structure, so only the width may change."""
    return {
        "base_dim": base_dim,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
    }


def umt5_xxl_config(**overrides):
    """umT5-XXL encoder as upstream `umt5_xxl` builds it: no shared position bias (each block has its own), gated
    tanh-GELU feed-forward, T5 RMS norm eps 1e-6, 32 buckets up to distance 128."""
    from transformers import UMT5Config

    settings = {
        "vocab_size": 256384,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",  # transformers: gelu_new, the tanh approximation upstream's GELU computes
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.0,
        "tie_word_embeddings": False,
    }
    settings.update(overrides)
    return UMT5Config(**settings)


def clip_vit_h14_config(**overrides):
    """The vision tower of open-clip xlm-roberta-large-vit-huge-14 (upstream `clip_xlm_roberta_vit_h_14`): exact GELU
    (activation='gelu', not quick_gelu), LayerNorm eps 1e-5, pre-norm, class token."""
    from transformers import CLIPVisionConfig

    settings = {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "num_channels": 3,
    }
    settings.update(overrides)
    return CLIPVisionConfig(**settings)


@dataclass(frozen=True)
class OfficialConfigs:
    """The architectures to build before the official tensors are poured in (the release's by default)."""

    vae: dict = field(default_factory=vae_config)
    text: object = field(default_factory=umt5_xxl_config)
    image: object = field(default_factory=clip_vit_h14_config)

    @classmethod
    def tiny(cls, text_dim: int, image_dim: int, vocab_size: int = len(TINY_WORDS)) -> OfficialConfigs:
        """Few layers and small widths, the same structure (what `save_tiny_official` writes)."""
        return cls(
            vae=vae_config(base_dim=8),
            text=umt5_xxl_config(
                vocab_size=vocab_size, d_model=text_dim, d_kv=8, d_ff=2 * text_dim, num_layers=2, num_heads=2,
                relative_attention_num_buckets=8,
            ),
            image=clip_vit_h14_config(
                hidden_size=image_dim, intermediate_size=2 * image_dim, num_hidden_layers=2, num_attention_heads=2,
                image_size=28,
            ),
        )  # fmt: skip
