"""A wall clock burned into frames, for measuring glass-to-glass latency (bench only; VIDEO_BURN_CLOCK=1).

Each frame carries the wall-clock time at which it was live (media epoch + its media time), in milliseconds modulo
2**32, as 32 black/white blocks of BLOCK px in two rows of 16 at the top-left corner, on a white frame. A viewer that
reads the blocks off the screen and compares them with its own clock gets the delay from live to glass.
"""

from __future__ import annotations

import numpy as np

from services.video.pixels import i420_planes

BLOCK = 12
BITS = 32
PER_ROW = 16
MARGIN = 4
WHITE, BLACK = 235, 16


def burn_clock(i420: bytes, width: int, height: int, wall_ms: int) -> bytes:
    """Returns the I420 frame with `wall_ms` burned in (luma only; chroma set neutral under the code)."""
    frame = np.frombuffer(i420, dtype=np.uint8).copy()
    luma, u, v = i420_planes(frame, width, height)
    box_w, box_h = PER_ROW * BLOCK + 2 * MARGIN, (BITS // PER_ROW) * BLOCK + 2 * MARGIN
    luma[:box_h, :box_w] = WHITE
    value = wall_ms % (1 << BITS)
    for bit in range(BITS):
        row, col = divmod(bit, PER_ROW)
        y, x = MARGIN + row * BLOCK, MARGIN + col * BLOCK
        luma[y : y + BLOCK, x : x + BLOCK] = BLACK if (value >> (BITS - 1 - bit)) & 1 else WHITE
    for chroma in (u, v):
        chroma[: box_h // 2 + 1, : box_w // 2 + 1] = 128
    return frame.tobytes()


def read_clock(luma: np.ndarray) -> int:
    """The burned value from a decoded frame's luma plane (samples each block's centre)."""
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, PER_ROW)
        y, x = MARGIN + row * BLOCK + BLOCK // 2, MARGIN + col * BLOCK + BLOCK // 2
        value = (value << 1) | int(luma[y, x] < 128)
    return value
