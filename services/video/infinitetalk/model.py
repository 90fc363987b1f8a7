"""The InfiniteTalk DiT: diffusers' Wan2.1-I2V transformer plus InfiniteTalk's audio projection and cross-attention.

Upstream (MeiGen-AI/InfiniteTalk, ``wan/modules/multitalk_model.py``) forks the whole Wan model to add two things:

* ``audio_proj`` (``AudioProjModel``): turns wav2vec2 hidden states, windowed per video frame, into 32 audio context
  tokens per *latent* frame;
* per transformer block, ``audio_cross_attn`` (``SingleStreamMutiAttention``) with ``norm_x`` (affine LayerNorm) on its
  visual input, added to the residual after the text/image cross-attention and before the feed-forward.

Here the Wan part is the maintained ``diffusers.WanTransformer3DModel`` (held as ``self.dit``, its parameter names are
diffusers' own); each of its blocks is an :class:`InfiniteTalkBlock`, a ``WanTransformerBlock`` subclass that keeps
every diffusers submodule (norm1/attn1/norm2/attn2/norm3/ffn/scale_shift_table) and re-composes its forward only to
insert the audio attention where upstream does. Only the single-speaker path is implemented (see
:class:`AudioCrossAttention`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import nn

# diffusers' Wan attention processor splits the cross-attention context as "image tokens, then exactly 512 text tokens"
# (upstream pads umT5 output to text_len=512 the same way), so the text context is always padded to this length.
TEXT_LEN = 512
# CLIP ViT-H/14 penultimate hidden states for one 224x224 image: 1 class token + 16x16 patches.
IMAGE_TOKENS = 257


@dataclass(frozen=True)
class InfiniteTalkConfig:
    """Architecture of the InfiniteTalk DiT; the defaults are the official Wan2.1-I2V-14B + InfiniteTalk values."""

    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_channels: int = 36  # 16 noisy latent + 4 first-frame mask + 16 image-condition latent
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096  # umT5-XXL hidden size
    image_dim: int = 1280  # CLIP ViT-H/14 hidden size
    freq_dim: int = 256
    eps: float = 1e-6
    rope_max_seq_len: int = 1024
    # InfiniteTalk audio adapter (upstream WanModel defaults; wav2vec2-base has 12 layers of 768 channels).
    audio_window: int = 5
    vae_scale: int = 4  # VAE temporal downsampling: one latent frame per 4 video frames after the first
    audio_blocks: int = 12
    audio_channels: int = 768
    audio_intermediate_dim: int = 512
    audio_output_dim: int = 768
    audio_context_tokens: int = 32
    norm_output_audio: bool = True
    norm_input_visual: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ValueError("head dim must be even for the rotary embedding")
        if self.audio_window % 2 == 0:
            raise ValueError("audio_window must be odd (it is centred on its video frame)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def audio_window_latter(self) -> int:
        """Audio entries per later latent frame: upstream ``seq_len_vf = audio_window + vae_scale - 1`` (8)."""
        return self.audio_window + self.vae_scale - 1

    def video_frames(self, latent_frames: int) -> int:
        """Video frames covered by ``latent_frames`` latent frames (the Wan VAE keeps the first frame alone)."""
        return self.vae_scale * (latent_frames - 1) + 1


OFFICIAL_14B = InfiniteTalkConfig()

TINY = InfiniteTalkConfig(
    dim=64,
    ffn_dim=128,
    num_heads=2,
    num_layers=2,
    text_dim=32,
    image_dim=32,
    freq_dim=32,
    audio_blocks=2,
    audio_channels=32,
    audio_intermediate_dim=32,
    audio_output_dim=32,
    audio_context_tokens=4,
)


def latent_audio_windows(audio: torch.Tensor, vae_scale: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Regroup per-video-frame audio windows into per-latent-frame windows, as upstream ``WanModel.forward`` does.

    ``audio`` is ``[B, frames, window, blocks, channels]`` with ``frames = vae_scale * (F_lat - 1) + 1``. The first
    latent frame holds only the first video frame, so it keeps that frame's full window: ``[B, 1, window, ...]``. Every
    later latent frame covers ``vae_scale`` video frames; from the first of them it takes window entries
    ``[:middle + 1]``, from each middle one only the centre entry ``[middle]``, from the last one ``[middle:]``,
    concatenated in that order: ``[B, F_lat - 1, window + vae_scale - 1, ...]`` (8 entries for window 5, vae_scale 4).
    """
    if audio.ndim != 5:
        raise ValueError(f"audio must be [batch, frames, window, blocks, channels], got shape {tuple(audio.shape)}")
    batch, frames, window = audio.shape[:3]
    if (frames - 1) % vae_scale:
        raise ValueError(f"audio has {frames} frames; expected {vae_scale}*(latent_frames-1)+1")
    if vae_scale < 2:
        raise ValueError("vae_scale must be at least 2 (first-of-group and last-of-group frames)")
    middle = window // 2
    first = audio[:, :1]
    groups = audio[:, 1:].reshape(batch, (frames - 1) // vae_scale, vae_scale, *audio.shape[2:])
    head = groups[:, :, 0, : middle + 1]  # [B, n, middle+1, S, C]
    centre = groups[:, :, 1:-1, middle]  # [B, n, vae_scale-2, S, C]
    tail = groups[:, :, -1, middle:]  # [B, n, window-middle, S, C]
    return first, torch.cat([head, centre, tail], dim=2)


class AudioProjModel(nn.Module):
    """Upstream ``AudioProjModel``: per latent frame, flatten its audio windows and project them to context tokens.

    The first latent frame (one video frame, ``audio_window`` entries) and later latent frames (``audio_window +
    vae_scale - 1`` entries) have separate first projections (``proj1`` / ``proj1_vf``) and share the rest.
    """

    def __init__(self, config: InfiniteTalkConfig) -> None:
        super().__init__()
        c = config
        self.context_tokens = c.audio_context_tokens
        self.output_dim = c.audio_output_dim
        self.proj1 = nn.Linear(c.audio_window * c.audio_blocks * c.audio_channels, c.audio_intermediate_dim)
        self.proj1_vf = nn.Linear(c.audio_window_latter * c.audio_blocks * c.audio_channels, c.audio_intermediate_dim)
        self.proj2 = nn.Linear(c.audio_intermediate_dim, c.audio_intermediate_dim)
        self.proj3 = nn.Linear(c.audio_intermediate_dim, c.audio_context_tokens * c.audio_output_dim)
        # nn.LayerNorm's default eps (1e-5), as upstream; computed in float32 as upstream's autocast(float32) does.
        self.norm: nn.Module = FP32LayerNorm(c.audio_output_dim) if c.norm_output_audio else nn.Identity()

    def forward(self, first: torch.Tensor, latter: torch.Tensor) -> torch.Tensor:
        """``first`` [B, 1, w, S, C], ``latter`` [B, F_lat-1, w', S, C] -> tokens [B, F_lat, context_tokens, out]."""
        batch = first.shape[0]
        a = torch.relu(self.proj1(first.flatten(2)))
        b = torch.relu(self.proj1_vf(latter.flatten(2)))
        x = torch.relu(self.proj2(torch.cat([a, b], dim=1)))
        x = self.proj3(x).reshape(batch, -1, self.context_tokens, self.output_dim)
        return self.norm(x)


class AudioCrossAttention(nn.Module):
    """Upstream ``SingleStreamMutiAttention`` for one speaker: each latent frame's visual tokens attend only to that
    frame's audio tokens (no qk-norm, biased q/kv projections, default 1/sqrt(head_dim) scale).

    Multi-speaker (not implemented): upstream concatenates the speakers' tokens per frame (32 each) and applies a 1D
    rotary embedding to queries and keys so each speaker's tokens bind to that person's image region: query positions
    come from the self-attention map against per-person reference masks (``x_ref_attn_map``, normalised into
    ``class_range``/``class_interval`` buckets, background at the centre), key positions are fixed per speaker.
    That needs the self-attention maps, which diffusers' fused attention does not expose.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(context_dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """``x`` [B, F_lat*S, dim] (frame-major), ``audio_tokens`` [B, F_lat, T, ctx_dim] -> [B, F_lat*S, dim]."""
        batch, length, dim = x.shape
        frames, tokens = audio_tokens.shape[1:3]
        if length % frames:
            raise ValueError(f"{length} visual tokens do not split into {frames} latent frames")
        per_frame = length // frames
        q = self.q_linear(x.reshape(batch * frames, per_frame, dim))
        q = q.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        # kv_linear's output is laid out [2, heads, head_dim]: keys first, then values (upstream's view/permute).
        kv = self.kv_linear(audio_tokens.reshape(batch * frames, tokens, -1))
        k, v = kv.view(batch * frames, tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))
        out = out.transpose(1, 2).reshape(batch * frames, per_frame, dim)
        return self.proj(out).reshape(batch, length, dim)


class InfiniteTalkBlock(WanTransformerBlock):
    """A diffusers ``WanTransformerBlock`` plus ``audio_cross_attn`` and ``norm_x``; forward re-composed for audio."""

    def __init__(self, config: InfiniteTalkConfig) -> None:
        super().__init__(
            dim=config.dim,
            ffn_dim=config.ffn_dim,
            num_heads=config.num_heads,
            qk_norm="rms_norm_across_heads",
            cross_attn_norm=True,
            eps=config.eps,
            added_kv_proj_dim=config.dim,  # I2V: CLIP tokens (already projected to dim) get their own k/v
        )
        self.audio_cross_attn = AudioCrossAttention(config.dim, config.audio_output_dim, config.num_heads)
        self.norm_x: nn.Module = (
            FP32LayerNorm(config.dim, config.eps, elementwise_affine=True)
            if config.norm_input_visual
            else nn.Identity()
        )

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        audio_tokens: torch.Tensor | None = None,
        audio_scale: float = 1.0,
    ) -> torch.Tensor:
        """Same arithmetic as ``WanTransformerBlock.forward`` (Wan2.1, temb [B, 6, dim]), audio added after attn2."""
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()
        ).chunk(6, dim=1)

        # 1. Self-attention (adaLN-modulated, gated).
        norm_hidden_states = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        attn_output = self.attn1(norm_hidden_states, None, None, rotary_emb)
        hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)

        # 2. Text + CLIP-image cross-attention (diffusers' norm2 is upstream's affine norm3).
        norm_hidden_states = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(norm_hidden_states, encoder_hidden_states, None, None)

        # 3. InfiniteTalk audio cross-attention, ungated, exactly where upstream adds it.
        if audio_tokens is not None and audio_scale != 0.0:
            audio_out = self.audio_cross_attn(self.norm_x(hidden_states), audio_tokens)
            hidden_states = hidden_states + (audio_out if audio_scale == 1.0 else audio_out * audio_scale)

        # 4. Feed-forward (adaLN-modulated, gated).
        norm_hidden_states = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(
            hidden_states
        )
        ff_output = self.ffn(norm_hidden_states)
        return (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)


class InfiniteTalkTransformer(nn.Module):
    """Wan2.1-I2V DiT with InfiniteTalk audio conditioning; predicts the flow-matching velocity for one chunk."""

    def __init__(self, config: InfiniteTalkConfig) -> None:
        super().__init__()
        self.config = config
        # num_layers=0: the blocks are ours (diffusers blocks + audio), built once below rather than built and replaced.
        self.dit = WanTransformer3DModel(
            patch_size=config.patch_size,
            num_attention_heads=config.num_heads,
            attention_head_dim=config.head_dim,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            text_dim=config.text_dim,
            freq_dim=config.freq_dim,
            ffn_dim=config.ffn_dim,
            num_layers=0,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=config.eps,
            image_dim=config.image_dim,
            added_kv_proj_dim=config.dim,
            rope_max_seq_len=config.rope_max_seq_len,
        )
        self.dit.blocks = nn.ModuleList([InfiniteTalkBlock(config) for _ in range(config.num_layers)])
        self.dit.register_to_config(num_layers=config.num_layers)
        self.audio_proj = AudioProjModel(config)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype (that of the patch embedding; some small modules may be kept in float32)."""
        return self.dit.patch_embedding.weight.dtype

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Per-video-frame audio windows [B, frames, window, blocks, ch] -> audio tokens [B, F_lat, T, out]."""
        first, latter = latent_audio_windows(audio.to(self.dtype), self.config.vae_scale)
        return self.audio_proj(first, latter)

    def _check_inputs(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor,
        audio: torch.Tensor,
    ) -> None:
        c = self.config
        if latents.ndim != 5 or latents.shape[1] != c.in_channels:
            raise ValueError(f"latents must be [B, {c.in_channels}, F, H, W], got {tuple(latents.shape)}")
        batch, _, frames, height, width = latents.shape
        pt, ph, pw = c.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(
                f"latent size {(frames, height, width)} is not a multiple of the patch size {c.patch_size}"
            )
        if timestep.shape != (batch,):
            raise ValueError(f"timestep must be [{batch}], got {tuple(timestep.shape)}")
        if text.ndim != 3 or text.shape[0] != batch or text.shape[2] != c.text_dim or text.shape[1] > TEXT_LEN:
            raise ValueError(f"text must be [{batch}, <= {TEXT_LEN}, {c.text_dim}], got {tuple(text.shape)}")
        if image.ndim != 3 or image.shape[0] != batch or image.shape[2] != c.image_dim:
            raise ValueError(f"image must be [{batch}, {IMAGE_TOKENS}, {c.image_dim}], got {tuple(image.shape)}")
        want = (batch, c.video_frames(frames), c.audio_window, c.audio_blocks, c.audio_channels)
        if tuple(audio.shape) != want:
            raise ValueError(f"audio must be {want} for {frames} latent frames, got {tuple(audio.shape)}")

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor,
        audio: torch.Tensor,
        audio_scale: float = 1.0,
        block_cache: Callable[[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]
        | None = None,
    ) -> torch.Tensor:
        """Velocity [B, 16, F_lat, H_lat, W_lat] in float32.

        ``latents`` [B, 36, F_lat, H_lat, W_lat]; ``timestep`` [B] (0..1000); ``text`` umT5 states [B, L<=512,
        text_dim] (zero-padded to 512 like upstream); ``image`` CLIP penultimate states [B, 257, image_dim]; ``audio``
        wav2vec2 windows [B, 4*(F_lat-1)+1, 5, blocks, channels]. ``audio_scale`` scales the audio attention residual;
        0 skips it (upstream has no such path: its "no audio" CFG branch feeds zero audio features instead).
        ``block_cache(hidden_states, timestep_proj, run_blocks)``, when given, runs (or skips) the transformer blocks in
        place of ``run_blocks(hidden_states)`` (TeaCache, see ``speedups.TeaCache.bind``).
        """
        self._check_inputs(latents, timestep, text, image, audio)
        dit = self.dit
        dtype = self.dtype
        batch, _, frames, height, width = latents.shape
        p_t, p_h, p_w = self.config.patch_size
        post_f, post_h, post_w = frames // p_t, height // p_h, width // p_w

        hidden_states = latents.to(dtype)
        rotary_emb = dit.rope(hidden_states)
        hidden_states = dit.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()

        text = F.pad(text.to(dtype), (0, 0, 0, TEXT_LEN - text.shape[1]))
        temb, timestep_proj, context, context_image = dit.condition_embedder(timestep, text, image.to(dtype))
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        context = torch.cat([context_image, context], dim=1)

        audio_tokens = self.encode_audio(audio) if audio_scale != 0.0 else None

        def run_blocks(hidden: torch.Tensor) -> torch.Tensor:
            for block in dit.blocks:
                hidden = block(hidden, context, timestep_proj, rotary_emb, audio_tokens, audio_scale)
            return hidden

        if block_cache is None:
            hidden_states = run_blocks(hidden_states)
        else:
            hidden_states = block_cache(hidden_states, timestep_proj, run_blocks)

        shift, scale = (dit.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = (dit.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = dit.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch, post_f, post_h, post_w, p_t, p_h, p_w, -1)
        out = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return out.float()


def count_parameters(config: InfiniteTalkConfig) -> int:
    """Parameter count of a config, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = InfiniteTalkTransformer(config)
    return sum(math.prod(p.shape) for p in model.parameters())
