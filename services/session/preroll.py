"""How long a slower-than-real-time renderer needs before an utterance can play through without stalling.

A renderer that holds `lookahead` drives before it emits (a chunked model) and then makes `fps_render` frames per
second finishes the utterance's frame j at about (j + lookahead) / fps_render seconds after it gets the audio. Played
from a delay of P frames, frame j is due at (P + j) / fps. So the play-through condition for every frame of an
N-frame utterance is P >= fps * lookahead / fps_render + max over j of j * (fps / fps_render - 1), i.e.
P >= fps * lookahead / fps_render + max(0, N * (fps / fps_render - 1)). A safety factor covers the pace's noise.
A real-time renderer (fps_render >= fps, one drive ahead) needs no pre-roll.
"""

from __future__ import annotations

import math

SAFETY = 1.15
MARGIN_FRAMES = 6


def needs_preroll(fps_render: float, lookahead: int, fps: int, realtime_lookahead: int) -> bool:
    """Whether a renderer at this pace cannot keep up with playout started at once."""
    return fps_render > 0 and (fps_render < 0.98 * fps or lookahead > realtime_lookahead)


def preroll_frames(frames: int, fps_render: float, lookahead: int, fps: int) -> int:
    """Frames of idle before an utterance of `frames` frames so it plays through without a stall."""
    if fps_render <= 0:
        raise ValueError("the renderer's pace must be positive")
    needed = fps * lookahead / fps_render + max(0.0, frames * (fps / fps_render - 1.0))
    return math.ceil(needed * SAFETY) + MARGIN_FRAMES
