"""H.264 plumbing shared by the video worker and the packager: Annex B to AVC samples, the worker's encoder (IDR
frames only where forced, the same parameter sets for the same settings) and the chunk assembler (chunks, resets,
partial updates)."""

from __future__ import annotations

import pytest

from services.common.h264 import (
    annexb_to_sample,
    is_idr_sample,
    loop_content_id,
    sample_nal_types,
    split_annexb,
)
from services.video.chunker import ChunkAssembler
from services.video.encoding import EncoderSettings, FrameEncoder
from tests.packager_media import i420

SPS = b"\x67\x42\xc0\x1e\xaa"
PPS = b"\x68\xce\x0f"
IDR = b"\x65\x88\x84\x00\x10"
SLICE = b"\x41\x9a\x02\x03"
AUD = b"\x09\xf0"
SEI = b"\x06\x05\x01\x80"
FOUR = b"\x00\x00\x00\x01"
THREE = b"\x00\x00\x01"


def avc(*units: bytes) -> bytes:
    return b"".join(len(unit).to_bytes(4, "big") + unit for unit in units)


# -- Annex B and AVC samples ----------------------------------------------------------------------------------------


def test_split_annexb_start_codes_and_trailing_zeros() -> None:
    assert split_annexb(FOUR + SPS + THREE + PPS + FOUR + AUD + THREE + IDR) == [SPS, PPS, AUD, IDR]
    assert split_annexb(THREE + SLICE) == [SLICE]
    assert split_annexb(FOUR + IDR + b"\x00\x00\x00\x00") == [IDR]  # trailing zero bytes
    assert split_annexb(b"\xff\xfe" + THREE + SLICE) == [SLICE]  # bytes before the first start code
    assert split_annexb(FOUR + FOUR + SLICE) == [SLICE]  # an empty unit
    assert split_annexb(b"") == [] and split_annexb(SLICE) == []


def test_annexb_to_sample() -> None:
    sample = annexb_to_sample(FOUR + AUD + FOUR + SPS + THREE + PPS + THREE + SEI + FOUR + IDR)
    assert (sample.sps, sample.pps, sample.idr) == (SPS, PPS, True)
    assert sample.data == avc(IDR)  # parameter sets, the delimiter and SEI taken out
    kept = annexb_to_sample(FOUR + AUD + THREE + SEI + THREE + SLICE, keep_sei=True)
    assert (kept.sps, kept.pps, kept.idr) == (None, None, False)
    assert kept.data == avc(SEI, SLICE)
    assert annexb_to_sample(THREE + SLICE + THREE + SLICE).data == avc(SLICE, SLICE)


def test_sample_nal_types_and_malformed_samples() -> None:
    assert sample_nal_types(avc(SEI, IDR)) == [6, 5] and is_idr_sample(avc(SEI, IDR))
    assert sample_nal_types(avc(SLICE)) == [1] and not is_idr_sample(avc(SLICE))
    assert sample_nal_types(b"") == []
    for bad in (
        b"\x00\x00\x00\x09abc",  # a length past the end
        avc(IDR) + b"\x00\x00",  # trailing bytes
        b"\x00\x00\x00\x00" + avc(IDR),  # an empty unit
        THREE + IDR,  # Annex B, not AVC
    ):
        with pytest.raises(ValueError, match="malformed AVC sample"):
            sample_nal_types(bad)
        with pytest.raises(ValueError, match="malformed AVC sample"):
            is_idr_sample(bad)


def test_loop_content_id() -> None:
    chunks = [[b"ab", b"c"], [b"d"]]
    loop_id = loop_content_id(128, 128, 25, 2, SPS, PPS, chunks)
    assert len(loop_id) == 32 and int(loop_id, 16) >= 0 and loop_id == loop_id.lower()
    assert loop_content_id(128, 128, 25, 2, SPS, PPS, [[b"ab", b"c"], [b"d"]]) == loop_id
    for other in (
        loop_content_id(128, 128, 25, 2, SPS, PPS, [[b"a", b"bc"], [b"d"]]),  # frame boundaries count
        loop_content_id(128, 128, 25, 2, SPS, PPS, [[b"ab", b"c", b"d"]]),  # chunk boundaries count
        loop_content_id(128, 128, 25, 2, SPS, PPS, [[b"ab", b"c"], [b"e"]]),
        loop_content_id(128, 130, 25, 2, SPS, PPS, chunks),
        loop_content_id(128, 128, 30, 2, SPS, PPS, chunks),
        loop_content_id(128, 128, 25, 3, SPS, PPS, chunks),
        loop_content_id(128, 128, 25, 2, SPS + b"\x00", PPS, chunks),
        loop_content_id(128, 128, 25, 2, SPS, PPS[:-1], chunks),
    ):
        assert other != loop_id


# -- the encoder ----------------------------------------------------------------------------------------------------


def test_encoder_idr_only_where_forced_and_same_parameter_sets() -> None:
    settings = EncoderSettings(128, 128, 25)
    first, second = FrameEncoder(settings), FrameEncoder(settings)
    assert (first.sps, first.pps) == (second.sps, second.pps)
    assert first.sps[0] & 0x1F == 7 and first.pps[0] & 0x1F == 8
    bigger = FrameEncoder(EncoderSettings(256, 256, 25))
    assert bigger.sps != first.sps  # the size is in the SPS

    forced = {0, 7, 19}
    samples = [first.encode(i420(n, 128, 128), n in forced) for n in range(30)]
    for n, sample in enumerate(samples):
        types = sample_nal_types(sample)
        # One access unit per frame: exactly one picture, no parameter sets, delimiters or SEI in band.
        assert len([t for t in types if t in (1, 5)]) == 1 and set(types) <= {1, 5}, (n, types)
        assert is_idr_sample(sample) == (n in forced), n
    # The same frames through another encoder of the same settings: the same bytes (any worker's chunks splice).
    assert [second.encode(i420(n, 128, 128), n in forced) for n in range(30)] == samples


# -- the chunk assembler --------------------------------------------------------------------------------------------


class Recorder:
    """The real encoder, remembering what it made."""

    def __init__(self) -> None:
        self.encoder = FrameEncoder(EncoderSettings(128, 128, 25))
        self.made: list[tuple[int, bool, bytes]] = []

    def add(self, assembler: ChunkAssembler, frames, epoch: int = 0, level: int = 60):
        out = []
        for n in frames:
            chunk = assembler.add(n, epoch, i420(n, 128, 128, level))
            if chunk is not None:
                out.append(chunk)
        return out

    def encode(self, i420_bytes: bytes, idr: bool) -> bytes:
        sample = self.encoder.encode(i420_bytes, idr)
        self.made.append((len(self.made), idr, sample))
        return sample


def idr_flags(frames) -> list[bool]:
    return [is_idr_sample(frame) for frame in frames]


def test_chunks_complete_at_the_last_frame() -> None:
    recorder = Recorder()
    assembler = ChunkAssembler(12, recorder.encode)
    assert recorder.add(assembler, range(11)) == []
    (chunk,) = recorder.add(assembler, [11], epoch=3)
    assert (chunk.start_frame_index, chunk.first_frame_index, chunk.epoch) == (0, 0, 3)
    assert len(chunk.frames) == 12 and idr_flags(chunk.frames) == [True] + [False] * 11
    assert chunk.frames == tuple(sample for _, _, sample in recorder.made)
    (chunk,) = recorder.add(assembler, range(12, 24))
    assert chunk.start_frame_index == 12 and idr_flags(chunk.frames) == [True] + [False] * 11


def test_reset_inside_the_chunk_being_built_keeps_its_earlier_frames() -> None:
    recorder = Recorder()
    assembler = ChunkAssembler(12, recorder.encode)
    recorder.add(assembler, range(12))
    assert recorder.add(assembler, range(12, 20)) == []
    kept = [sample for _, _, sample in recorder.made[12:17]]  # frames 12..16
    assembler.reset(17)
    (chunk,) = recorder.add(assembler, range(17, 24), epoch=1, level=200)
    assert (chunk.start_frame_index, chunk.first_frame_index, chunk.epoch) == (12, 12, 1)
    assert list(chunk.frames[:5]) == kept
    assert idr_flags(chunk.frames) == [True] + [False] * 4 + [True] + [False] * 6


def test_reset_inside_a_chunk_already_sent_yields_a_partial_chunk() -> None:
    recorder = Recorder()
    assembler = ChunkAssembler(12, recorder.encode)
    recorder.add(assembler, range(12))
    assembler.reset(6)
    (chunk,) = recorder.add(assembler, range(6, 12), epoch=1)
    assert (chunk.start_frame_index, chunk.first_frame_index, chunk.epoch) == (0, 6, 1)
    assert len(chunk.frames) == 6 and idr_flags(chunk.frames) == [True] + [False] * 5

    # Cut back into a sent chunk while a later one is being built: the later one is dropped and redone.
    recorder.add(assembler, range(12, 24))
    recorder.add(assembler, range(24, 28))
    assembler.reset(15)
    partial, full = recorder.add(assembler, range(15, 36), epoch=2)
    assert (partial.start_frame_index, partial.first_frame_index, len(partial.frames)) == (12, 15, 9)
    assert (full.start_frame_index, full.first_frame_index, len(full.frames)) == (24, 24, 12)
    assert idr_flags(partial.frames)[0] and idr_flags(full.frames)[0]

    # A second, earlier cut in the same chunk before its update went out: the update starts at the earlier cut.
    assembler.reset(30)
    recorder.add(assembler, range(30, 33), epoch=3)
    assembler.reset(27)
    (update,) = recorder.add(assembler, range(27, 36), epoch=4)
    assert (update.start_frame_index, update.first_frame_index, update.epoch, len(update.frames)) == (24, 27, 4, 9)
    assert idr_flags(update.frames) == [True] + [False] * 8


def test_reset_at_a_chunk_start_redoes_it_fully() -> None:
    recorder = Recorder()
    assembler = ChunkAssembler(12, recorder.encode)
    recorder.add(assembler, range(24))
    assembler.reset(12)
    (chunk,) = recorder.add(assembler, range(12, 24), epoch=1)
    assert (chunk.start_frame_index, chunk.first_frame_index, len(chunk.frames)) == (12, 12, 12)
    assert idr_flags(chunk.frames) == [True] + [False] * 11
    # Frames after the cut that do not start at it make no partial chunk.
    assembler.reset(24)
    assert recorder.add(assembler, range(30, 36)) == []


def test_frames_that_skip_ahead_abandon_an_incomplete_chunk() -> None:
    recorder = Recorder()
    assembler = ChunkAssembler(12, recorder.encode)
    assert recorder.add(assembler, range(6)) == []
    assert recorder.add(assembler, [12]) == [] and assembler.abandoned == 1
    (chunk,) = recorder.add(assembler, range(13, 24))
    assert (chunk.start_frame_index, chunk.first_frame_index, len(chunk.frames)) == (12, 12, 12)
    assert idr_flags(chunk.frames)[0]
    # A gap inside a chunk abandons it too; a frame that starts no chunk is dropped.
    assert recorder.add(assembler, [24, 25, 27]) == [] and assembler.abandoned == 2
    assert recorder.add(assembler, range(28, 36)) == []
    (chunk,) = recorder.add(assembler, range(36, 48))
    assert chunk.start_frame_index == 36 and len(chunk.frames) == 12


def test_burned_clock_survives_encoding() -> None:
    """The glass-to-glass clock (VIDEO_BURN_CLOCK, bench.browser) reads back exactly after H.264 and decoding."""
    import io

    import av
    import numpy as np

    from services.packager.muxer import MuxerSettings, SessionMuxer, VideoChunk
    from services.video.chunker import ChunkAssembler
    from services.video.clock_burn import burn_clock, read_clock
    from services.video.encoding import EncoderSettings, FrameEncoder

    encoder = FrameEncoder(EncoderSettings(256, 256, 25))
    assembler = ChunkAssembler(12, encoder.encode)
    muxer = SessionMuxer(MuxerSettings(256, 256, 25, 24000, 12, 1), encoder.sps, encoder.pps)
    rng = np.random.default_rng(1)
    stamps = [1_764_000_000_000 + 40 * i + int(rng.integers(0, 1000)) for i in range(36)]
    data = [muxer.init_segment]
    for index, stamp in enumerate(stamps):
        frame = rng.integers(0, 255, 256 * 256 * 3 // 2, dtype=np.uint8).tobytes()
        chunk = assembler.add(index, 0, burn_clock(frame, 256, 256, stamp))
        if chunk is not None:
            video = VideoChunk(chunk.frames, tuple(i == 0 for i in range(len(chunk.frames))))
            _, segment = muxer.add_chunk(video, None, False)
            assert segment is not None  # one chunk per segment here
            data.append(b"".join(segment.parts))
    with av.open(io.BytesIO(b"".join(data)), format="mp4") as container:
        read = [read_clock(frame.to_ndarray(format="gray")) for frame in container.decode(video=0)]
    assert read == [stamp % (1 << 32) for stamp in stamps]
