"""InfiniteTalk speed options on CPU with the tiny model: fp8 weight storage and TeaCache-style step skipping."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from services.common.config import ConfigError
from services.video.infinitetalk import loader
from services.video.infinitetalk.checkpoint import load_transformer
from services.video.infinitetalk.components import Components, save_tiny_components
from services.video.infinitetalk.model import TINY, InfiniteTalkTransformer
from services.video.infinitetalk.pipeline import ChunkGenerator, SamplingOptions
from services.video.infinitetalk.speedups import (
    COEFFICIENTS_480P,
    COEFFICIENTS_720P,
    FP8,
    Fp8Linear,
    TeaCache,
    coefficients_for,
    fp8_weight_bytes,
    quantize_linears_fp8,
)
from services.video.infinitetalk.tiny import build_tiny_model, save_tiny_checkpoints
from services.video.photo.backend import PhotoBackend

FRAMES = 9  # 3 latent frames: the smallest chunk with later latent frames (keeps CPU time low)
SIZE = 64


def _inputs(timestep: float, latent_frames: int = 5, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = TINY
    return {
        "latents": torch.randn(1, c.in_channels, latent_frames, 4, 4, generator=g),
        "timestep": torch.full((1,), timestep),
        "text": torch.randn(1, 9, c.text_dim, generator=g),
        "image": torch.randn(1, 257, c.image_dim, generator=g),
        "audio": torch.randn(
            1, c.video_frames(latent_frames), c.audio_window, c.audio_blocks, c.audio_channels, generator=g
        ),
    }


def _block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if type(m) is nn.Linear and n.startswith("dit.blocks.")}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def tiny() -> InfiniteTalkTransformer:
    return build_tiny_model(seed=0)


@pytest.fixture(scope="module")
def tiny_fp8(tiny: InfiniteTalkTransformer) -> InfiniteTalkTransformer:
    model = copy.deepcopy(tiny)
    quantize_linears_fp8(model, torch.float32)
    return model


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return save_tiny_checkpoints(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def components() -> Components:
    root = Path(tempfile.mkdtemp(prefix="infinitetalk-speedups-"))
    return Components.load(save_tiny_components(root / "wan-diffusers", TINY.text_dim, TINY.image_dim))


@pytest.fixture(scope="module")
def chunk_audio() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.randn(FRAMES, TINY.audio_window, TINY.audio_blocks, TINY.audio_channels, generator=g)


def _portrait() -> np.ndarray:
    return (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)


def _generate(generator: ChunkGenerator, audio: torch.Tensor, seed: int = 1) -> torch.Tensor:
    reference = generator.reference(_portrait(), "a person talking", "blurry")
    return generator.generate(reference, audio, None, frames=FRAMES, seed=seed)


class _StackCounter:
    """Counts passes through the block stack (calls of the first block) of a model."""

    def __init__(self, model: InfiniteTalkTransformer) -> None:
        self.count = 0
        self._handle = model.dit.blocks[0].register_forward_pre_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


# --- fp8 weights -----------------------------------------------------------------------------------------------------


def test_fp8_stores_the_block_linears_in_a_quarter_of_the_fp32_memory(tiny, tiny_fp8) -> None:
    originals = _block_linears(tiny)
    # 2 blocks x (attn1 q/k/v/o + attn2 q/k/v/o + CLIP k/v + FFN in/out + audio q/kv/proj).
    assert len(originals) == TINY.num_layers * 15
    quantised = {n: m for n, m in tiny_fp8.named_modules() if isinstance(m, Fp8Linear)}
    assert set(quantised) == set(originals), "exactly the blocks' Linear layers are swapped"
    assert not _block_linears(tiny_fp8), "no full-precision Linear is left in the blocks"
    fp32_bytes = sum(m.weight.numel() * m.weight.element_size() for m in originals.values())
    fp8_bytes = sum(m.weight_fp8.numel() * m.weight_fp8.element_size() for m in quantised.values())
    assert all(m.weight_fp8.dtype == FP8 for m in quantised.values())
    assert fp8_bytes * 4 == fp32_bytes
    # Plus one float32 scale per output row: 4/in_features extra (1/16 here at 64 inputs; 1/1280 for the 14B model).
    assert fp8_weight_bytes(tiny_fp8) <= 0.27 * fp32_bytes
    # Everything else keeps its dtype and values: embedders, output head, audio projection, norms, modulation tables.
    fp8_params = dict(tiny_fp8.named_parameters())
    for name, param in tiny.named_parameters():
        if name.rpartition(".")[0] in originals:
            continue
        assert fp8_params[name].dtype == param.dtype and torch.equal(fp8_params[name], param), name
    assert all(p.dtype == torch.float32 for p in tiny_fp8.parameters()), "fp8 tensors are buffers, not parameters"
    assert type(tiny_fp8.dit.proj_out) is nn.Linear and type(tiny_fp8.audio_proj.proj1) is nn.Linear


def test_fp8_weights_round_to_within_the_e4m3_step_per_output_channel(tiny, tiny_fp8) -> None:
    for name, linear in _block_linears(tiny).items():
        fp8 = tiny_fp8.get_submodule(name)
        weight = linear.weight
        # Per-row scale: the largest |w| of each row maps onto 448 (e4m3's maximum), so it is represented exactly.
        assert fp8.scale.shape == (weight.shape[0], 1)
        assert torch.allclose(fp8.dequantized_weight().abs().amax(1), weight.abs().amax(1), rtol=1e-6)
        # e4m3 keeps 3 mantissa bits: rounding to nearest is off by at most 2^-4 of a normal value; values below the
        # smallest normal (2^-6 of the scale) are off by at most half the subnormal step (2^-10 of the scale).
        error = (fp8.dequantized_weight() - weight).abs()
        bound = torch.maximum(weight.abs() * 2.0**-4, fp8.scale * 2.0**-10) * 1.0001
        assert (error <= bound).all(), name


def test_fp8_outputs_stay_close_to_the_full_precision_model(tiny, tiny_fp8) -> None:
    """Why 5 %: each weight is off by up to 6.25 % (typically ~2.5 % rms, measured); the errors are independent, so
    they partly cancel in every dot product, and the model output measured ~2 % relative (L2) off at every
    timestep. 5 % leaves a 2.5x margin yet catches a wrong scale or a skipped de-quantisation (10-100 %)."""
    with torch.no_grad():
        for timestep in (999.0, 700.0, 100.0):
            inputs = _inputs(timestep)
            full, quantised = tiny(**inputs), tiny_fp8(**inputs)
            assert quantised.dtype == torch.float32 and torch.isfinite(quantised).all()
            error = _relative_error(quantised, full)
            assert 0 < error < 0.05, f"t={timestep}: relative error {error:.4f}"


def test_load_transformer_with_fp8_quantises_after_loading(tiny_files, tiny_fp8) -> None:
    dit_dir, adapter = tiny_files
    loaded = load_transformer(dit_dir, adapter, TINY, dtype="fp8", fp8_compute_dtype=torch.float32)
    assert sum(isinstance(m, Fp8Linear) for m in loaded.modules()) == TINY.num_layers * 15
    assert loaded.dtype == torch.float32
    inputs = _inputs(500.0)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), tiny_fp8(**inputs)), "same weights, same quantisation, same output"
    also = load_transformer(dit_dir, adapter, TINY, dtype=FP8, fp8_compute_dtype=torch.float32)
    assert isinstance(also.dit.blocks[0].ffn.net[2], Fp8Linear)
    with pytest.raises(ValueError, match="fp8"):
        load_transformer(dit_dir, adapter, TINY, dtype="int4")


def test_the_loader_builds_an_fp8_teacache_backend_that_renders_a_chunk(monkeypatch, chunk_audio) -> None:
    monkeypatch.setenv("INFINITETALK_TINY", "1")
    monkeypatch.setenv("INFINITETALK_DTYPE", "fp8")
    monkeypatch.setenv("INFINITETALK_STEPS", "3")
    monkeypatch.setenv("INFINITETALK_TEACACHE", "0.2")
    monkeypatch.setenv("INFINITETALK_TEACACHE_WARMUP", "1")
    backend = loader.backend_from_env(PhotoBackend())
    generator = backend.generator
    assert any(isinstance(m, Fp8Linear) for m in generator.transformer.modules())
    assert generator.dtype == torch.float32
    assert generator.options.teacache_threshold == 0.2 and generator.teacache is not None
    assert generator.teacache.warmup_steps == 1
    video = _generate(generator, chunk_audio)
    assert video.shape == (1, 3, FRAMES, SIZE, SIZE) and torch.isfinite(video).all()
    assert generator.teacache.computed + generator.teacache.skipped == 3 * 3, "3 steps x 3 CFG branches"


def test_the_loader_rejects_a_negative_teacache_threshold(monkeypatch) -> None:
    monkeypatch.setenv("INFINITETALK_TEACACHE", "-0.1")
    with pytest.raises(ConfigError, match="INFINITETALK_TEACACHE"):
        loader.sampling_from_env()
    monkeypatch.setenv("INFINITETALK_TEACACHE", "0")
    assert loader.sampling_from_env().teacache_threshold == 0.0, "off by default"


def test_an_fp8_model_runs_the_pipeline_close_to_full_precision(tiny, tiny_fp8, components, chunk_audio) -> None:
    options = SamplingOptions(steps=2)
    full = _generate(ChunkGenerator(tiny, components, options), chunk_audio)
    quantised = _generate(ChunkGenerator(tiny_fp8, components, options), chunk_audio)
    assert quantised.shape == full.shape and torch.isfinite(quantised).all()
    assert 0 < _relative_error(quantised, full) < 0.05


# --- TeaCache --------------------------------------------------------------------------------------------------------


def _drive(cache: TeaCache, branch: str, growth: float, steps: int) -> list[str]:
    """Feed `steps` calls whose modulation grows by `growth` (relative L1 change) per step; C = computed, S = skipped.
    The blocks add a step-specific value, so a skipped step must return the last computed residual instead."""
    pattern = []
    hidden = torch.zeros(1, 4, 8)
    residual = None
    for step in range(steps):
        modulation = torch.full((1, 6, 8), (1 + growth) ** step)
        calls = []

        def blocks(h: torch.Tensor, step: int = step, calls: list[int] = calls) -> torch.Tensor:
            calls.append(step)
            return h + step + 1.0

        out = cache.bind(branch, step)(hidden + step, modulation, blocks)
        if calls:
            pattern.append("C")
            residual = step + 1.0
        else:
            pattern.append("S")
            assert torch.equal(out, hidden + step + residual), "a skipped step re-uses the last residual"
    return pattern


def test_teacache_accumulates_the_rescaled_change_per_branch() -> None:
    # Identity rescaling (poly1d([1, 0])): the accumulated value is the raw relative L1 change, 0.1 per step.
    cache = TeaCache(0.25, steps=8, coefficients=(1.0, 0.0), warmup_steps=1)
    assert _drive(cache, "cond", 0.1, 8) == list("CSSCSSCC"), "0.1, 0.2 skip; 0.3 >= 0.25 computes; last computes"
    # Another branch with a larger change has its own accumulator and never skips.
    assert _drive(cache, "uncond", 0.3, 8) == list("CCCCCCCC")
    assert (cache.computed, cache.skipped) == (12, 4)
    cache.reset()
    assert (cache.computed, cache.skipped) == (0, 0)
    assert _drive(cache, "cond", 0.1, 4) == list("CSSC")
    warm = TeaCache(0.25, steps=8, coefficients=(1.0, 0.0), warmup_steps=3)
    assert _drive(warm, "cond", 0.1, 8) == list("CCCSSCSC")


def test_teacache_uses_upstreams_polynomials() -> None:
    assert coefficients_for(480, 832) == COEFFICIENTS_480P and coefficients_for(832, 480) == COEFFICIENTS_480P
    assert coefficients_for(720, 1280) == COEFFICIENTS_720P
    # Upstream's 480p polynomial at a 1 % change is ~0.104: with threshold 0.2 every other such step is skipped.
    cache = TeaCache(0.2, steps=6, warmup_steps=1)
    assert _drive(cache, "cond", 0.01, 6) == list("CSCSCC")
    with pytest.raises(ValueError):
        TeaCache(0.0, steps=4)


def test_teacache_threshold_zero_is_bit_identical_to_no_cache(tiny, components, chunk_audio) -> None:
    base = _generate(ChunkGenerator(tiny, components, SamplingOptions(steps=4)), chunk_audio)
    off = ChunkGenerator(tiny, components, SamplingOptions(steps=4, teacache_threshold=0.0))
    assert off.teacache is None
    assert torch.equal(_generate(off, chunk_audio), base)
    # The cached code path itself does not change the arithmetic when nothing is skipped.
    never = ChunkGenerator(tiny, components, SamplingOptions(steps=4, teacache_threshold=1e-9, teacache_warmup_steps=1))
    assert torch.equal(_generate(never, chunk_audio), base)
    assert never.teacache is not None and (never.teacache.computed, never.teacache.skipped) == (12, 0)


def test_a_large_teacache_threshold_skips_the_blocks_and_stays_close(tiny, components, chunk_audio) -> None:
    steps = 6
    counter = _StackCounter(tiny)
    try:
        base = _generate(ChunkGenerator(tiny, components, SamplingOptions(steps=steps)), chunk_audio)
        assert counter.count == steps * 3, "no cache: 3 CFG passes per step"
        counter.count = 0
        options = SamplingOptions(steps=steps, teacache_threshold=1e12, teacache_warmup_steps=1)
        generator = ChunkGenerator(tiny, components, options)
        cached = _generate(generator, chunk_audio)
    finally:
        counter.remove()
    assert counter.count == 2 * 3, "only the first and the last step run the blocks, per branch"
    assert generator.teacache is not None
    assert (generator.teacache.computed, generator.teacache.skipped) == (6, 12)
    assert torch.isfinite(cached).all()
    # Skipping every middle step re-uses step 0's residual 4 times, yet the video stays within ~3 % (measured) of
    # the full computation: the embedding, modulation and head still see each step's input and timestep.
    error = _relative_error(cached, base)
    assert 0 < error < 0.1, error
    # Upstream's default warm-up (5 steps) leaves nothing to skip in a 6-step chunk.
    default = ChunkGenerator(tiny, components, SamplingOptions(steps=steps, teacache_threshold=1e12))
    assert torch.equal(_generate(default, chunk_audio), base)


def test_teacache_state_resets_for_every_chunk(tiny, components, chunk_audio, monkeypatch) -> None:
    options = SamplingOptions(steps=5, teacache_threshold=1e12, teacache_warmup_steps=1)
    generator = ChunkGenerator(tiny, components, options)
    cache = generator.teacache
    assert cache is not None
    resets = []
    original = cache.reset

    def reset(*args: object, **kwargs: object) -> None:
        original(*args, **kwargs)
        resets.append(args)
        assert not cache._branches and (cache.computed, cache.skipped) == (0, 0)

    monkeypatch.setattr(cache, "reset", reset)
    first = _generate(generator, chunk_audio)
    counts = (cache.computed, cache.skipped)
    assert counts == (6, 9)
    assert set(cache._branches) == {"cond", "no_text", "uncond"}
    # Leave junk behind: nothing of it may reach the next chunk (the reset clears it; step 0 also always computes).
    for state in cache._branches.values():
        state.residual = torch.full_like(state.residual, 1e6)
        state.accumulated = -1e9
    second = _generate(generator, chunk_audio)
    assert len(resets) == 2, "reset at the start of every chunk"
    assert (cache.computed, cache.skipped) == counts, "counters are per chunk, not cumulative"
    assert torch.equal(second, first), "the second chunk starts from a clean cache"
    # Without guidance on text (text_guidance 1) the branches are cond / no_audio.
    two = ChunkGenerator(tiny, components, SamplingOptions(steps=3, text_guidance=1.0, teacache_threshold=1e12,
                                                           teacache_warmup_steps=1))  # fmt: skip
    _generate(two, chunk_audio)
    assert two.teacache is not None and set(two.teacache._branches) == {"cond", "no_audio"}
    assert (two.teacache.computed, two.teacache.skipped) == (4, 2)


def test_torch_compile_option_compiles_the_loaded_dit(monkeypatch) -> None:
    """INFINITETALK_COMPILE=1: the loader hands out a torch.compile'd DiT that computes what the eager one does."""
    from services.video.infinitetalk import loader
    from services.video.infinitetalk.model import TINY

    monkeypatch.setenv("INFINITETALK_TINY", "1")
    monkeypatch.setenv("INFINITETALK_DEVICE", "cpu")
    monkeypatch.setenv("INFINITETALK_COMPILE", "1")
    setup = loader.setup_from_env()
    compiled, _ = loader.transformer_from_env(setup)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "latents": torch.randn(1, 36, 2, 4, 4, generator=generator),
        "timestep": torch.tensor([500.0]),
        "text": torch.randn(1, 3, TINY.text_dim, generator=generator),
        "image": torch.randn(1, 5, TINY.image_dim, generator=generator),
        "audio": torch.randn(1, 5, 5, TINY.audio_blocks, TINY.audio_channels, generator=generator),
    }
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs), compiled._orig_mod(**inputs), rtol=1e-4, atol=1e-5)
