"""services/video/pixels.py: the one definition of the video path's I420 layout and BT.601 conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.video.pixels import (
    i420_planes,
    i420_size,
    i420_to_rgb,
    rgb_to_i420,
    rgb_to_i420_planes,
    rgb_to_yuv444,
)

REPO = Path(__file__).resolve().parent.parent
COLOURS = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255), (224, 172, 150)]


def flat(colour: tuple[int, int, int], width: int = 8, height: int = 6) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def test_the_layout_is_y_then_quarter_u_then_quarter_v() -> None:
    assert i420_size(8, 6) == 72
    frame = np.arange(72, dtype=np.uint8)
    y, u, v = i420_planes(frame, 8, 6)
    assert y.shape == (6, 8) and u.shape == v.shape == (3, 4)
    assert y[0, 0] == 0 and u[0, 0] == 48 and v[0, 0] == 60 and v[-1, -1] == 71
    u[:] = 128  # views: writing a plane writes the frame
    assert (frame[48:60] == 128).all()


@pytest.mark.parametrize(("colour", "yuv"), [((0, 0, 0), (16, 128, 128)), ((255, 255, 255), (235, 128, 128))])
def test_limited_range_black_and_white(colour: tuple[int, int, int], yuv: tuple[int, int, int]) -> None:
    data = np.frombuffer(rgb_to_i420(flat(colour)), np.uint8)
    planes = i420_planes(data, 8, 6)
    assert tuple(int(plane[0, 0]) for plane in planes) == yuv
    assert tuple(int(plane[0, 0]) for plane in rgb_to_i420_planes(flat(colour))) == yuv


@pytest.mark.parametrize("colour", COLOURS)
def test_the_two_encoders_are_one_conversion_on_flat_colour(colour: tuple[int, int, int]) -> None:
    fast = i420_planes(np.frombuffer(rgb_to_i420(flat(colour)), np.uint8), 8, 6)
    averaged = rgb_to_i420_planes(flat(colour))
    full = rgb_to_yuv444(flat(colour))
    for a, b, c in zip(fast, averaged, full, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1
        assert np.abs(c[: a.shape[0], : a.shape[1]].astype(int) - a).max() <= 1
    assert np.array_equal(full[0], fast[0])  # the warp's Y is exactly the frame encoder's


def test_chroma_siting_top_left_versus_block_mean() -> None:
    rgb = flat((0, 0, 0), 2, 2)
    rgb[0, 0] = (255, 0, 0)  # one red pixel of a 2x2 block
    *_, v_fast = i420_planes(np.frombuffer(rgb_to_i420(rgb), np.uint8), 2, 2)
    *_, v_mean = rgb_to_i420_planes(rgb)
    red_v = int(i420_planes(np.frombuffer(rgb_to_i420(flat((255, 0, 0), 2, 2)), np.uint8), 2, 2)[2][0, 0])
    assert int(v_fast[0, 0]) == red_v  # the top-left pixel's chroma
    assert abs(int(v_mean[0, 0]) - (128 + (red_v - 128) / 4)) <= 1  # the mean of the block


def test_round_trip_of_a_smooth_picture() -> None:
    ys, xs = np.mgrid[0:64, 0:96].astype(np.float32)
    rgb = np.stack([xs * 2.5, ys * 3.5, 255 - xs * 2.0], axis=-1).clip(0, 255).astype(np.uint8)
    back = i420_to_rgb(rgb_to_i420(rgb), 96, 64)
    assert back.shape == rgb.shape and np.abs(back.astype(int) - rgb).mean() < 3


def test_no_other_module_converts_pixels() -> None:
    """The photo warp's mouth kernel (numba, one fused per-pixel loop) keeps the same coefficients inline."""
    allowed = {"services/video/pixels.py", "services/video/photo/kernels.py"}
    markers = ("COLOR_RGB2YUV", "COLOR_YUV2RGB", "37.797", "65.481")
    found = sorted(
        str(path.relative_to(REPO))
        for folder in ("services", "infinitetalk_live", "gateway")
        for path in (REPO / folder).rglob("*.py")
        if any(marker in path.read_text("utf-8") for marker in markers)
    )
    assert set(found) <= allowed, found
