"""A contact sheet of an avatar speaking a sentence: frames across the utterance, each captioned with its time and
the word being spoken, over a strip that plots the speech envelope against the mouth opening that the landmark model
reads from the same frames.

Runs the video renderer in-process (no stack needed): `python -m infinitetalk_live.contact_sheet --out sheet.png`
(or `infinitetalk contact-sheet`).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import cv2
import numpy as np

DEFAULT_TEXT = "Hello there! I am a photo that talks, and my lips move with every word."
CHUNK_FRAMES = 12  # the idle loop's length is a whole number of these (a 480 ms segment at 25 fps)


def _caption(tile: np.ndarray, lines: list[str]) -> None:
    for row, line in enumerate(lines):
        y = 18 + 18 * row
        cv2.putText(tile, line, (7, y + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def _plot(width: int, height: int, times: np.ndarray, series: list[tuple[np.ndarray, tuple[int, int, int], str]],
          marks: list[float]) -> np.ndarray:  # fmt: skip
    strip = np.full((height, width, 3), 250, np.uint8)
    span = max(times[-1], 1e-6)
    for t in marks:
        x = int(t / span * (width - 1))
        cv2.line(strip, (x, 0), (x, height - 1), (200, 200, 200), 1)
    for index, (values, color, label) in enumerate(series):
        finite = np.nan_to_num(values, nan=np.nanmin(values) if np.isfinite(values).any() else 0.0)
        low, high = float(finite.min()), float(finite.max())
        scaled = (finite - low) / max(high - low, 1e-9)
        points = np.stack([times / span * (width - 1), (1 - scaled) * (height - 30) + 22], axis=1).astype(np.int32)
        cv2.polylines(strip, [points], False, color, 2, cv2.LINE_AA)
        cv2.putText(strip, label, (8 + 260 * index, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return strip


async def make_sheet(
    text: str, avatar: str, portrait: bytes | None, size: int, columns: int, rows: int, tile: int
) -> np.ndarray:
    """The contact sheet as an RGB image."""
    from infinitetalk_live.speech_drives import speak
    from services.video.backend import IdleLoop
    from services.video.drawn import DrawnBackend
    from services.video.idle import loop_frames
    from services.video.photo.backend import PhotoBackend
    from services.video.photo.lipsync import mouth_openings, smooth
    from services.video.pixels import i420_to_rgb

    spoken = await speak(text)
    photo = PhotoBackend()
    if portrait is not None:
        avatar = photo.prepare_portrait(portrait).name
    backend = DrawnBackend() if avatar.startswith("drawn") else photo
    loop = IdleLoop(loop_frames(spoken.fps, CHUNK_FRAMES))
    renderer = backend.open(avatar, size, size, spoken.fps, spoken.sample_rate_hz, loop)
    frames = []
    for drive in spoken.drives:
        frames.append(i420_to_rgb(renderer.render_frame(drive), size, size))
    times = np.arange(len(frames)) / spoken.fps
    x0, y0, x1, y1 = 0, 0, size, size
    rig = getattr(getattr(renderer, "warp", None), "rig", None)
    if rig is not None:  # a photo: zoom in on the face so the lips are visible
        center = rig.face.xy.mean(axis=0)
        half = min(size / 2, 0.8 * rig.face_width)
        x0 = int(np.clip(center[0] - half, 0, size - 2 * half))
        y0 = int(np.clip(center[1] - half + 0.1 * half, 0, size - 2 * half))
        x1, y1 = x0 + int(2 * half), y0 + int(2 * half)
    openings = mouth_openings(frames)
    picks = np.linspace(spoken.speech_start_s, spoken.speech_end_s, columns * rows)
    tiles = []
    for t in picks:
        index = min(len(frames) - 1, round(t * spoken.fps))
        picture = cv2.resize(frames[index][y0:y1, x0:x1], (tile, tile), interpolation=cv2.INTER_AREA)
        word = next((w for w, start, end in spoken.words if start <= index / spoken.fps < end), "")
        _caption(picture, [f"{index / spoken.fps:.2f} s", word])
        tiles.append(picture)
    grid = np.concatenate([np.concatenate(tiles[r * columns : (r + 1) * columns], axis=1) for r in range(rows)], axis=0)
    strip = _plot(
        grid.shape[1],
        120,
        times,
        [
            (smooth(spoken.envelope()), (40, 110, 200), "speech envelope"),
            (openings, (200, 60, 60), "mouth opening (landmarks on the output)"),
        ],
        list(picks),
    )
    return np.concatenate([grid, strip], axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--avatar", default="astronaut", help="built-in avatar (astronaut, drawn, drawn-kai)")
    parser.add_argument("--portrait", type=Path, help="a JPEG/PNG/WebP portrait to animate instead")
    parser.add_argument("--size", type=int, default=512, help="rendered frame size (square)")
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--tile", type=int, default=256, help="size of each frame on the sheet")
    parser.add_argument("--out", type=Path, default=Path("contact-sheet.png"))


def run(args: argparse.Namespace) -> int:
    portrait = args.portrait.read_bytes() if args.portrait else None
    sheet = asyncio.run(make_sheet(args.text, args.avatar, portrait, args.size, args.columns, args.rows, args.tile))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"contact sheet: {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
