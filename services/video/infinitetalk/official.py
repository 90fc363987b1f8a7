"""The VAE, umT5 encoder and CLIP vision encoder read straight from the official Wan2.1 I2V release folder
(`Wan-AI/Wan2.1-I2V-14B-480P`, the folder that also holds the DiT shards), so a user fetches one repository, not two.

The official files are plain `torch.save` state dicts under the upstream module names (wan/modules/vae.py, t5.py,
clip.py). Each is mapped onto the maintained implementation (diffusers' `AutoencoderKLWan`, transformers'
`UMT5EncoderModel` and `CLIPVisionModel`) by explicit name mappings, checked strictly: every missing, unexpected or
misshapen tensor is named in one `ComponentError`. The VAE uses diffusers' own converter (maintained with diffusers);
umT5 and CLIP use ours below. Models are built on the meta device and take the loaded tensors as they are
(`assign=True`), so the 5.7B-parameter umT5 is never allocated twice.

The inverse mappings write models back in the official layouts: `save_tiny_official` makes tiny random checkpoints
that the same loader reads, for CI and demos.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from services.video.infinitetalk.errors import ComponentError

VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
TOKENIZER_DIR = "google/umt5-xxl"
# Wan's CLIP preprocessing: a plain bicubic resize to 224x224 (no crop), then OpenAI CLIP's normalisation.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Tensors of the official CLIP file the vision encoder does not use: the XLM-RoBERTa text tower, the contrastive
# temperature and the image projection head (Wan conditions on the penultimate block's tokens, before the head).
CLIP_UNUSED = re.compile(r"^(textual\..*|log_scale|visual\.head)$")


TINY_WORDS = ["<pad>", "</s>", "<unk>", "a", "person", "talking", "face", "camera", "speaks", "clearly", "the", "to"]


# -- configurations -------------------------------------------------------------------------------------------------
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
    strict check below still catches strays)."""
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


# -- strict loading ---------------------------------------------------------------------------------------------
def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A `.pth` state dict, memory-mapped (tensors are paged in as they are copied to the device)."""
    if not path.is_file():
        raise ComponentError(f"{path} does not exist: expected the official Wan2.1-I2V-14B-480P file {path.name}")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) torch.save file
    except Exception as error:  # any unreadable file becomes one clear message
        raise ComponentError(f"{path}: cannot read it as a PyTorch state dict ({error})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ComponentError(f"{path}: not a state dict of tensors")
    return state


def check_official(
    path: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], ignored: re.Pattern | None
) -> None:
    """Compare a file's tensors with the official names and shapes the architecture needs; one error naming all."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not (ignored and ignored.match(k)))
    misshapen = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = [
        f"{label} ({len(names)}): {', '.join(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
        if names
    ]
    if problems:
        raise ComponentError(f"{path} does not match the expected architecture: " + "; ".join(problems))


def _fill(
    model: torch.nn.Module, path: Path, hf_to_official: Callable, official_to_hf: Callable, ignored=None
) -> torch.nn.Module:
    """Check the file against the (meta) model's needs, then hand its tensors to the model."""
    expected_hf = model.state_dict()
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in expected_hf) else ""
    expected = hf_to_official({k.removeprefix(prefix): t for k, t in expected_hf.items()})
    state = read_state(path)
    check_official(path, state, expected, ignored)
    converted = {prefix + k: t for k, t in official_to_hf(state).items()}
    stray = sorted(set(converted) ^ set(expected_hf))
    if stray:  # the official names were all right, so this is a mapping bug, not a bad file
        raise ComponentError(f"{path}: mapped names differ from the model's: {', '.join(stray)}")
    model.load_state_dict(converted, strict=True, assign=True)
    return model


def _materialise_buffers(model: torch.nn.Module) -> None:
    """Non-persistent buffers are not in any checkpoint; recreate those left on the meta device."""
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is None or not buffer.is_meta:
                continue
            if name == "position_ids":  # CLIP's positions 0..N-1
                module.register_buffer(
                    name, torch.arange(buffer.shape[-1]).expand(buffer.shape).clone(), persistent=False
                )
            else:
                raise ComponentError(f"{type(module).__name__}.{name}: a buffer the loader cannot recreate")


def load_vae(path: Path, config: dict) -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
    blocks = config.get("num_res_blocks", 2)
    _fill(vae, path, lambda s: vae_hf_to_official(s, blocks), vae_official_to_hf)
    _materialise_buffers(vae)
    return vae.float()


def load_text_encoder(path: Path, config, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        text = UMT5EncoderModel(config)
    _fill(text, path, t5_hf_to_official, t5_official_to_hf)
    _materialise_buffers(text)
    return text.to(dtype)


def load_image_encoder(path: Path, config, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import CLIPVisionModel

    with torch.device("meta"):
        image = CLIPVisionModel(config)
    _fill(image, path, clip_hf_to_official, clip_official_to_hf, ignored=CLIP_UNUSED)
    _materialise_buffers(image)
    return image.to(dtype)


class ClipPreprocessor:
    """Upstream's CLIP preprocessing, exactly: the picture in [0, 1], a bicubic resize (torch, no antialias) of the
    whole picture to size x size (no crop), then CLIP's mean/std. Called like a transformers image processor."""

    def __init__(self, size: int = 224, mean: list[float] = CLIP_MEAN, std: list[float] = CLIP_STD) -> None:
        self.size = size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, images, return_tensors: str = "pt"):
        from transformers import BatchFeature

        batch = []
        for rgb in images:  # H x W x 3 uint8
            pixels = torch.as_tensor(np.asarray(rgb)[..., :3]).permute(2, 0, 1)[None].float() / 255.0
            batch.append(F.interpolate(pixels, size=(self.size, self.size), mode="bicubic", align_corners=False))
        return BatchFeature({"pixel_values": (torch.cat(batch) - self.mean) / self.std}, tensor_type=return_tensors)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise ComponentError(f"{folder} does not exist: expected the umT5 tokenizer folder of the official release")
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise ComponentError(f"{folder}: cannot load the umT5 tokenizer ({error})") from error


def load_official_parts(wan_dir: Path, dtype: torch.dtype, configs: OfficialConfigs | None = None) -> tuple:
    """(vae, text_encoder, tokenizer, image_encoder, image_processor) on the CPU, from the official folder."""
    wan_dir = Path(wan_dir)
    if not wan_dir.is_dir():
        raise ComponentError(f"{wan_dir} does not exist: expected the official Wan2.1-I2V-14B-480P folder")
    configs = configs or OfficialConfigs()
    for name in (VAE_FILE, T5_FILE, CLIP_FILE):  # all missing files at once, before reading gigabytes
        if not (wan_dir / name).is_file():
            absent = [n for n in (VAE_FILE, T5_FILE, CLIP_FILE, TOKENIZER_DIR) if not (wan_dir / n).exists()]
            raise ComponentError(f"{wan_dir} lacks {', '.join(absent)} (the official Wan2.1-I2V-14B-480P files)")
    tokenizer = load_tokenizer(wan_dir / TOKENIZER_DIR)
    vae = load_vae(wan_dir / VAE_FILE, configs.vae)
    text = load_text_encoder(wan_dir / T5_FILE, configs.text, dtype)
    image = load_image_encoder(wan_dir / CLIP_FILE, configs.image, dtype)
    return vae, text, tokenizer, image, ClipPreprocessor(configs.image.image_size)


# -- tiny checkpoints in the official layouts ---------------------------------------------------------------------


def build_tiny_models(text_dim: int, image_dim: int, seed: int = 0) -> tuple:
    """(vae, text_encoder, image_encoder): tiny random HF-format models with every tensor perturbed (norm scales too),
    so a swapped or dropped tensor in a mapping changes the outputs."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionModel, UMT5EncoderModel

    configs = OfficialConfigs.tiny(text_dim, image_dim)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        models = (AutoencoderKLWan(**configs.vae), UMT5EncoderModel(configs.text), CLIPVisionModel(configs.image))
    with torch.no_grad():
        for model in models:
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return tuple(model.eval().requires_grad_(False) for model in models)


def save_tiny_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(TINY_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    return folder


def write_official(root: Path, vae: torch.nn.Module, text: torch.nn.Module, image: torch.nn.Module) -> Path:
    """Write HF-format models as the official release's files (inverse mappings), plus CLIP's unused extras so the
    loader's skipping of them is exercised too."""
    root.mkdir(parents=True, exist_ok=True)

    def plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: t.detach().clone().contiguous() for k, t in state.items()}

    blocks = vae.config.num_res_blocks
    torch.save(plain(vae_hf_to_official(vae.state_dict(), blocks)), root / VAE_FILE)
    torch.save(plain(t5_hf_to_official(text.state_dict())), root / T5_FILE)
    clip = plain(clip_hf_to_official(image.state_dict()))
    dim = image.config.hidden_size
    clip.update(
        {"visual.head": torch.zeros(dim, 4), "log_scale": torch.tensor(2.0), "textual.head.0.weight": torch.zeros(2, 2)}
    )
    torch.save(clip, root / CLIP_FILE)
    return root


def save_tiny_official(root: Path, text_dim: int, image_dim: int, seed: int = 0) -> Path:
    """Tiny random VAE, umT5 encoder, CLIP vision encoder and umT5 tokenizer in the official Wan2.1-I2V-14B-480P
    layout; `Components.load_official(root, configs=OfficialConfigs.tiny(text_dim, image_dim))` reads them."""
    root = Path(root)
    write_official(root, *build_tiny_models(text_dim, image_dim, seed))
    save_tiny_tokenizer(root / TOKENIZER_DIR)
    return root
