"""The InfiniteTalk chunk schedule against upstream's streaming loop (wan/multitalk.py `generate`)."""

from __future__ import annotations

import pytest
import torch

from services.video.infinitetalk.schedule import Chunk, pad_features, padded_length, plan


def _upstream(total: int, frame_num: int = 81, motion_frame: int = 9) -> tuple[list[tuple[int, int, int]], int, int]:
    """upstream's loop variables, transcribed: ([(audio_start_idx, audio_end_idx, cur_motion_frames_num)] per chunk,
    padded audio length, output frames). Valid for total > frame_num, as upstream asserts."""
    cur_motion, start, end = 1, 0, frame_num  # cur_motion_frames_num, audio_start_idx, audio_end_idx
    chunks, length, out = [], total, 0  # length: len(full_audio_embs[0]); out: frames in gen_video_list
    is_first_clip, arrive_last_frame = True, False
    while True:
        chunks.append((start, end, cur_motion))
        out += frame_num if is_first_clip else frame_num - cur_motion
        if arrive_last_frame:
            break
        is_first_clip = False
        cur_motion = motion_frame
        start += frame_num - cur_motion
        end = start + frame_num
        if end >= length:
            arrive_last_frame = True
            length += end - length + 3  # miss_length frames appended
    return chunks, length, min(out, total)


def test_ten_second_utterance_matches_upstream_table() -> None:
    # 10 s at 25 fps = 250 frames. By hand from upstream's loop: chunk 0 covers [0, 81) with the reference image as its
    # one motion frame and outputs all 81; each later chunk starts 81 - 9 = 72 later, re-uses 9 frames, outputs 72.
    # Chunk 3 ends at 297 >= 250: last; audio padded by 297 - 250 + 3 = 50 frames; video trimmed to 250.
    assert plan(250) == [
        Chunk(index=0, audio_start=0, audio_end=81, motion_frames=1, emit_start=0, emit_end=81),
        Chunk(index=1, audio_start=72, audio_end=153, motion_frames=9, emit_start=81, emit_end=153),
        Chunk(index=2, audio_start=144, audio_end=225, motion_frames=9, emit_start=153, emit_end=225),
        Chunk(index=3, audio_start=216, audio_end=297, motion_frames=9, emit_start=225, emit_end=250),
    ]
    assert padded_length(250) == 300
    assert [c.skip for c in plan(250)] == [0, 9, 9, 9]


def test_plan_equals_transcribed_upstream_loop() -> None:
    for total in range(82, 1001):  # upstream refuses 81 frames or fewer
        chunks, length, out = _upstream(total)
        got = plan(total)
        assert [(c.audio_start, c.audio_end, c.motion_frames) for c in got] == chunks, total
        assert padded_length(total) == length, total
        assert sum(c.emitted for c in got) == out == total


def test_plan_properties_over_many_lengths() -> None:
    for total in range(1, 1001):
        chunks = plan(total)
        assert chunks, total
        assert chunks[0].emit_start == 0 and chunks[-1].emit_end == total
        for k, c in enumerate(chunks):
            assert c.index == k
            assert c.audio_end - c.audio_start == 81
            assert c.emit_start < c.emit_end <= c.audio_end  # every chunk outputs something
            assert c.motion_frames == (1 if k == 0 else 9)
            if k:
                prev = chunks[k - 1]
                assert c.audio_start == prev.audio_start + 72
                assert c.emit_start == prev.emit_end == c.audio_start + 9
        assert chunks[-1].audio_end >= total
        assert all(c.audio_end < total for c in chunks[:-1])
        assert padded_length(total) == chunks[-1].audio_end + 3


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, [Chunk(0, 0, 81, 1, 0, 1)]),
        (10, [Chunk(0, 0, 81, 1, 0, 10)]),
        (81, [Chunk(0, 0, 81, 1, 0, 81)]),
        (82, [Chunk(0, 0, 81, 1, 0, 81), Chunk(1, 72, 153, 9, 81, 82)]),
        (153, [Chunk(0, 0, 81, 1, 0, 81), Chunk(1, 72, 153, 9, 81, 153)]),
        (154, [Chunk(0, 0, 81, 1, 0, 81), Chunk(1, 72, 153, 9, 81, 153), Chunk(2, 144, 225, 9, 153, 154)]),
    ],
)
def test_short_and_boundary_utterances(total: int, expected: list[Chunk]) -> None:
    assert plan(total) == expected
    assert padded_length(total) == expected[-1].audio_end + 3


def test_empty_utterance_and_bad_arguments() -> None:
    assert plan(0) == [] and padded_length(0) == 0
    with pytest.raises(ValueError, match="total_frames"):
        plan(-1)
    with pytest.raises(ValueError, match="frame_num"):
        plan(10, frame_num=80)
    with pytest.raises(ValueError, match="motion_frame"):
        plan(10, motion_frame=10)
    with pytest.raises(ValueError, match="motion_frame"):
        plan(10, frame_num=9, motion_frame=9)


def test_other_chunk_sizes() -> None:
    assert plan(40, frame_num=17, motion_frame=5) == [
        Chunk(0, 0, 17, 1, 0, 17),
        Chunk(1, 12, 29, 5, 17, 29),
        Chunk(2, 24, 41, 5, 29, 40),
    ]


def test_pad_features_reproduces_upstream_flip() -> None:
    x = torch.arange(6, dtype=torch.float32)[:, None].repeat(1, 3)
    assert pad_features(x, 9)[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 5, 4, 3]
    # The 10 s utterance: 250 feature frames padded to 300, upstream's expression literally.
    feats = torch.randn(250, 2, 4)
    miss = 300 - 250
    upstream = torch.cat([feats, torch.flip(feats[-1 * miss :], dims=[0])], dim=0)
    assert torch.equal(pad_features(feats, padded_length(250)), upstream)
    assert pad_features(feats, 250) is feats


def test_pad_features_beyond_one_reflection_and_errors() -> None:
    x = torch.arange(3, dtype=torch.float32)
    assert pad_features(x, 10).tolist() == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]
    with pytest.raises(ValueError):
        pad_features(x, 2)
    with pytest.raises(ValueError):
        pad_features(torch.zeros(0, 4), 3)
