"""Sample-rate conversion with exact length: n input samples become round(n * dst / src) output samples, so a time t
in the input is at t * dst samples in the output and every timing mark scales without drift.

Band-limited resampling in the frequency domain (one FFT per chunk, numpy only): ideal low-pass when downsampling,
no imaging when upsampling. Each engine chunk is a whole sentence, so it is resampled in one piece; zero padding at
both ends keeps the FFT's wrap-around away from the audio."""

from __future__ import annotations

import math

import numpy as np

MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 48_000


def resampled_length(n: int, src_rate: int, dst_rate: int) -> int:
    return (n * dst_rate + src_rate // 2) // src_rate


def _is_smooth(n: int) -> bool:
    for p in (2, 3, 5, 7, 11):
        while n % p == 0:
            n //= p
    return n == 1


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """int16 mono in, int16 mono out, `resampled_length` samples."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("sample rates must be positive")
    pcm = np.asarray(pcm, dtype=np.int16)
    if src_rate == dst_rate or len(pcm) == 0:
        return pcm.copy() if src_rate == dst_rate else np.zeros(0, dtype=np.int16)
    n_out = resampled_length(len(pcm), src_rate, dst_rate)
    # Pad by whole multiples of src/gcd input samples, which become whole multiples of dst/gcd output samples.
    g = math.gcd(src_rate, dst_rate)
    step_in, step_out = src_rate // g, dst_rate // g
    blocks = max(1, math.ceil(256 / step_in))
    pad_in, pad_out = blocks * step_in, blocks * step_out
    # The padded length is a whole number of src/gcd blocks, so the FFT scales time by exactly dst/src.
    blocks_total = math.ceil((len(pcm) + 2 * pad_in) / step_in)
    if _is_smooth(step_in) and _is_smooth(step_out):
        while not _is_smooth(blocks_total):
            blocks_total += 1  # FFT sizes with small prime factors only: several times faster
    n_in_padded = blocks_total * step_in
    n_out_padded = n_in_padded // step_in * step_out
    x = np.zeros(n_in_padded, dtype=np.float64)
    x[pad_in : pad_in + len(pcm)] = pcm
    spectrum = np.fft.rfft(x)
    out_bins = n_out_padded // 2 + 1
    resized = np.zeros(out_bins, dtype=np.complex128)
    keep = min(len(spectrum), out_bins)
    resized[:keep] = spectrum[:keep]
    if n_out_padded < n_in_padded and n_out_padded % 2 == 0:
        resized[-1] = 0.0  # the new Nyquist bin would alias
    elif n_out_padded > n_in_padded and n_in_padded % 2 == 0:
        resized[n_in_padded // 2] *= 0.5  # the old Nyquist bin splits between +f and -f
    y = np.fft.irfft(resized, n_out_padded) * (n_out_padded / n_in_padded)
    y = y[pad_out : pad_out + n_out]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)
