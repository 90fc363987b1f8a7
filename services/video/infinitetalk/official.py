"""The VAE, umT5 encoder and CLIP vision encoder read straight from the official Wan2.1 I2V release folder
(`Wan-AI/Wan2.1-I2V-14B-480P`, the folder that also holds the DiT shards), so a user fetches one repository, not two;
and tiny random checkpoints written in the same layout, which the same loader reads, for CI and demos.

The official files are plain `torch.save` state dicts under the upstream module names. Each is mapped onto the
maintained implementation by explicit name mappings (`official_names`), checked strictly: every missing, unexpected or
misshapen tensor is named in one `ComponentError`. Models are built on the meta device from `official_configs` and
take the loaded tensors as they are (`assign=True`), so the 5.7B-parameter umT5 is never allocated twice. The inverse
mappings write models back in the official layouts: `save_tiny_official`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from services.video.infinitetalk.errors import ComponentError
from services.video.infinitetalk.official_configs import TINY_WORDS, OfficialConfigs
from services.video.infinitetalk.official_names import (
    CLIP_UNUSED,
    clip_hf_to_official,
    clip_official_to_hf,
    t5_hf_to_official,
    t5_official_to_hf,
    vae_hf_to_official,
    vae_official_to_hf,
)

VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
TOKENIZER_DIR = "google/umt5-xxl"
# Wan's CLIP preprocessing: a plain bicubic resize to 224x224 (no crop), then OpenAI CLIP's normalisation.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


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
