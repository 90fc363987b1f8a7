"""The pre-roll a slow renderer needs (the whole flow runs in tests/test_e2e_infinitetalk.py)."""

from __future__ import annotations

import pytest

from services.session.preroll import MARGIN_FRAMES, SAFETY, needs_preroll, preroll_frames


def test_a_realtime_renderer_needs_none() -> None:
    assert not needs_preroll(120.0, 1, 25, 10)
    assert needs_preroll(20.0, 1, 25, 10), "slower than the frame rate"
    assert needs_preroll(100.0, 81, 25, 10), "fast, but holds a whole chunk before it emits"


@pytest.mark.parametrize(("frames", "pace", "lookahead"), [(100, 10.0, 81), (250, 2.0, 81), (30, 50.0, 81)])
def test_every_frame_is_ready_when_it_is_due(frames: int, pace: float, lookahead: int) -> None:
    """Simulate: frame j is ready at (j + lookahead) / pace (chunked generation, upper bound); played from the
    pre-roll P it is due at (P + j) / 25."""
    wait = preroll_frames(frames, pace, lookahead, 25)
    assert all((j + lookahead) / pace <= (wait + j) / 25 for j in range(frames))
    # ...and not wildly more than needed.
    tight = max((j + lookahead) / pace * 25 - j for j in range(frames))
    assert wait <= (tight + 25 / pace) * SAFETY + MARGIN_FRAMES + 1


def test_the_pace_must_be_known() -> None:
    with pytest.raises(ValueError):
        preroll_frames(10, 0.0, 1, 25)
