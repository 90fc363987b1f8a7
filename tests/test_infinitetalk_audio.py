"""InfiniteTalk audio conditioning on a tiny random wav2vec2: parity with a reference computed step by step as upstream
does (generate_infinitetalk.py get_embedding, src/audio_analysis/wav2vec2.py), frame counts, loudness, windows,
padding and loading errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

from services.video.infinitetalk.audio import AudioEncoder, frame_windows, loudness_normalize, save_tiny_wav2vec2
from services.video.infinitetalk.schedule import pad_features, padded_length

RATE = 16_000


def speech_like(seconds: float, rate: int = RATE, seed: int = 1) -> np.ndarray:
    """Voiced harmonics with a syllable-rate envelope plus a little noise: loud enough to measure, not a pure tone."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.02
    return (0.2 * voiced * envelope + noise).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny", seed=3)


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> AudioEncoder:
    return AudioEncoder(model_dir)


def reference_features(model_dir: Path, speech: np.ndarray, seq_len: int) -> torch.Tensor:
    """Upstream's get_embedding, step by step on an independently loaded copy of the model."""
    meter = pyloudnorm.Meter(RATE)
    loudness = meter.integrated_loudness(speech.astype(np.float64))
    if abs(loudness) <= 100:
        speech = pyloudnorm.normalize.loudness(speech.astype(np.float64), loudness, -23)
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    values = torch.from_numpy(np.squeeze(extractor(speech, sampling_rate=RATE).input_values)).float()[None]
    model = Wav2Vec2Model.from_pretrained(model_dir).eval()
    with torch.no_grad():
        conv = model.feature_extractor(values).transpose(1, 2)  # [1, steps, channels]
        conv = F.interpolate(conv.transpose(1, 2), size=seq_len, align_corners=True, mode="linear").transpose(1, 2)
        hidden, _ = model.feature_projection(conv)
        enc = model.encoder
        hidden = enc.dropout(enc.layer_norm(hidden + enc.pos_conv_embed(hidden)))
        outputs = []
        for layer in enc.layers:
            hidden = layer(hidden)
            outputs.append(hidden)
    # torch.stack(hidden_states[1:], dim=1).squeeze(0), then "b s d -> s b d"
    return torch.stack(outputs, dim=1).squeeze(0).permute(1, 0, 2)


@pytest.mark.parametrize("seconds", [2.3, 4.0])
def test_parity_with_stepwise_reference(model_dir: Path, encoder: AudioEncoder, seconds: float) -> None:
    speech = speech_like(seconds)
    got = encoder.encode(speech, RATE)
    expected = reference_features(model_dir, speech, int(seconds * 25))
    assert got.shape == expected.shape == (int(seconds * 25), 2, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got[0], got[-1])  # features vary along time


def test_identity_interpolation_matches_unmodified_hf_model(model_dir: Path, encoder: AudioEncoder) -> None:
    # At fps=50 and 320k+80 samples the conv output already has `frames` steps, so the interpolation is the identity
    # and the features must equal plain Wav2Vec2Model's hidden_states[1:].
    speech = speech_like((320 * 60 + 80) / RATE)
    got = encoder.encode(speech, RATE, fps=50)
    values = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)(
        loudness_normalize(speech, RATE), sampling_rate=RATE, return_tensors="pt"
    ).input_values
    model = Wav2Vec2Model.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model(values, output_hidden_states=True)
    assert out.extract_features.shape[1] == 60
    torch.testing.assert_close(got, torch.stack(out.hidden_states[1:], dim=2)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("samples", "rate", "frames"),
    [
        (640, 16_000, 1),
        (16_000, 16_000, 25),
        (18_560, 16_000, 29),  # exactly 1.16 s: upstream's float expression gives 28
        (40_000, 16_000, 62),
        (48_001, 16_000, 75),
        (24_000, 24_000, 25),
        (960 * 7, 24_000, 7),
        (959, 24_000, 0),
        (8_000 * 3, 8_000, 75),
    ],
)
def test_frame_count(encoder: AudioEncoder, samples: int, rate: int, frames: int) -> None:
    pcm = (speech_like(samples / rate + 0.01, rate=rate)[:samples] * 32767).astype(np.int16)
    assert encoder.encode(pcm, rate).shape == (frames, encoder.layers, encoder.hidden_size)


def test_resampled_input_is_close_to_native_16k(encoder: AudioEncoder) -> None:
    a = encoder.encode(speech_like(2.0, rate=16_000), 16_000)
    b = encoder.encode(speech_like(2.0, rate=24_000), 24_000)
    assert a.shape == b.shape
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.95


@pytest.mark.parametrize("signal", ["sine", "speech"])
def test_loudness_reaches_target(signal: str) -> None:
    t = np.arange(3 * RATE) / RATE
    x = 0.5 * np.sin(2 * np.pi * 440 * t) if signal == "sine" else speech_like(3.0) * 0.1
    before = pyloudnorm.Meter(RATE).integrated_loudness(x.astype(np.float64))
    y = loudness_normalize(x, RATE)
    after = pyloudnorm.Meter(RATE).integrated_loudness(y)
    assert abs(before + 23) > 3
    assert abs(after + 23) < 0.5
    assert abs(loudness_normalize(x, RATE, lufs=-16.0).std() / y.std() - 10 ** (7 / 20)) < 1e-6


def test_loudness_leaves_silence_and_short_audio_alone() -> None:
    silence = np.zeros(2 * RATE, dtype=np.float32)
    assert np.array_equal(loudness_normalize(silence, RATE), silence)
    short = speech_like(0.3)
    assert np.array_equal(loudness_normalize(short, RATE), short)
    pcm16 = (speech_like(1.0) * 32767).astype(np.int16)
    assert abs(pyloudnorm.Meter(RATE).integrated_loudness(loudness_normalize(pcm16, RATE)) + 23) < 0.5


def test_frame_windows_clamp_like_upstream() -> None:
    feats = torch.arange(10, dtype=torch.float32)[:, None, None].expand(10, 3, 4).clone()
    # upstream: center_indices = arange(start, end)[:, None] + (arange(5) - 2), clamped to [0, len - 1]
    start_table = [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]
    end_table = [[5, 6, 7, 8, 9], [6, 7, 8, 9, 9], [7, 8, 9, 9, 9]]
    head = frame_windows(feats, 0, 4)
    tail = frame_windows(feats, 7, 10)
    assert head.shape == (4, 5, 3, 4)
    assert head[:, :, 0, 0].tolist() == start_table
    assert tail[:, :, 0, 0].tolist() == end_table
    rich = torch.randn(10, 3, 4)
    assert torch.equal(frame_windows(rich, 7, 10), rich[torch.tensor(end_table)])
    assert frame_windows(rich, 4, 4).shape == (0, 5, 3, 4)
    with pytest.raises(ValueError):
        frame_windows(rich, 0, 3, window=4)


def test_encode_utterance_pads_long_by_reflection(encoder: AudioEncoder) -> None:
    speech = speech_like(4.0)  # 100 frames: two chunks, last ends at 153
    feats, total = encoder.encode_utterance(speech, RATE)
    plain = encoder.encode(speech, RATE)
    assert total == 100 and feats.shape[0] == padded_length(100) == 156
    assert torch.equal(feats, pad_features(plain, 156))
    assert torch.equal(feats[100:], torch.flip(plain[-56:], dims=[0]))


def test_encode_utterance_pads_short_with_silence(encoder: AudioEncoder) -> None:
    speech = speech_like(0.4)  # 10 frames: one chunk of 81, windows need 84
    feats, total = encoder.encode_utterance(speech, RATE)
    assert total == 10 and feats.shape == (84, 2, 32)
    assert torch.isfinite(feats).all()
    # The padded frames are silence: all alike, and unlike the speech.
    tail = feats[40:]
    assert (tail - tail.mean(0)).abs().max() < (feats[:10] - tail.mean(0)).abs().max()
    empty, n = encoder.encode_utterance(np.zeros(0, dtype=np.int16), 24_000)
    assert n == 0 and empty.shape == (0, 2, 32)


def test_pytorch_bin_layout_loads_to_same_model(model_dir: Path, encoder: AudioEncoder, tmp_path: Path) -> None:
    other = AudioEncoder(save_tiny_wav2vec2(tmp_path / "bin", seed=3, pytorch_bin=True))
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    speech = speech_like(1.0)
    assert torch.equal(other.encode(speech, RATE), encoder.encode(speech, RATE))


def test_bad_input(encoder: AudioEncoder) -> None:
    with pytest.raises(ValueError, match="mono"):
        encoder.encode(np.zeros((2, 100), dtype=np.float32), RATE)
    with pytest.raises(ValueError, match="sample rate"):
        encoder.encode(np.zeros(100, dtype=np.float32), 1000)
    with pytest.raises(ValueError, match="int16 or float"):
        encoder.encode(np.zeros(100, dtype=np.int32), RATE)


def test_missing_folder_and_files(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not found: .*nowhere"):
        AudioEncoder(tmp_path / "nowhere")
    for name in ("preprocessor_config.json", "config.json", "model.safetensors"):
        broken = tmp_path / f"without-{name}"
        shutil.copytree(model_dir, broken)
        (broken / name).unlink()
        with pytest.raises(FileNotFoundError, match=rf"{broken}.*{name}"):
            AudioEncoder(broken)


def test_missing_or_misshapen_tensor_is_named(tmp_path: Path) -> None:
    folder = save_tiny_wav2vec2(tmp_path / "ckpt", pytorch_bin=True)
    state = torch.load(folder / "pytorch_model.bin")
    key = "encoder.layers.1.attention.k_proj.weight"
    weight = state.pop(key)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=rf"missing tensors .*{key}"):
        AudioEncoder(folder)
    state[key] = weight[:8]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=rf"wrong shapes .*{key} \(file \(8, 32\), config \(32, 32\)\)"):
        AudioEncoder(folder)


def test_loudness_normalisation_applies_before_the_model(model_dir: Path, tmp_path: Path) -> None:
    # With the preprocessor's own normalisation off, only loudness normalisation makes the features gain-invariant.
    folder = tmp_path / "no-normalize"
    shutil.copytree(model_dir, folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, do_normalize=False).save_pretrained(folder)
    enc = AudioEncoder(folder)
    speech = speech_like(2.0)
    torch.testing.assert_close(enc.encode(speech, RATE), enc.encode(speech * 0.1, RATE), atol=1e-4, rtol=1e-3)
