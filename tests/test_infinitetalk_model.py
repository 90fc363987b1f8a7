"""InfiniteTalk DiT: audio bookkeeping, forward shapes, audio conditioning, official checkpoint mapping and loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors import safe_open
from safetensors.torch import save_file

from services.video.infinitetalk.checkpoint import load_transformer
from services.video.infinitetalk.checkpoint_files import DIT_INDEX, CheckpointError
from services.video.infinitetalk.checkpoint_names import is_audio_key, official_to_ours, ours_to_official
from services.video.infinitetalk.lora import merge_lora
from services.video.infinitetalk.model import (
    OFFICIAL_14B,
    TINY,
    AudioCrossAttention,
    InfiniteTalkTransformer,
    latent_audio_windows,
)
from services.video.infinitetalk.tiny import build_tiny_model, official_state_dict, save_tiny_checkpoints

H_LAT = W_LAT = 4  # 2x2 patches per latent frame: small enough for CPU at 21 latent frames


def _inputs(latent_frames: int, seed: int = 1, batch: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = TINY
    return {
        "latents": torch.randn(batch, c.in_channels, latent_frames, H_LAT, W_LAT, generator=g),
        "timestep": torch.full((batch,), 700.0),
        "text": torch.randn(batch, 9, c.text_dim, generator=g),
        "image": torch.randn(batch, 257, c.image_dim, generator=g),
        "audio": torch.randn(
            batch, c.video_frames(latent_frames), c.audio_window, c.audio_blocks, c.audio_channels, generator=g
        ),
    }


@pytest.fixture(scope="module")
def tiny() -> InfiniteTalkTransformer:
    return build_tiny_model(seed=0)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return save_tiny_checkpoints(tmp_path_factory.mktemp("tiny"), seed=0)


def _copy_files(src: tuple[Path, Path], dst: Path) -> tuple[Path, Path]:
    """A private, editable copy of the tiny checkpoint folders."""
    dit, adapter = src
    new_dit = dst / dit.name
    new_dit.mkdir(parents=True)
    for f in dit.iterdir():
        (new_dit / f.name).write_bytes(f.read_bytes())
    new_adapter = dst / "infinitetalk.safetensors"
    new_adapter.write_bytes(adapter.read_bytes())
    return new_dit, new_adapter


def _read_all(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _shard_with(dit: Path, key: str) -> Path:
    weight_map = json.loads((dit / DIT_INDEX).read_text())["weight_map"]
    return dit / weight_map[key]


# --- audio bookkeeping ----------------------------------------------------------------------------------------------


def test_latent_audio_windows_follow_upstream_grouping() -> None:
    latent_frames = 3
    frames = 4 * (latent_frames - 1) + 1
    # Value = 10 * video frame + window position, so each picked entry is identifiable.
    audio = (torch.arange(frames)[:, None] * 10 + torch.arange(5)[None, :]).float()
    audio = audio[None, :, :, None, None].expand(2, frames, 5, 3, 7).contiguous()
    first, latter = latent_audio_windows(audio, vae_scale=4)
    assert first.shape == (2, 1, 5, 3, 7)
    assert latter.shape == (2, latent_frames - 1, 8, 3, 7)
    assert first[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 4]
    # Latent frame 1 = video frames 1..4: first-of-group [:3], middle frames [2], last-of-group [2:].
    assert latter[0, 0, :, 0, 0].tolist() == [10, 11, 12, 22, 32, 42, 43, 44]
    assert latter[1, 1, :, 2, 6].tolist() == [50, 51, 52, 62, 72, 82, 83, 84]
    # One latent frame: no later frames at all.
    first, latter = latent_audio_windows(audio[:, :1], vae_scale=4)
    assert first.shape == (2, 1, 5, 3, 7) and latter.shape == (2, 0, 8, 3, 7)
    with pytest.raises(ValueError, match="frames"):
        latent_audio_windows(audio[:, :6], vae_scale=4)


def test_audio_tokens_shape_for_a_full_chunk(tiny: InfiniteTalkTransformer) -> None:
    audio = _inputs(21)["audio"]
    assert audio.shape[1] == 81
    tokens = tiny.encode_audio(audio)
    assert tokens.shape == (1, 21, TINY.audio_context_tokens, TINY.audio_output_dim)


def test_audio_cross_attention_is_per_latent_frame() -> None:
    """Each frame's visual tokens attend only to that frame's audio tokens (checked against a naive loop)."""
    torch.manual_seed(3)
    attn = AudioCrossAttention(dim=16, context_dim=8, num_heads=2)
    frames, per_frame, tokens = 3, 5, 4
    x = torch.randn(2, frames * per_frame, 16)
    audio = torch.randn(2, frames, tokens, 8)
    out = attn(x, audio)
    ref = torch.empty_like(out)
    for b in range(2):
        for f in range(frames):
            xs = x[b, f * per_frame : (f + 1) * per_frame]
            q = attn.q_linear(xs).view(per_frame, 2, 8).transpose(0, 1)
            kv = attn.kv_linear(audio[b, f])
            k, v = kv[:, :16].view(tokens, 2, 8).transpose(0, 1), kv[:, 16:].view(tokens, 2, 8).transpose(0, 1)
            w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), dim=-1)
            ref[b, f * per_frame : (f + 1) * per_frame] = attn.proj((w @ v).transpose(0, 1).reshape(per_frame, 16))
    torch.testing.assert_close(out, ref)


# --- forward --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_frames", [1, 21])
def test_forward_shapes(tiny: InfiniteTalkTransformer, latent_frames: int) -> None:
    inputs = _inputs(latent_frames, batch=2 if latent_frames == 1 else 1)
    with torch.no_grad():
        out = tiny(**inputs)
    assert out.shape == (inputs["latents"].shape[0], 16, latent_frames, H_LAT, W_LAT)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_audio_conditions_the_output(tiny: InfiniteTalkTransformer) -> None:
    inputs = _inputs(2)
    other = dict(inputs, audio=torch.randn_like(inputs["audio"]))
    with torch.no_grad():
        out = tiny(**inputs)
        out_other = tiny(**other)
        silent_a = tiny(**inputs, audio_scale=0.0)
        silent_b = tiny(**other, audio_scale=0.0)
        half = tiny(**inputs, audio_scale=0.5)
    assert (out - out_other).abs().max() > 1e-3
    # audio_scale 0 skips the audio attention: the audio no longer matters.
    torch.testing.assert_close(silent_a, silent_b, rtol=0, atol=0)
    assert (out - silent_a).abs().max() > 1e-3
    assert (half - out).abs().max() > 1e-4 and (half - silent_a).abs().max() > 1e-4


def test_forward_rejects_mismatched_audio_length(tiny: InfiniteTalkTransformer) -> None:
    inputs = _inputs(2)
    inputs["audio"] = inputs["audio"][:, :4]
    with pytest.raises(ValueError, match="audio must be"):
        tiny(**inputs)


# --- official key mapping -------------------------------------------------------------------------------------------


def _upstream_official_keys(num_layers: int) -> set[str]:
    """The state-dict keys of upstream's multitalk WanModel, written out from its module definitions."""
    keys = {"head.modulation"}
    for module in ["patch_embedding", "text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                   "time_projection.1", "head.head", "img_emb.proj.0", "img_emb.proj.1", "img_emb.proj.3",
                   "img_emb.proj.4", "audio_proj.proj1", "audio_proj.proj1_vf", "audio_proj.proj2",
                   "audio_proj.proj3", "audio_proj.norm"]:  # fmt: skip
        keys |= {f"{module}.weight", f"{module}.bias"}
    for i in range(num_layers):
        b = f"blocks.{i}"
        keys.add(f"{b}.modulation")
        for attn in ("self_attn", "cross_attn"):
            for lin in ("q", "k", "v", "o"):
                keys |= {f"{b}.{attn}.{lin}.weight", f"{b}.{attn}.{lin}.bias"}
            keys |= {f"{b}.{attn}.norm_q.weight", f"{b}.{attn}.norm_k.weight"}
        for lin in ("k_img", "v_img"):
            keys |= {f"{b}.cross_attn.{lin}.weight", f"{b}.cross_attn.{lin}.bias"}
        keys.add(f"{b}.cross_attn.norm_k_img.weight")
        for module in ("norm3", "ffn.0", "ffn.2", "audio_cross_attn.q_linear", "audio_cross_attn.kv_linear",
                       "audio_cross_attn.proj", "norm_x"):  # fmt: skip
            keys |= {f"{b}.{module}.weight", f"{b}.{module}.bias"}
    return keys


def test_mapping_covers_every_parameter_of_the_14b_model() -> None:
    with torch.device("meta"):
        model = InfiniteTalkTransformer(OFFICIAL_14B)
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    official = {ours_to_official(name): shape for name, shape in ours.items()}
    assert len(official) == len(ours) == 1303 + 330  # Wan2.1-I2V-14B DiT tensors + InfiniteTalk adapter tensors
    assert set(official) == _upstream_official_keys(40)
    assert all(official_to_ours(key) == name for name, key in zip(ours, official, strict=True))
    assert sum(is_audio_key(k) for k in official) == 330
    expected_shapes = {
        "patch_embedding.weight": (5120, 36, 1, 2, 2),
        "text_embedding.0.weight": (5120, 4096),
        "time_embedding.0.weight": (5120, 256),
        "time_projection.1.weight": (30720, 5120),
        "img_emb.proj.0.weight": (1280,),
        "img_emb.proj.1.weight": (1280, 1280),
        "img_emb.proj.3.weight": (5120, 1280),
        "blocks.0.modulation": (1, 6, 5120),
        "blocks.39.self_attn.norm_q.weight": (5120,),
        "blocks.0.cross_attn.k_img.weight": (5120, 5120),
        "blocks.0.norm3.weight": (5120,),
        "blocks.0.ffn.0.weight": (13824, 5120),
        "blocks.0.ffn.2.weight": (5120, 13824),
        "head.head.weight": (64, 5120),
        "head.modulation": (1, 2, 5120),
        "audio_proj.proj1.weight": (512, 5 * 12 * 768),
        "audio_proj.proj1_vf.weight": (512, 8 * 12 * 768),
        "audio_proj.proj3.weight": (32 * 768, 512),
        "audio_proj.norm.weight": (768,),
        "blocks.0.audio_cross_attn.q_linear.weight": (5120, 5120),
        "blocks.0.audio_cross_attn.kv_linear.weight": (10240, 768),
        "blocks.0.audio_cross_attn.proj.weight": (5120, 5120),
        "blocks.0.norm_x.weight": (5120,),
    }
    for key, shape in expected_shapes.items():
        assert official[key] == shape, key


def test_dit_mapping_agrees_with_diffusers_own_converter() -> None:
    """diffusers' convert_wan_transformer_to_diffusers is an independent statement of the Wan rename rules."""
    with torch.device("meta"):
        model = InfiniteTalkTransformer(OFFICIAL_14B)
    dit_names = [name for name in model.state_dict() if not is_audio_key(ours_to_official(name))]
    official = {ours_to_official(name): torch.empty(0) for name in dit_names}
    converted = convert_wan_transformer_to_diffusers(dict(official))
    assert set(converted) == {name.removeprefix("dit.") for name in dit_names}
    for key in official:
        assert converted.get(official_to_ours(key).removeprefix("dit.")) is official[key], key


def test_unknown_official_keys_map_to_nothing() -> None:
    assert official_to_ours("blocks.0.self_attn.x.weight") is None
    assert official_to_ours("blocks.0.norm2.weight") is None  # upstream's FFN norm has no parameters
    assert official_to_ours("freqs") is None
    assert official_to_ours("model.diffusion_model.head.modulation") == "dit.scale_shift_table"


# --- loading --------------------------------------------------------------------------------------------------------


def test_round_trip_official_layout_gives_identical_outputs(
    tiny: InfiniteTalkTransformer, tiny_files: tuple[Path, Path]
) -> None:
    dit, adapter = tiny_files
    shards = sorted(p.name for p in dit.glob("*.safetensors"))
    assert shards == [f"diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    index = json.loads((dit / DIT_INDEX).read_text())
    assert "blocks.0.self_attn.q.weight" in index["weight_map"] and "head.modulation" in index["weight_map"]
    assert not any(is_audio_key(k) for k in index["weight_map"])
    assert all(is_audio_key(k) for k in _read_all(adapter))

    loaded = load_transformer(dit, adapter, TINY, dtype=torch.float32)
    inputs = _inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs), tiny(**inputs), rtol=0, atol=0)

    half = load_transformer(dit, adapter, TINY, dtype=torch.bfloat16)
    assert half.dit.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert half.dit.blocks[0].scale_shift_table.dtype == torch.float32  # kept in fp32 as diffusers does
    assert not any(p.is_meta for p in half.parameters()) and not half.dit.rope.freqs_cos.is_meta
    with torch.no_grad():
        out = half(**inputs)
    assert torch.isfinite(out).all()
    assert (out - tiny(**inputs)).abs().mean() < 0.1 * tiny(**inputs).abs().mean()


def test_adapter_file_may_override_dit_tensors(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    dit, adapter = _copy_files(tiny_files, tmp_path)
    tensors = _read_all(adapter)
    tensors["head.head.weight"] = torch.zeros_like(_read_all(_shard_with(dit, "head.head.weight"))["head.head.weight"])
    save_file(tensors, str(adapter))
    model = load_transformer(dit, adapter, TINY, dtype=torch.float32)
    assert torch.count_nonzero(model.dit.proj_out.weight) == 0


def test_missing_tensor_is_named(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    dit, adapter = _copy_files(tiny_files, tmp_path)
    shard = _shard_with(dit, "blocks.1.cross_attn.k_img.weight")
    tensors = _read_all(shard)
    del tensors["blocks.1.cross_attn.k_img.weight"]
    save_file(tensors, str(shard))
    audio = _read_all(adapter)
    del audio["blocks.0.audio_cross_attn.kv_linear.bias"]
    save_file(audio, str(adapter))
    with pytest.raises(CheckpointError) as err:
        load_transformer(dit, adapter, TINY)
    message = str(err.value)
    assert "2 missing" in message
    assert "blocks.1.cross_attn.k_img.weight" in message
    assert "blocks.0.audio_cross_attn.kv_linear.bias" in message and str(adapter) in message


def test_unexpected_tensor_is_named(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    dit, adapter = _copy_files(tiny_files, tmp_path)
    audio = _read_all(adapter)
    audio["blocks.0.audio_cross_attn.extra.weight"] = torch.zeros(3)
    audio["blocks.7.norm_x.weight"] = torch.zeros(TINY.dim)  # TINY has 2 blocks
    save_file(audio, str(adapter))
    with pytest.raises(CheckpointError) as err:
        load_transformer(dit, adapter, TINY)
    message = str(err.value)
    assert "2 unexpected" in message and "missing" not in message
    assert "blocks.0.audio_cross_attn.extra.weight" in message and "blocks.7.norm_x.weight" in message


def test_wrong_shape_is_named_with_both_shapes(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    dit, adapter = _copy_files(tiny_files, tmp_path)
    shard = _shard_with(dit, "blocks.0.self_attn.q.weight")
    tensors = _read_all(shard)
    tensors["blocks.0.self_attn.q.weight"] = torch.zeros(TINY.dim, TINY.dim + 1)
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError) as err:
        load_transformer(dit, adapter, TINY)
    message = str(err.value)
    assert "blocks.0.self_attn.q.weight" in message
    assert f"expected [{TINY.dim}, {TINY.dim}], found [{TINY.dim}, {TINY.dim + 1}]" in message
    assert "missing" not in message  # reported once, as a wrong shape


def test_wrong_config_is_rejected(tiny_files: tuple[Path, Path]) -> None:
    dit, adapter = tiny_files
    with pytest.raises(CheckpointError, match="num_layers"):
        load_transformer(dit, adapter, OFFICIAL_14B)


def test_wrong_paths_are_named(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    dit, adapter = _copy_files(tiny_files, tmp_path)
    with pytest.raises(CheckpointError, match="does not exist") as err:
        load_transformer(tmp_path / "nope", adapter, TINY)
    assert str(tmp_path / "nope") in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist") as err:
        load_transformer(dit, tmp_path / "single" / "infinitetalk.safetensors", TINY)
    assert "infinitetalk.safetensors" in str(err.value)

    shard = _shard_with(dit, "head.head.weight")
    shard.unlink()
    with pytest.raises(CheckpointError, match="missing") as err:
        load_transformer(dit, adapter, TINY)
    assert shard.name in str(err.value)

    (dit / DIT_INDEX).unlink()
    with pytest.raises(CheckpointError, match=r"no diffusion_pytorch_model\.safetensors\.index\.json") as err:
        load_transformer(dit, adapter, TINY)
    assert str(dit) in str(err.value)

    (dit / DIT_INDEX).write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed"):
        load_transformer(dit, adapter, TINY)


def test_lora_merge(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    dit, adapter = tiny_files
    base = load_transformer(dit, adapter, TINY, dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    rank = 3
    down, up = torch.randn(rank, TINY.dim, generator=g), torch.randn(TINY.dim, rank, generator=g)
    bias_diff = torch.randn(TINY.dim, generator=g)
    lora = tmp_path / "lightx2v.safetensors"
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(float(2 * rank)),
            "diffusion_model.blocks.1.cross_attn.o.lora_A.weight": down.clone(),
            "diffusion_model.blocks.1.cross_attn.o.lora_B.weight": up.clone(),
            "diffusion_model.blocks.1.norm3.diff_b": bias_diff,
        },
        str(lora),
    )
    merged = load_transformer(dit, adapter, TINY, dtype=torch.float32, loras=[(lora, 0.5)])
    b0, m0 = base.dit.blocks[0].attn1.to_q.weight, merged.dit.blocks[0].attn1.to_q.weight
    torch.testing.assert_close(m0, b0 + 0.5 * 2.0 * (up @ down))
    b1, m1 = base.dit.blocks[1].attn2.to_out[0].weight, merged.dit.blocks[1].attn2.to_out[0].weight
    torch.testing.assert_close(m1, b1 + 0.5 * (up @ down))
    torch.testing.assert_close(merged.dit.blocks[1].norm2.bias, base.dit.blocks[1].norm2.bias + 0.5 * bias_diff)
    torch.testing.assert_close(merged.dit.blocks[1].attn1.to_q.weight, base.dit.blocks[1].attn1.to_q.weight)

    bad = tmp_path / "bad.safetensors"
    nope = "diffusion_model.blocks.0.nope"
    save_file({f"{nope}.lora_down.weight": down, f"{nope}.lora_up.weight": up}, str(bad))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.nope"):
        merge_lora(merged, bad)


# --- parity with upstream's math -------------------------------------------------------------------------------------


def _upstream_forward(sd: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Upstream multitalk WanModel.forward (single speaker, batch 1, no TeaCache) written from its source in plain torch
    over the *official* key names: an independent check of the key mapping and of the block composition."""
    c, eps, dim, heads = TINY, TINY.eps, TINY.dim, TINY.num_heads
    hd = dim // heads

    def lin(x: torch.Tensor, p: str) -> torch.Tensor:
        return torch.nn.functional.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])

    def ln(x: torch.Tensor, p: str | None = None, e: float = eps) -> torch.Tensor:
        w, b = (sd[f"{p}.weight"], sd[f"{p}.bias"]) if p else (None, None)
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, e)

    def rms(x: torch.Tensor, p: str) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * sd[f"{p}.weight"]

    def rope_params(n: int, d: int) -> torch.Tensor:
        f = torch.outer(torch.arange(n), 1.0 / torch.pow(10000, torch.arange(0, d, 2).double().div(d)))
        return torch.polar(torch.ones_like(f), f)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # [L, H, hd] layout
        w = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd), dim=-1)
        return torch.einsum("hqk,khd->qhd", w, v).flatten(1)

    x = torch.nn.functional.conv3d(
        inputs["latents"], sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=(1, 2, 2)
    )
    nf, nh, nw = x.shape[2:]
    x = x.flatten(2).transpose(1, 2)[0]  # [L, dim]
    half = c.freq_dim // 2
    sinus = torch.outer(inputs["timestep"].double(), torch.pow(10000, -torch.arange(half).double().div(half)))
    e = lin(
        torch.nn.functional.silu(lin(torch.cat([sinus.cos(), sinus.sin()], 1).float(), "time_embedding.0")),
        "time_embedding.2",
    )
    e0 = lin(torch.nn.functional.silu(e), "time_projection.1").unflatten(1, (6, dim))[0]  # [6, dim]
    text = torch.cat([inputs["text"][0], inputs["text"].new_zeros(512 - inputs["text"].shape[1], c.text_dim)])
    text = lin(torch.nn.functional.gelu(lin(text, "text_embedding.0"), approximate="tanh"), "text_embedding.2")
    img = lin(
        torch.nn.functional.gelu(lin(ln(inputs["image"][0], "img_emb.proj.0", 1e-5), "img_emb.proj.1")),
        "img_emb.proj.3",
    )
    img = ln(img, "img_emb.proj.4", 1e-5)
    # RoPE, as upstream rope_params / rope_apply.
    freqs = torch.cat(
        [rope_params(1024, hd - 4 * (hd // 6)), rope_params(1024, 2 * (hd // 6)), rope_params(1024, 2 * (hd // 6))], 1
    )
    ch = hd // 2
    ft, fh, fw = freqs.split([ch - 2 * (ch // 3), ch // 3, ch // 3], dim=1)
    grid = torch.cat(
        [
            ft[:nf].view(nf, 1, 1, -1).expand(nf, nh, nw, -1),
            fh[:nh].view(1, nh, 1, -1).expand(nf, nh, nw, -1),
            fw[:nw].view(1, 1, nw, -1).expand(nf, nh, nw, -1),
        ],
        -1,
    ).reshape(nf * nh * nw, 1, -1)

    def rope(t: torch.Tensor) -> torch.Tensor:
        return (
            torch.view_as_real(torch.view_as_complex(t.double().reshape(*t.shape[:2], -1, 2)) * grid).flatten(2).float()
        )

    # Audio: per-latent-frame windows by explicit indexing, then AudioProjModel.
    audio = inputs["audio"][0]  # [frames, 5, S, C]
    windows = [audio[0].flatten()]
    for j in range(1, nf):
        v0 = 4 * j - 3
        picked = [audio[v0, 0], audio[v0, 1], audio[v0, 2], audio[v0 + 1, 2], audio[v0 + 2, 2], audio[v0 + 3, 2],
                  audio[v0 + 3, 3], audio[v0 + 3, 4]]  # fmt: skip
        windows.append(torch.stack(picked).flatten())
    hidden = [torch.relu(lin(windows[0], "audio_proj.proj1"))] + [
        torch.relu(lin(w, "audio_proj.proj1_vf")) for w in windows[1:]
    ]
    tokens = lin(torch.relu(lin(torch.stack(hidden), "audio_proj.proj2")), "audio_proj.proj3")
    tokens = ln(tokens.view(nf, c.audio_context_tokens, c.audio_output_dim), "audio_proj.norm", 1e-5)

    per_frame = nh * nw
    for i in range(c.num_layers):
        b = f"blocks.{i}"
        m = sd[f"{b}.modulation"][0] + e0  # [6, dim]
        y = ln(x) * (1 + m[1]) + m[0]
        q = rope(rms(lin(y, f"{b}.self_attn.q"), f"{b}.self_attn.norm_q").view(-1, heads, hd))
        k = rope(rms(lin(y, f"{b}.self_attn.k"), f"{b}.self_attn.norm_k").view(-1, heads, hd))
        v = lin(y, f"{b}.self_attn.v").view(-1, heads, hd)
        x = x + lin(attend(q, k, v), f"{b}.self_attn.o") * m[2]
        y = ln(x, f"{b}.norm3")
        q = rms(lin(y, f"{b}.cross_attn.q"), f"{b}.cross_attn.norm_q").view(-1, heads, hd)
        k = rms(lin(text, f"{b}.cross_attn.k"), f"{b}.cross_attn.norm_k").view(-1, heads, hd)
        v = lin(text, f"{b}.cross_attn.v").view(-1, heads, hd)
        ki = rms(lin(img, f"{b}.cross_attn.k_img"), f"{b}.cross_attn.norm_k_img").view(-1, heads, hd)
        vi = lin(img, f"{b}.cross_attn.v_img").view(-1, heads, hd)
        x = x + lin(attend(q, k, v) + attend(q, ki, vi), f"{b}.cross_attn.o")
        y = ln(x, f"{b}.norm_x")
        out = []
        for f in range(nf):
            qa = lin(y[f * per_frame : (f + 1) * per_frame], f"{b}.audio_cross_attn.q_linear").view(-1, heads, hd)
            kv = lin(tokens[f], f"{b}.audio_cross_attn.kv_linear").view(-1, 2, heads, hd)
            out.append(lin(attend(qa, kv[:, 0], kv[:, 1]), f"{b}.audio_cross_attn.proj"))
        x = x + torch.cat(out)
        y = torch.nn.functional.gelu(lin(ln(x) * (1 + m[4]) + m[3], f"{b}.ffn.0"), approximate="tanh")
        x = x + lin(y, f"{b}.ffn.2") * m[5]
    hm = sd["head.modulation"][0] + e  # [2, dim]
    x = lin(ln(x) * (1 + hm[1]) + hm[0], "head.head")
    x = x.view(nf, nh, nw, 1, 2, 2, c.out_channels)
    return torch.einsum("fhwpqrc->cfphqwr", x).reshape(c.out_channels, nf, nh * 2, nw * 2)[None]


def test_forward_matches_upstream_math_on_official_weights(tiny: InfiniteTalkTransformer) -> None:
    sd = official_state_dict(tiny)
    inputs = _inputs(3)
    with torch.no_grad():
        ours = tiny(**inputs)
        ref = _upstream_forward(sd, inputs)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
