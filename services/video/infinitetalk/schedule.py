"""The InfiniteTalk chunk schedule: which audio frames each 81-frame generation chunk covers and which of its frames
are new output, exactly as upstream's streaming loop (MeiGen-AI/InfiniteTalk, wan/multitalk.py `generate`), so the
model sees the same motion overlap and audio windows it was trained and tuned with.

Upstream's loop, in terms of video frames at 25 fps (one audio feature frame per video frame):

- chunk 0 covers frames [0, frame_num); its only motion context is the reference image (1 frame) and all frame_num
  generated frames are output;
- every later chunk starts `frame_num - motion_frame` (72) after the previous one, re-uses the previous chunk's last
  `motion_frame` (9) generated frames as motion context, and outputs its remaining frame_num - motion_frame frames;
- after a chunk is planned the start advances, and the chunk whose end reaches the audio's length
  (`audio_end >= total`) is the last one: upstream appends `audio_end - total + 3` reflected feature frames (see
  `pad_features`) so every 5-frame window of that chunk has real neighbours, and trims the video to `total` frames.

Where we differ, on purpose:

- upstream refuses audio of `frame_num` frames or fewer (an assertion); we plan one chunk and trim its output to the
  utterance (the audio is padded with silence by `audio.AudioEncoder.encode_utterance`, since reflecting a very short
  clip several times over would make the mouth replay the clip backwards);
- upstream also stops at `max_frames_num` (1000 by default); a live session has no such cap, so neither has `plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FRAME_NUM = 81
MOTION_FRAME = 9
# Upstream pads the last chunk 3 frames past its end: the 5-frame window reaches 2 frames ahead, so no window clamps.
END_MARGIN = 3


@dataclass(frozen=True)
class Chunk:
    """One generation chunk. Frame indices count video frames (= audio feature frames) from the utterance start."""

    index: int
    audio_start: int  # first audio/video frame index this chunk's frame_num frames cover
    audio_end: int  # audio_start + frame_num
    motion_frames: int  # 1 for the first chunk (the reference image), else motion_frame
    emit_start: int  # first output frame (utterance frame index) this chunk contributes
    emit_end: int  # exclusive

    @property
    def skip(self) -> int:
        """Generated frames at the start of this chunk that are not output (the motion context it re-used)."""
        return self.emit_start - self.audio_start

    @property
    def emitted(self) -> int:
        return self.emit_end - self.emit_start


def _check(frame_num: int, motion_frame: int) -> None:
    # Wan's VAE compresses time 4x after a lone first frame: a chunk and its motion context must be 4n+1 frames.
    if frame_num < 5 or frame_num % 4 != 1:
        raise ValueError(f"frame_num must be 4n+1 and at least 5, got {frame_num}")
    if motion_frame < 1 or motion_frame % 4 != 1 or motion_frame >= frame_num:
        raise ValueError(f"motion_frame must be 4n+1 and smaller than frame_num ({frame_num}), got {motion_frame}")


def chunk_at(
    index: int, total_frames: int | None = None, frame_num: int = FRAME_NUM, motion_frame: int = MOTION_FRAME
) -> Chunk:
    """Chunk `index` of an utterance; `total_frames` trims its output (None: still growing, a live stream)."""
    start = index * (frame_num - motion_frame)
    end = start + frame_num
    motion = 1 if index == 0 else motion_frame
    emit_start = 0 if index == 0 else start + motion
    return Chunk(index, start, end, motion, emit_start, end if total_frames is None else min(end, total_frames))


def plan(total_frames: int, frame_num: int = FRAME_NUM, motion_frame: int = MOTION_FRAME) -> list[Chunk]:
    """The chunks for an utterance of `total_frames` video frames; their emitted ranges cover [0, total_frames) exactly
    once, in order. An empty utterance needs no chunk."""
    _check(frame_num, motion_frame)
    if total_frames < 0:
        raise ValueError(f"total_frames must be >= 0, got {total_frames}")
    chunks: list[Chunk] = []
    while total_frames > 0:
        chunks.append(chunk_at(len(chunks), total_frames, frame_num, motion_frame))
        if chunks[-1].audio_end >= total_frames:
            break
    return chunks


def padded_length(total_frames: int, frame_num: int = FRAME_NUM, motion_frame: int = MOTION_FRAME) -> int:
    """Audio feature frames the last chunk needs: its end plus upstream's 3-frame margin (0 for an empty utterance)."""
    chunks = plan(total_frames, frame_num, motion_frame)
    return chunks[-1].audio_end + END_MARGIN if chunks else 0


def pad_features(features: torch.Tensor, length: int) -> torch.Tensor:
    """`features` ([frames, ...]) extended to `length` frames along dim 0 by reflection, as upstream does for the last
    chunk: with n frames and m = length - n missing, it appends `torch.flip(features[-m:], dims=[0])`, that is frames
    n-1, n-2, ..., n-m (the last frame is repeated once: "symmetric", not "reflect"). Where m > n (upstream asserts
    before that can happen) the reflection continues back and forth: n-1..0, 0..n-1, ...; `encode_utterance` pads
    such short utterances with silence instead, so this only guards a caller that does not."""
    n = features.shape[0]
    if length < n:
        raise ValueError(f"cannot pad {n} feature frames down to {length}")
    if length == n:
        return features
    if n == 0:
        raise ValueError("cannot pad an empty feature sequence")
    positions = torch.arange(n, length, device=features.device) % (2 * n)
    source = torch.where(positions < n, positions, 2 * n - 1 - positions)
    return torch.cat([features, features[source]], dim=0)
