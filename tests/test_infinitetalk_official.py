"""The VAE, umT5 and CLIP vision encoder loaded from the official Wan2.1-I2V-14B-480P files: tiny random models written
in the official key layouts load back exactly; the mappings cover every tensor of the full-size architectures (built
on the meta device, nothing allocated); mapped tensors mean what upstream's do; a bad folder gets a clear error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from services.common.config import ConfigError
from services.video.infinitetalk import loader, official
from services.video.infinitetalk.components import ComponentError, Components
from services.video.infinitetalk.official import CLIP_FILE, T5_FILE, TOKENIZER_DIR, VAE_FILE, ClipPreprocessor
from services.video.infinitetalk.official_configs import OfficialConfigs

TEXT_DIM, IMAGE_DIM = 32, 48


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple]:
    """(official folder, the HF-format models it was written from)."""
    root = tmp_path_factory.mktemp("wan-official")
    models = official.build_tiny_models(TEXT_DIM, IMAGE_DIM, seed=3)
    official.write_official(root, *models)
    official.save_tiny_tokenizer(root / TOKENIZER_DIR)
    return root, models


@pytest.fixture(scope="module")
def loaded(tiny) -> Components:
    return Components.load_official(tiny[0], configs=OfficialConfigs.tiny(TEXT_DIM, IMAGE_DIM))


def test_every_tensor_round_trips_exactly(tiny, loaded: Components) -> None:
    _, (vae, text, image) = tiny
    for original, back in ((vae, loaded.vae), (text, loaded.text_encoder), (image, loaded.image_encoder)):
        want, got = original.state_dict(), back.state_dict()
        assert want.keys() == got.keys()
        assert [k for k in want if not torch.equal(want[k], got[k])] == []


def test_outputs_match_the_hf_format_models(tiny, loaded: Components) -> None:
    _, (vae, text, image) = tiny
    reference = Components(vae, text, loaded.tokenizer, image, ClipPreprocessor(28), torch.device("cpu"), torch.float32)
    prompt = "a person talking to the camera"
    assert torch.equal(loaded.encode_text(prompt), reference.encode_text(prompt))
    assert loaded.encode_text(prompt).abs().sum() > 0
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert torch.equal(loaded.encode_image(rgb), reference.encode_image(rgb))
    assert loaded.encode_image(rgb).shape == (1, 1 + 2 * 2, IMAGE_DIM)  # class token + (28/14)^2 patches
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = loaded.encode_video(video)
    assert latents.shape == (1, 16, 2, 4, 4)
    assert torch.equal(latents, reference.encode_video(video))
    assert torch.equal(loaded.decode_video(latents), reference.decode_video(latents))


def test_the_tokenizer_comes_from_the_umt5_folder(loaded: Components) -> None:
    ids = loaded.tokenizer(["a person talking"]).input_ids[0]
    assert ids[:3] == [3, 4, 5]


# -- full-size coverage ---------------------------------------------------------------------------------------------
def _shapes(state) -> dict[str, tuple[int, ...]]:
    return {k: tuple(t.shape) for k, t in state.items()}


@pytest.fixture(scope="module")
def full_size():
    """The release's architectures on the meta device (no memory)."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionModel, UMT5EncoderModel

    configs = OfficialConfigs()
    with torch.device("meta"):
        return AutoencoderKLWan(**configs.vae), UMT5EncoderModel(configs.text), CLIPVisionModel(configs.image)


def test_the_t5_mapping_covers_the_full_umt5_xxl(full_size) -> None:
    hf = full_size[1].state_dict()
    names = official.t5_hf_to_official(hf)
    # upstream umt5_xxl encoder: embedding, 24 blocks x 10 tensors (each with its own relative position table), norm
    assert len(names) == 1 + 24 * 10 + 1
    expected = {
        "token_embedding.weight": (256384, 4096),
        "blocks.0.attn.q.weight": (4096, 4096),
        "blocks.23.attn.o.weight": (4096, 4096),
        "blocks.5.pos_embedding.embedding.weight": (32, 64),
        "blocks.0.norm1.weight": (4096,),
        "blocks.0.ffn.gate.0.weight": (10240, 4096),
        "blocks.0.ffn.fc1.weight": (10240, 4096),
        "blocks.0.ffn.fc2.weight": (4096, 10240),
        "norm.weight": (4096,),
    }
    assert {k: _shapes(names)[k] for k in expected} == expected
    assert _shapes(official.t5_official_to_hf(names)) == _shapes(hf)


def test_the_clip_mapping_covers_the_full_vit_h14(full_size) -> None:
    hf = {k.removeprefix("vision_model."): t for k, t in full_size[2].state_dict().items()}
    names = official.clip_hf_to_official(hf)
    # upstream visual tower: cls, pos, patch conv, pre_norm (2), 32 blocks x 12, post_norm (2); its `head` is unused
    assert len(names) == 3 + 2 + 32 * 12 + 2
    expected = {
        "visual.cls_embedding": (1, 1, 1280),
        "visual.pos_embedding": (1, 257, 1280),
        "visual.patch_embedding.weight": (1280, 3, 14, 14),
        "visual.transformer.31.attn.to_qkv.weight": (3840, 1280),
        "visual.transformer.0.attn.to_qkv.bias": (3840,),
        "visual.transformer.0.mlp.0.weight": (5120, 1280),
        "visual.transformer.0.mlp.2.weight": (1280, 5120),
        "visual.post_norm.bias": (1280,),
    }
    assert {k: _shapes(names)[k] for k in expected} == expected
    assert _shapes(official.clip_official_to_hf(names)) == _shapes(hf)
    unused = ["visual.head", "log_scale", "textual.encoder.layers.0.attn.q.weight"]
    assert all(official.CLIP_UNUSED.match(k) for k in unused)
    assert not any(official.CLIP_UNUSED.match(k) for k in names)


def test_the_vae_mapping_covers_the_full_wan_vae(full_size) -> None:
    hf = full_size[0].state_dict()
    names = official.vae_hf_to_official(hf)
    assert len(names) == len(hf) == 194
    anchors = {  # upstream WanVAE_ names (wan/modules/vae.py)
        "conv1.weight": (32, 32, 1, 1, 1),
        "conv2.weight": (16, 16, 1, 1, 1),
        "encoder.conv1.weight": (96, 3, 3, 3, 3),
        "encoder.downsamples.3.shortcut.weight": (192, 96, 1, 1, 1),
        "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1),
        "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
        "encoder.head.2.weight": (32, 384, 3, 3, 3),
        "decoder.middle.2.residual.6.weight": (384, 384, 3, 3, 3),
        "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
        "decoder.upsamples.4.shortcut.weight": (384, 192, 1, 1, 1),
        "decoder.upsamples.14.residual.0.gamma": (96, 1, 1, 1),
        "decoder.head.0.gamma": (96, 1, 1, 1),
    }
    assert {k: _shapes(names)[k] for k in anchors} == anchors
    # diffusers' converter (what the loader uses) takes our official names back to every diffusers tensor
    assert _shapes(official.vae_official_to_hf(names)) == _shapes(hf)


# -- what the mapped tensors mean (independent of transformers' modules' naming) -------------------------------------
def test_t5_gate_and_fc1_keep_their_roles(tiny, loaded: Components) -> None:
    state = official.read_state(tiny[0] / T5_FILE)
    x = torch.randn(1, 3, TEXT_DIM, generator=torch.Generator().manual_seed(1))
    gate, fc1, fc2 = (state[f"blocks.0.ffn.{n}.weight"] for n in ("gate.0", "fc1", "fc2"))
    tanh_gelu = torch.nn.functional.gelu(x @ gate.T, approximate="tanh")
    want = ((x @ fc1.T) * tanh_gelu) @ fc2.T  # upstream: fc2(fc1(x) * gelu(gate(x)))
    got = loaded.text_encoder.encoder.block[0].layer[1].DenseReluDense(x)
    torch.testing.assert_close(got, want)
    # umT5: every block has its own relative position table
    for index, block in enumerate(loaded.text_encoder.encoder.block):
        table = block.layer[0].SelfAttention.relative_attention_bias.weight
        assert torch.equal(table, state[f"blocks.{index}.pos_embedding.embedding.weight"])


def test_clip_fused_qkv_splits_in_upstream_order(tiny, loaded: Components) -> None:
    state = official.read_state(tiny[0] / CLIP_FILE)
    heads, x = 2, torch.randn(1, 5, IMAGE_DIM, generator=torch.Generator().manual_seed(2))
    w, b = state["visual.transformer.0.attn.to_qkv.weight"], state["visual.transformer.0.attn.to_qkv.bias"]
    q, k, v = (x @ w.T + b).view(1, 5, 3, heads, IMAGE_DIM // heads).unbind(2)  # upstream's reading of to_qkv
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(IMAGE_DIM // heads)
    mixed = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(1, 5, IMAGE_DIM)
    want = mixed @ state["visual.transformer.0.attn.proj.weight"].T + state["visual.transformer.0.attn.proj.bias"]
    encoder = getattr(loaded.image_encoder, "vision_model", loaded.image_encoder).encoder  # transformers 4 nests it
    got = encoder.layers[0].self_attn(x)[0]
    torch.testing.assert_close(got, want)


def test_the_preprocessing_is_upstreams_resize_and_normalisation() -> None:
    rgb = np.full((30, 50, 3), 255, dtype=np.uint8)
    rgb[..., 1] = 0
    pixels = ClipPreprocessor(224)(images=[rgb], return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 224, 224)  # whole picture, no crop
    mean, std = torch.tensor(official.CLIP_MEAN), torch.tensor(official.CLIP_STD)
    torch.testing.assert_close(pixels[0, :, 100, 100], (torch.tensor([1.0, 0.0, 1.0]) - mean) / std)


# -- errors -------------------------------------------------------------------------------------------------------
def _copy(tiny, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(tiny[0], tmp_path / "wan")
    return tmp_path / "wan"


def _read_copy(path: Path) -> dict[str, torch.Tensor]:
    """Not memory-mapped: the test rewrites the file it read."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _load(root: Path) -> Components:
    return Components.load_official(root, configs=OfficialConfigs.tiny(TEXT_DIM, IMAGE_DIM))


def test_missing_folder_and_files_are_named(tiny, tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="does not exist"):
        _load(tmp_path / "nowhere")
    root = _copy(tiny, tmp_path)
    (root / T5_FILE).unlink()
    (root / CLIP_FILE).unlink()
    with pytest.raises(ComponentError) as error:
        _load(root)
    assert T5_FILE in str(error.value) and CLIP_FILE in str(error.value) and VAE_FILE not in str(error.value)


def test_missing_unexpected_and_misshapen_tensors_are_all_named(tiny, tmp_path: Path) -> None:
    root = _copy(tiny, tmp_path)
    state = _read_copy(root / T5_FILE)
    del state["blocks.1.pos_embedding.embedding.weight"]
    state["blocks.0.attn.q.weight"] = torch.zeros(3, 3)
    state["blocks.0.extra.weight"] = torch.zeros(1)
    torch.save(state, root / T5_FILE)
    with pytest.raises(ComponentError) as error:
        _load(root)
    message = str(error.value)
    assert T5_FILE in message
    assert "missing (1): blocks.1.pos_embedding.embedding.weight" in message
    assert "unexpected (1): blocks.0.extra.weight" in message
    assert "blocks.0.attn.q.weight (3, 3) (expected (16, 32))" in message


def test_a_wrong_vae_tensor_and_an_unreadable_file(tiny, tmp_path: Path) -> None:
    root = _copy(tiny, tmp_path)
    state = _read_copy(root / VAE_FILE)
    state.pop("decoder.upsamples.3.resample.1.weight")
    torch.save(state, root / VAE_FILE)
    with pytest.raises(ComponentError, match=r"missing \(1\): decoder\.upsamples\.3\.resample\.1\.weight"):
        _load(root)
    (root / VAE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ComponentError, match="cannot read it"):
        _load(root)


def test_clip_tensors_of_a_wrong_width_are_named(tiny, tmp_path: Path) -> None:
    root = _copy(tiny, tmp_path)
    state = _read_copy(root / CLIP_FILE)
    state["visual.transformer.1.attn.to_qkv.weight"] = torch.zeros(3 * IMAGE_DIM, 8)
    torch.save(state, root / CLIP_FILE)
    with pytest.raises(ComponentError, match=r"visual\.transformer\.1\.attn\.to_qkv\.weight \(144, 8\)"):
        _load(root)


# -- the loader's choice of folder ---------------------------------------------------------------------------------
def test_the_loader_reads_the_official_folder_unless_a_diffusers_one_is_given(monkeypatch) -> None:
    for name in ("INFINITETALK_WAN_DIR", "INFINITETALK_DIT_DIR", "INFINITETALK_WAN_DIFFUSERS_DIR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="INFINITETALK_WAN_DIR"):
        loader.wan_paths_from_env()
    monkeypatch.setenv("INFINITETALK_WAN_DIR", "/m/wan")
    assert loader.wan_paths_from_env() == (Path("/m/wan"), Path("/m/wan"), "official")
    monkeypatch.setenv("INFINITETALK_DIT_DIR", "/m/dit")
    assert loader.wan_paths_from_env() == (Path("/m/dit"), Path("/m/wan"), "official")
    monkeypatch.setenv("INFINITETALK_WAN_DIFFUSERS_DIR", "/m/diffusers")
    assert loader.wan_paths_from_env() == (Path("/m/dit"), Path("/m/diffusers"), "diffusers")


def test_tiny_mode_writes_and_loads_the_official_layout(tmp_path: Path) -> None:
    paths = loader.tiny_paths(tmp_path)
    assert paths["wan"] == paths["dit"]
    assert all((paths["wan"] / name).exists() for name in (VAE_FILE, T5_FILE, CLIP_FILE, TOKENIZER_DIR))
    setup = loader.ModelSetup(paths, loader.TINY, "cpu", torch.float32, torch.float32, tiny=True)
    components = loader.components_from_setup(setup, torch.float32)
    assert components.encode_text("a person").shape[-1] == loader.TINY.text_dim
