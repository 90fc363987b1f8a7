"""Optional speed-ups for the InfiniteTalk DiT, both off by default.

* **fp8 weights** (:func:`quantize_linears_fp8`): the transformer blocks' Linear weights (self/cross attention q/k/v/o
  and CLIP k/v, feed-forward, audio cross-attention) are stored as ``float8_e4m3fn`` with one float32 scale per output
  channel and de-quantised to the compute dtype inside ``forward``. That halves the weight memory of a bf16 model (the
  14B I2V DiT + adapter: ~38 GB -> ~19 GB), so it fits GPUs it otherwise does not; compute stays in bf16. Norms,
  modulation tables, embedders, the output head and the audio projection keep their dtype (small and sensitive).
* **TeaCache** (:class:`TeaCache`, after upstream's ``teacache_init`` in MeiGen-AI/InfiniteTalk): per CFG branch, the
  relative L1 change of the timestep modulation (``timestep_proj``, upstream's ``e0``) between consecutive steps is
  rescaled by upstream's fitted polynomial and accumulated; while the sum stays below the threshold the transformer
  blocks are skipped and the branch's previous residual (block-stack output minus input) is added instead. The first
  ``warmup_steps`` steps and the last step always run the blocks. State is per branch and is reset for every chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448


class Fp8Linear(nn.Module):
    """A Linear layer whose weight is stored in float8 (e4m3) with a per-output-channel scale.

    ``weight_fp8`` and ``scale`` are buffers (not parameters), so ``model.parameters()`` still reports the compute
    dtype; ``bias`` stays in the compute dtype.
    """

    def __init__(
        self, weight_fp8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, compute_dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        self.compute_dtype = compute_dtype
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.to(compute_dtype), requires_grad=False)

    @classmethod
    @torch.no_grad()
    def from_linear(
        cls, linear: nn.Linear, compute_dtype: torch.dtype, device: torch.device | str | None = None
    ) -> Fp8Linear:
        """Quantise ``linear`` (on ``device`` if given, else where it lives): scale = row amax / 448."""
        weight = linear.weight.detach().to(device=device, dtype=torch.float32)
        scale = (weight.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
        weight_fp8 = (weight / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
        bias = None if linear.bias is None else linear.bias.detach().to(device=device)
        return cls(weight_fp8, scale, bias, compute_dtype)

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_fp8.to(self.compute_dtype) * self.scale.to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.compute_dtype), self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compute_dtype={self.compute_dtype}"


def in_transformer_blocks(name: str, module: nn.Module) -> bool:
    """The default selection: every Linear inside the DiT's blocks (attention, FFN, audio cross-attention)."""
    return name.startswith("dit.blocks.")


@torch.no_grad()
def quantize_linears_fp8(
    model: nn.Module,
    compute_dtype: torch.dtype = torch.bfloat16,
    *,
    device: torch.device | str | None = None,
    include: Callable[[str, nn.Module], bool] = in_transformer_blocks,
) -> int:
    """Replace each selected ``nn.Linear`` of ``model`` by an :class:`Fp8Linear`, in place; returns how many.

    With ``device``, each layer is quantised on that device one at a time (a model loaded on the host in full
    precision never needs its full-precision weights on the GPU); move the rest of the model there afterwards.
    Merge LoRAs before quantising: the result has no full-precision weight to merge into.
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and include(name, module)  # exact type: never re-quantise an Fp8Linear
    ]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Fp8Linear.from_linear(linear, compute_dtype, device))
    return len(targets)


def fp8_weight_bytes(model: nn.Module) -> int:
    """Bytes held by the fp8 weights and their scales (for memory reports and tests)."""
    return sum(
        m.weight_fp8.numel() * m.weight_fp8.element_size() + m.scale.numel() * m.scale.element_size()
        for m in model.modules()
        if isinstance(m, Fp8Linear)
    )


# --- TeaCache --------------------------------------------------------------------------------------------------------

# Upstream's rescaling polynomials (numpy.poly1d order: highest degree first) for InfiniteTalk I2V, fitted on the
# relative L1 change of the timestep modulation e0 ("use_ret_steps" mode, upstream's default).
COEFFICIENTS_480P = (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01)
COEFFICIENTS_720P = (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02)
# Upstream runs the blocks for the first 5 steps in that mode ("ret_steps").
DEFAULT_WARMUP_STEPS = 5

BlockCache = Callable[[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]


def coefficients_for(height: int, width: int) -> tuple[float, ...]:
    """480p or 720p polynomial by pixel count (halfway between 832x480 and 1280x720 decides)."""
    return COEFFICIENTS_720P if height * width > (832 * 480 + 1280 * 720) / 2 else COEFFICIENTS_480P


@dataclass
class _Branch:
    previous_modulation: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    accumulated: float = 0.0


class TeaCache:
    """Step skipping for one chunk at a time; one state per CFG branch (``cond``, ``no_text``, ``uncond``...).

    ``threshold``: upstream's ``teacache_thresh`` (0.2 by default there; higher skips more). ``steps``: sampling steps
    per chunk. Counters ``computed`` / ``skipped`` count block-stack passes since the last :meth:`reset`.
    """

    def __init__(
        self,
        threshold: float,
        steps: int,
        coefficients: tuple[float, ...] = COEFFICIENTS_480P,
        warmup_steps: int = DEFAULT_WARMUP_STEPS,
    ) -> None:
        if threshold <= 0:
            raise ValueError("TeaCache threshold must be positive (0 means: no cache)")
        if warmup_steps < 1:
            raise ValueError("warmup_steps must be at least 1 (the first step has nothing to re-use)")
        self.threshold = threshold
        self.warmup_steps = warmup_steps
        self.reset(steps, coefficients)

    def reset(self, steps: int | None = None, coefficients: tuple[float, ...] | None = None) -> None:
        """Forget every branch's state (a new chunk starts from pure noise); optionally change steps/coefficients."""
        if steps is not None:
            self.steps = steps
        if coefficients is not None:
            self.coefficients = tuple(coefficients)
            self._rescale = np.poly1d(self.coefficients)
        self._branches: dict[str, _Branch] = {}
        self.computed = 0
        self.skipped = 0

    def bind(self, branch: str, step: int) -> BlockCache:
        """The ``block_cache`` for one model call: ``InfiniteTalkTransformer.forward(..., block_cache=...)``."""

        def run(hidden: torch.Tensor, modulation: torch.Tensor, blocks: Callable[[torch.Tensor], torch.Tensor]):
            return self._run(branch, step, hidden, modulation, blocks)

        return run

    def _should_compute(self, state: _Branch, step: int, hidden: torch.Tensor, modulation: torch.Tensor) -> bool:
        previous = state.previous_modulation
        if (
            step < self.warmup_steps
            or step >= self.steps - 1
            or previous is None
            or state.residual is None
            or previous.shape != modulation.shape
            or state.residual.shape != hidden.shape
        ):
            return True
        change = ((modulation.float() - previous).abs().mean() / previous.abs().mean().clamp(min=1e-12)).item()
        state.accumulated += float(self._rescale(change))
        return state.accumulated >= self.threshold

    def _run(
        self,
        branch: str,
        step: int,
        hidden: torch.Tensor,
        modulation: torch.Tensor,
        blocks: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        state = self._branches.setdefault(branch, _Branch())
        compute = self._should_compute(state, step, hidden, modulation)
        state.previous_modulation = modulation.detach().float().clone()
        if not compute:
            self.skipped += 1
            return hidden + state.residual.to(hidden.dtype)  # type: ignore[union-attr]
        state.accumulated = 0.0
        self.computed += 1
        out = blocks(hidden)
        state.residual = (out - hidden).detach()
        return out
