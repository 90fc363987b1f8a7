"""The maintained model components InfiniteTalk conditions on, loaded from the Diffusers-format Wan2.1 I2V release
(`Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`: `vae/`, `text_encoder/` + `tokenizer/`, `image_encoder/` +
`image_processor/`): diffusers' Wan VAE, transformers' umT5 encoder and CLIP vision encoder.

Text and image conditioning are computed once per session (persona prompt, reference portrait) and kept; only the
VAE runs per chunk. `save_tiny_components` writes randomly initialised tiny versions in the same layout, so the real
loaders are exercised on CPU in CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.video.infinitetalk.errors import ComponentError  # also caught from here by callers
from services.video.infinitetalk.official import load_official_parts
from services.video.infinitetalk.official_configs import OfficialConfigs

TEXT_TOKENS = 512  # Wan pads prompts to 512 tokens and zeroes the embeddings beyond the prompt's length
NEGATIVE_PROMPT = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, overall "
    "gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, "
    "poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, "
    "three legs, many people in the background, walking backwards"
)


def _need(folder: Path, *files: str) -> Path:
    if not folder.is_dir():
        raise ComponentError(f"{folder} does not exist: expected the Diffusers-format Wan2.1 I2V folder's part")
    for name in files:
        if not any((folder / candidate).exists() for candidate in name.split("|")):
            raise ComponentError(f"{folder} has no {name.replace('|', ' or ')}")
    return folder


@dataclass
class Components:
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    image_encoder: torch.nn.Module
    image_processor: object
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, root: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Components:
        from diffusers import AutoencoderKLWan
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, UMT5EncoderModel

        root = Path(root)
        weights = "diffusion_pytorch_model.safetensors|diffusion_pytorch_model.safetensors.index.json"
        vae = AutoencoderKLWan.from_pretrained(_need(root / "vae", "config.json", weights), torch_dtype=torch.float32)
        model_weights = "model.safetensors|model.safetensors.index.json"
        text = UMT5EncoderModel.from_pretrained(
            _need(root / "text_encoder", "config.json", model_weights), torch_dtype=dtype
        )
        tokenizer = AutoTokenizer.from_pretrained(_need(root / "tokenizer", "tokenizer_config.json"))
        image = CLIPVisionModel.from_pretrained(
            _need(root / "image_encoder", "config.json", model_weights), torch_dtype=dtype
        )
        processor = CLIPImageProcessor.from_pretrained(_need(root / "image_processor", "preprocessor_config.json"))
        target = torch.device(device)
        for module in (vae, text, image):
            module.to(target).eval().requires_grad_(False)
        return cls(vae, text, tokenizer, image, processor, target, dtype)

    @classmethod
    def load_official(
        cls,
        wan_dir: str | Path,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        configs: OfficialConfigs | None = None,
    ) -> Components:
        """The same components from the official `Wan-AI/Wan2.1-I2V-14B-480P` folder (`Wan2.1_VAE.pth`, the umT5 and
        CLIP `.pth` files, `google/umt5-xxl/`), through the key mappings of `official.py`. `configs` defaults to the
        release's architectures."""
        vae, text, tokenizer, image, processor = load_official_parts(Path(wan_dir), dtype, configs)
        target = torch.device(device)
        for module in (vae, text, image):
            module.to(target).eval().requires_grad_(False)
        return cls(vae, text, tokenizer, image, processor, target, dtype)

    # -- conditioning, once per session ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """[1, TEXT_TOKENS, text_dim]: umT5 states of the prompt, zero beyond its length (as Wan does)."""
        tokens = self.tokenizer(
            [prompt], padding="max_length", max_length=TEXT_TOKENS, truncation=True, return_tensors="pt"
        )
        mask = tokens.attention_mask.to(self.device)
        states = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask).last_hidden_state
        return states * mask[..., None].to(states.dtype)

    @torch.no_grad()
    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        """[1, tokens, image_dim]: the CLIP vision encoder's penultimate hidden states of the reference picture."""
        pixels = self.image_processor(images=[rgb], return_tensors="pt").pixel_values
        output = self.image_encoder(pixels.to(self.device, self.dtype), output_hidden_states=True)
        return output.hidden_states[-2]

    # -- the VAE, per chunk ----------------------------------------------------------------------------------------
    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.vae.config
        mean = torch.tensor(config.latents_mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1, 1)
        return mean, std

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """[1, 3, F, H, W] in [-1, 1] -> normalised latents [1, 16, 1 + (F-1)/4, H/8, W/8]."""
        latents = self.vae.encode(video.to(self.device, torch.float32)).latent_dist.mode()
        mean, std = self._latent_stats(latents)
        return (latents - mean) / std

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> [1, 3, F, H, W] in [-1, 1]."""
        latents = latents.to(self.device, torch.float32)
        mean, std = self._latent_stats(latents)
        return self.vae.decode(latents * std + mean).sample.clamp(-1.0, 1.0)


def save_tiny_components(root: Path, text_dim: int, image_dim: int, seed: int = 0) -> Path:
    """Tiny random VAE (16 latent channels, the real 4x temporal / 8x spatial compression), umT5 encoder, tokenizer,
    CLIP vision encoder and image processor, in the Diffusers-format layout `Components.load` reads."""
    from diffusers import AutoencoderKLWan
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        PreTrainedTokenizerFast,
        UMT5Config,
        UMT5EncoderModel,
    )

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).save_pretrained(root / "vae")
    words = ["<pad>", "</s>", "<unk>", "a", "person", "talking", "face", "camera", "speaks", "clearly", "the", "to"]
    vocab = {word: index for index, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(root / "tokenizer")
    UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(words), d_model=text_dim, d_kv=8, d_ff=2 * text_dim, num_layers=2, num_heads=2,
            relative_attention_num_buckets=8,
        )
    ).save_pretrained(root / "text_encoder")  # fmt: skip
    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=image_dim, intermediate_size=2 * image_dim, num_hidden_layers=2, num_attention_heads=2,
            image_size=28, patch_size=14,
        )
    ).save_pretrained(root / "image_encoder")  # fmt: skip
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
        root / "image_processor"
    )
    return root
