"""Sequence parallelism (DeepSpeed-Ulysses style) for the InfiniteTalk DiT over the GPUs of one node.

The video tokens of a chunk (21 latent frames x H/16 x W/16 at 480p: ~33k) are split into contiguous shards, one
per rank. Every per-token layer (modulation, FFN, text/image cross-attention, audio cross-attention: each token only
needs its own latent frame's audio tokens) runs on the rank's shard alone; self-attention, the one layer that mixes
all tokens, swaps shards for heads with an all-to-all (each rank then holds every token for 1/P of the heads),
attends, and swaps back. The shards are gathered before the output head. Same maths as one GPU, about 1/P of the
activation memory and compute per rank, two all-to-alls per block.

It is installed on a loaded model without forking diffusers: an attention processor on each block's `attn1`, a
shard-aware audio cross-attention, and `run_blocks` wrapped to shard and gather (`InfiniteTalkTransformer.forward`'s
`block_cache` hook). Ranks run the same forward on the same inputs (rank 0 broadcasts them: `ParallelTransformer`).
Tested on CPU with the gloo backend and the tiny model (tests/test_infinitetalk_parallel.py); on GPUs use NCCL under
`torchrun --nproc-per-node N`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from services.video.infinitetalk.model import AudioCrossAttention, InfiniteTalkTransformer


@dataclass
class Shard:
    """This rank's contiguous token range, set per forward (the sequence length depends on the chunk's shape)."""

    rank: int
    world: int
    sizes: list[int] | None = None

    def split(self, length: int) -> tuple[int, int]:
        base, extra = divmod(length, self.world)
        self.sizes = [base + (1 if r < extra else 0) for r in range(self.world)]
        start = sum(self.sizes[: self.rank])
        return start, start + self.sizes[self.rank]

    @property
    def start(self) -> int:
        assert self.sizes is not None
        return sum(self.sizes[: self.rank])

    @property
    def end(self) -> int:
        assert self.sizes is not None
        return self.start + self.sizes[self.rank]


def _all_to_all(x: torch.Tensor, send_sizes: list[int], recv_sizes: list[int], group) -> torch.Tensor:
    """all_to_all_single along dim 0 with uneven splits."""
    out = x.new_empty((sum(recv_sizes), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), recv_sizes, send_sizes, group=group)
    return out


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """diffusers' Wan rotary embedding on interleaved pairs (same arithmetic as WanAttnProcessor)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class UlyssesSelfAttention:
    """Attention processor for a Wan block's self-attention (`attn1`) on a token shard."""

    def __init__(self, shard: Shard, group=None) -> None:
        self.shard = shard
        self.group = group

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("the sequence-parallel processor is for self-attention without a mask")
        shard, world = self.shard, self.shard.world
        heads = attn.heads
        if heads % world:
            raise ValueError(f"{heads} attention heads do not split over {world} ranks")
        batch = hidden_states.shape[0]
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (heads, -1))
        key = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (heads, -1))
        if rotary_emb is not None:  # computed for the whole sequence: take this shard's positions
            cos, sin = (r[:, shard.start : shard.end] for r in rotary_emb)
            query, key = _rope(query, cos, sin), _rope(key, cos, sin)
        sizes = shard.sizes
        assert sizes is not None
        local = sizes[shard.rank]
        per_rank = heads // world

        def to_heads(x: torch.Tensor) -> torch.Tensor:
            # [B, local, H, d] -> tokens-major chunks for each rank's heads -> [B, L, H/P, d]
            x = x.reshape(batch, local, world, per_rank, -1).permute(2, 1, 0, 3, 4)  # [P, local, B, H/P, d]
            x = x.reshape(world * local, batch, per_rank, -1)
            out = _all_to_all(x, [local] * world, sizes, self.group)  # [L, B, H/P, d], rank-ordered tokens
            return out.permute(1, 0, 2, 3)

        q, k, v = (to_heads(t) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        # [B, L, H/P, d] -> back to [B, local, H, d]
        back = out.permute(1, 0, 2, 3).contiguous()  # [L, B, H/P, d]
        back = _all_to_all(back, sizes, [local] * world, self.group)  # [P*local, B, H/P, d], one block per rank
        back = back.reshape(world, local, batch, per_rank, -1).permute(2, 1, 0, 3, 4).reshape(batch, local, heads, -1)
        hidden = back.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](hidden))


class ShardedAudioAttention(torch.nn.Module):
    """The audio cross-attention on a token shard: each token attends to its own latent frame's audio tokens."""

    def __init__(self, inner: AudioCrossAttention, shard: Shard) -> None:
        super().__init__()
        self.inner = inner
        self.shard = shard

    def forward(self, x: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        inner = self.inner
        batch, local, dim = x.shape
        frames, tokens = audio_tokens.shape[1:3]
        assert self.shard.sizes is not None
        per_frame = sum(self.shard.sizes) // frames
        q = inner.q_linear(x).unflatten(-1, (inner.num_heads, inner.head_dim)).transpose(1, 2)  # [B, H, local, d]
        kv = inner.kv_linear(audio_tokens)  # [B, F, T, 2*dim]
        k, v = kv.view(batch, frames, tokens, 2, inner.num_heads, inner.head_dim).permute(3, 0, 1, 4, 2, 5).unbind(0)
        out = torch.empty_like(q)
        start = self.shard.start
        position = 0
        while position < local:  # tokens are frame-major: one run of tokens per latent frame
            frame = (start + position) // per_frame
            run = min(local - position, (frame + 1) * per_frame - (start + position))
            piece = q[:, :, position : position + run]
            out[:, :, position : position + run] = F.scaled_dot_product_attention(
                piece, k[:, frame].to(piece.dtype), v[:, frame].to(piece.dtype)
            )
            position += run
        return inner.proj(out.transpose(1, 2).reshape(batch, local, dim))


def install(model: InfiniteTalkTransformer, rank: int, world: int, group=None) -> Callable:
    """Makes `model` compute on this rank's token shard; returns the `block_cache` hook for its forward, which shards
    the tokens before the blocks and gathers them after."""
    shard = Shard(rank, world)
    for block in model.dit.blocks:
        block.attn1.set_processor(UlyssesSelfAttention(shard, group))
        block.audio_cross_attn = ShardedAudioAttention(block.audio_cross_attn, shard)

    def sharded(hidden_states: torch.Tensor, _timestep_proj: torch.Tensor, run_blocks: Callable) -> torch.Tensor:
        start, end = shard.split(hidden_states.shape[1])
        local = run_blocks(hidden_states[:, start:end].contiguous())
        assert shard.sizes is not None
        widest = max(shard.sizes)
        padded = F.pad(local, (0, 0, 0, widest - local.shape[1]))
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded.contiguous(), group=group)
        return torch.cat([g[:, :size] for g, size in zip(gathered, shard.sizes, strict=True)], dim=1)

    return sharded


class ParallelTransformer(torch.nn.Module):
    """Rank 0's view of a sequence-parallel DiT: each forward first sends its inputs to the other ranks (which run
    `follow`), then computes its own shard; every rank ends with the whole output."""

    def __init__(self, model: InfiniteTalkTransformer, hook: Callable, group=None) -> None:
        super().__init__()
        self.model = model
        self.hook = hook
        self.group = group
        self.config = model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def forward(self, latents, timestep, text, image, audio, audio_scale: float = 1.0, block_cache=None):
        if block_cache is not None:
            raise ValueError("step caching (TeaCache) is not combined with sequence parallelism yet")
        inputs = {"latents": latents, "timestep": timestep, "text": text, "image": image, "audio": audio}
        dist.broadcast_object_list([(inputs, audio_scale)], src=0, group=self.group)
        return self.model(**inputs, audio_scale=audio_scale, block_cache=self.hook)

    def stop_followers(self) -> None:
        dist.broadcast_object_list([None], src=0, group=self.group)


def follow(model: InfiniteTalkTransformer, hook: Callable, group=None) -> int:
    """A rank > 0: computes its shard of every forward rank 0 asks for, until rank 0 stops it. Returns the count."""
    done = 0
    with torch.no_grad():
        while True:
            message: list = [None]
            dist.broadcast_object_list(message, src=0, group=group)
            if message[0] is None:
                return done
            inputs, audio_scale = message[0]
            model(**inputs, audio_scale=audio_scale, block_cache=hook)
            done += 1
