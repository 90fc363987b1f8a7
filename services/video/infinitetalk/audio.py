"""Speech -> InfiniteTalk audio conditioning: wav2vec2 hidden states at the video frame rate, as upstream computes them
(MeiGen-AI/InfiniteTalk: generate_infinitetalk.py `get_embedding`, `loudness_norm`; src/audio_analysis/wav2vec2.py).

Pipeline: mono audio resampled to 16 kHz, loudness-normalised to -23 LUFS, normalised by the checkpoint's
`Wav2Vec2FeatureExtractor` (zero mean, unit variance), then transformers' `Wav2Vec2Model` with one change: the conv
feature extractor's 50 Hz output is linearly interpolated (align_corners=True) to `frames` = int(duration * 25)
steps before the feature projection and the transformer encoder. The result stacks every encoder layer's output
(`hidden_states[1:]`): [frames, layers, hidden] (chinese-wav2vec2-base: 12 x 768). Each video frame then sees a
5-frame window of it (`frame_windows`).

The network is transformers' own: we only replace the conv feature extractor's output through a forward hook, so the
projection, positional convolution and encoder layers stay the maintained implementation.

Streaming: we encode each utterance's audio whole, once it is known, not incrementally per chunk. wav2vec2's encoder
uses self-attention over the whole input and its positional convolution spans 128 steps, so the features of a prefix
differ from the same frames' features in the whole utterance, and the interpolation to 25 fps depends on the total
length; upstream (and the InfiniteTalk adapter's training) encodes the whole file. Incremental encoding would also
need right context: a chunk covers 81 frames plus a 2-frame window margin, so the first chunk cannot start before
about 3.3 s of audio exist anyway, while a clause from the TTS arrives in one piece. The encoder (95M parameters for
wav2vec2-base) is small next to the 14B video model, so whole-utterance encoding costs little and keeps parity.

Deviations from upstream, on purpose:

- frames = (samples * fps) // sample_rate in exact integer arithmetic; upstream's `int(n / 16000 * 25)` loses a frame
  to float rounding for some lengths (e.g. 18 560 samples = 1.16 s gives 28, not 29);
- resampling uses scipy's polyphase filter (upstream: librosa/soxr); audio is already at 16 kHz in parity tests;
- loudness normalisation is skipped for audio shorter than pyloudnorm's 400 ms gating block (upstream would raise).
  Note that it is a pure gain followed by zero-mean/unit-variance normalisation, so it only matters when the
  checkpoint's preprocessor has `do_normalize` off; we keep it for parity.
"""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pyloudnorm
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from services.video.infinitetalk import schedule

MODEL_RATE_HZ = 16_000
MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 192_000
MAX_UTTERANCE_S = 600.0  # attention cost grows with the square of the length; a clause is seconds long
WINDOW = 5
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Parameters a checkpoint may lack without changing inference (SpecAugment's mask vector is used in training only).
OPTIONAL_KEYS = ("masked_spec_embed",)


def loudness_normalize(pcm: np.ndarray, sample_rate_hz: int, lufs: float = -23.0) -> np.ndarray:
    """`pcm` (mono, float in [-1, 1]; int16 is scaled) with its integrated loudness (ITU-R BS.1770) set to `lufs`, as
    float64. Returned unscaled where the measured loudness is beyond +-100 LUFS (silence measures -inf) or the audio is
    shorter than one 400 ms gating block, so silence is never amplified into noise."""
    x = _as_float(pcm).astype(np.float64)
    if not math.isfinite(lufs):
        raise ValueError(f"target loudness must be finite, got {lufs}")
    meter = pyloudnorm.Meter(sample_rate_hz)
    if len(x) < meter.block_size * sample_rate_hz:
        return x
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log10(0) for silence; "possible clipped samples" (upstream does not clip)
        loudness = meter.integrated_loudness(x)
        if not math.isfinite(loudness) or abs(loudness) > 100:
            return x
        return np.asarray(pyloudnorm.normalize.loudness(x, loudness, lufs), dtype=np.float64)


def _as_float(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.ndim != 1:
        raise ValueError(f"expected mono audio as a 1-D array, got shape {pcm.shape}")
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    if not np.issubdtype(pcm.dtype, np.floating):
        raise ValueError(f"expected int16 or float audio, got {pcm.dtype}")
    return pcm


def frame_count(samples: int, sample_rate_hz: int, fps: int = 25) -> int:
    """Video frames of `samples` audio samples: int(duration * fps), exactly."""
    return samples * fps // sample_rate_hz


def frame_windows(features: torch.Tensor, start: int, end: int, window: int = WINDOW) -> torch.Tensor:
    """The audio window of each video frame in [start, end): frame i sees feature frames i-2..i+2 (window 5), indices
    clamped to [0, len-1] as upstream does, so the first frames repeat frame 0 and, on unpadded features, the last
    ones repeat the last frame. Pass the padded features (`schedule.pad_features`) for upstream's last chunk.
    Returns [end-start, window, layers, hidden]."""
    if window < 1 or window % 2 != 1:
        raise ValueError(f"window must be odd and positive, got {window}")
    if not 0 <= start <= end:
        raise ValueError(f"bad frame range [{start}, {end})")
    if features.shape[0] == 0:
        raise ValueError("no audio features to window")
    offsets = torch.arange(window, device=features.device) - window // 2
    centres = torch.arange(start, end, device=features.device)[:, None] + offsets[None, :]
    return features[centres.clamp(0, features.shape[0] - 1)]


class AudioEncoder:
    """A resident wav2vec2 (HF folder layout) turning utterance audio into InfiniteTalk's per-frame features.
    Thread-safe: calls are serialised, so sessions may encode from worker threads."""

    def __init__(
        self, model_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        path = Path(model_dir)
        _check_folder(path)
        config = Wav2Vec2Config.from_pretrained(path, local_files_only=True)
        if config.model_type != "wav2vec2":
            raise ValueError(f"{path / CONFIG_FILE}: model_type is {config.model_type!r}, expected 'wav2vec2'")
        try:
            model, info = Wav2Vec2Model.from_pretrained(
                path, config=config, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot load the wav2vec2 weights in {path}: {exc}") from exc
        missing = [k for k in info.get("missing_keys", ()) if not k.endswith(OPTIONAL_KEYS)]
        # ignore_mismatched_sizes only collects them: a wrong shape is refused here, by name, with both shapes.
        mismatched = [f"{k} (file {tuple(a)}, config {tuple(b)})" for k, a, b in info.get("mismatched_keys", ())]
        if missing or mismatched:
            raise ValueError(
                f"wav2vec2 checkpoint in {path} does not match its config.json: "
                f"missing tensors {sorted(missing)}, wrong shapes {mismatched}"
            )
        self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(path, local_files_only=True)
        if self.extractor.sampling_rate != MODEL_RATE_HZ:
            raise ValueError(
                f"{path / PREPROCESSOR_FILE}: sampling_rate {self.extractor.sampling_rate}, expected 16000"
            )
        self.model: Wav2Vec2Model = model.to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.layers: int = config.num_hidden_layers
        self.hidden_size: int = config.hidden_size
        self._lock = threading.Lock()

    def encode(self, pcm: np.ndarray, sample_rate_hz: int, fps: int = 25) -> torch.Tensor:
        """[frames, layers, hidden] features of one utterance (mono int16 or float), frames = int(duration * fps), on
        this encoder's device and dtype."""
        x, frames = self._prepare(pcm, sample_rate_hz, fps)
        return self._encode(x, frames, frames)

    def encode_utterance(
        self,
        pcm: np.ndarray,
        sample_rate_hz: int,
        fps: int = 25,
        frame_num: int = schedule.FRAME_NUM,
        motion_frame: int = schedule.MOTION_FRAME,
    ) -> tuple[torch.Tensor, int]:
        """(features padded to `schedule.padded_length(total)`, total): what the chunk loop windows. An utterance longer
        than one chunk is padded by upstream's reflection; one of at most `frame_num` frames (upstream refuses it) is
        encoded with silence appended after the feature extractor's normalisation, so the face rests after the
        speech. Its output frames past `total` are trimmed by the schedule."""
        x, total = self._prepare(pcm, sample_rate_hz, fps)
        length = schedule.padded_length(total, frame_num, motion_frame)
        if total > frame_num:
            return schedule.pad_features(self._encode(x, total, total), length), total
        return self._encode(x, total, length, fps), total

    def _prepare(self, pcm: np.ndarray, sample_rate_hz: int, fps: int) -> tuple[np.ndarray, int]:
        if not MIN_RATE_HZ <= sample_rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"sample rate {sample_rate_hz} Hz outside [{MIN_RATE_HZ}, {MAX_RATE_HZ}]")
        if not 1 <= fps <= 120:
            raise ValueError(f"fps must be in [1, 120], got {fps}")
        x = _as_float(pcm)
        if len(x) > MAX_UTTERANCE_S * sample_rate_hz:
            raise ValueError(f"utterance longer than {MAX_UTTERANCE_S:.0f} s ({len(x) / sample_rate_hz:.1f} s)")
        frames = frame_count(len(x), sample_rate_hz, fps)
        if sample_rate_hz != MODEL_RATE_HZ and len(x):
            g = math.gcd(MODEL_RATE_HZ, sample_rate_hz)
            x = resample_poly(x.astype(np.float64), MODEL_RATE_HZ // g, sample_rate_hz // g)
        return loudness_normalize(x, MODEL_RATE_HZ), frames

    def _encode(self, x: np.ndarray, frames: int, length: int, fps: int = 25) -> torch.Tensor:
        """Features for `length` >= `frames` frames; the frames past `frames` are silence appended to the input."""
        if length == 0:
            return torch.zeros(0, self.layers, self.hidden_size, device=self.device, dtype=self.dtype)
        values = self.extractor(x, sampling_rate=MODEL_RATE_HZ, return_tensors="np").input_values[0]
        if length > frames:
            samples = -(-length * MODEL_RATE_HZ // fps)  # covers `length` frames
            values = np.pad(values, (0, max(0, samples - len(values))))
        inputs = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None].to(self.device, self.dtype)

        def to_frames(_module: torch.nn.Module, _args: tuple, conv: torch.Tensor) -> torch.Tensor:
            # conv: [batch, channels, 50 Hz steps] -> [batch, channels, length], upstream's linear_interpolation.
            return F.interpolate(conv, size=length, mode="linear", align_corners=True)

        with self._lock, torch.inference_mode():
            handle = self.model.feature_extractor.register_forward_hook(to_frames)
            try:
                out = self.model(inputs, output_hidden_states=True)
            finally:
                handle.remove()
        # hidden_states[0] is the encoder's input; [1:] are the layers' outputs, as upstream stacks them.
        return torch.stack(out.hidden_states[1:], dim=2)[0]


def _check_folder(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"wav2vec2 model folder not found: {path}")
    missing = [name for name in (CONFIG_FILE, PREPROCESSOR_FILE) if not (path / name).is_file()]
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise FileNotFoundError(f"wav2vec2 model folder {path} lacks {', '.join(missing)}")


def save_tiny_wav2vec2(path: Path, seed: int = 0, *, pytorch_bin: bool = False) -> Path:
    """A tiny random wav2vec2 (2 layers, hidden 32) in the HF folder layout with a preprocessor config, for tests and
    benchmarks without weights. Same conv strides and kernels as wav2vec2-base (16 kHz -> 50 Hz), so frame counts and
    interpolation behave as with the real model. `pytorch_bin` writes pytorch_model.bin with the weight-norm keys
    named as in the official chinese-wav2vec2-base file (weight_g/weight_v) instead of model.safetensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=32,
    )
    torch.manual_seed(seed)
    model = Wav2Vec2Model(config).eval()
    if pytorch_bin:
        config.save_pretrained(path)
        state = {
            k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): v.contiguous()
            for k, v in model.state_dict().items()
        }
        torch.save(state, path / "pytorch_model.bin")
    else:
        model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=MODEL_RATE_HZ, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(path)
    return path
