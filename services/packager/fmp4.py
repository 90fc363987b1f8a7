"""A minimal fragmented-MP4 (CMAF-style) writer for one H.264 video track and one AAC audio track.

Written by hand rather than through FFmpeg's mp4 muxer so that a segment can be cut the moment its last frame is
encoded (the muxer only closes a fragment when the next keyframe arrives) and so that every timestamp is ours: video
sample n has decode/presentation time n frame durations, audio sample k (after the encoder priming is dropped) starts
at sample k. No edit lists are needed, so players that ignore them (hls.js, MSE) and players that honour them
(Safari, FFmpeg) see the same timeline.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2

_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_SYNC_SAMPLE_FLAGS = 0x02000000  # sample_depends_on = 2 (an I frame; depends on nothing)
_NON_SYNC_SAMPLE_FLAGS = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1
# High-profile family: avcC carries chroma format and bit depths (ISO/IEC 14496-15).
_HIGH_PROFILES = frozenset({100, 110, 122, 144, 44, 83, 86, 118, 128, 134, 135, 138, 139})


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# -- H.264 in MP4 -------------------------------------------------------------------------------------------------


def avcc(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord for one SPS and one PPS, 4-byte NAL lengths."""
    profile, compat, level = sps[1], sps[2], sps[3]
    record = bytes([1, profile, compat, level, 0xFF, 0xE1]) + struct.pack(">H", len(sps)) + sps
    record += bytes([1]) + struct.pack(">H", len(pps)) + pps
    if profile in _HIGH_PROFILES:
        record += bytes([0xFC | 1, 0xF8, 0xF8, 0])  # 4:2:0, 8-bit luma and chroma, no SPS extensions
    return record


def avc_codec_string(sps: bytes) -> str:
    """RFC 6381 codec string, e.g. avc1.42C01E (for a CODECS attribute)."""
    return f"avc1.{sps[1]:02X}{sps[2]:02X}{sps[3]:02X}"


# -- init segment -------------------------------------------------------------------------------------------------


def _descriptor(tag: int, payload: bytes) -> bytes:
    size = len(payload)
    return bytes(
        [tag, 0x80 | (size >> 21) & 0x7F, 0x80 | (size >> 14) & 0x7F, 0x80 | (size >> 7) & 0x7F, size & 0x7F]
    ) + (payload)


def _esds(audio_specific_config: bytes, bit_rate: int) -> bytes:
    decoder_specific = _descriptor(0x05, audio_specific_config)
    decoder_config = _descriptor(
        0x04,
        struct.pack(">BB", 0x40, (0x05 << 2) | 1)  # MPEG-4 audio, audio stream
        + (6144).to_bytes(3, "big")  # bufferSizeDB
        + struct.pack(">II", bit_rate, bit_rate)
        + decoder_specific,
    )
    sl_config = _descriptor(0x06, b"\x02")
    es = _descriptor(0x03, struct.pack(">HB", AUDIO_TRACK_ID, 0) + decoder_config + sl_config)
    return full_box(b"esds", 0, 0, es)


def _tkhd(track_id: int, volume: int, width: int, height: int) -> bytes:
    return full_box(
        b"tkhd",
        0,
        0x3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, track_id, 0, 0),
        struct.pack(">IIhhHH", 0, 0, 0, 0, volume, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )


def _mdia(timescale: int, handler: bytes, name: bytes, media_header: bytes, sample_entry: bytes) -> bytes:
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))  # language "und"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name + b"\x00")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    return box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl))


def init_segment(
    *,
    width: int,
    height: int,
    video_timescale: int,
    sps: bytes,
    pps: bytes,
    sample_rate: int,
    audio_specific_config: bytes,
    audio_bit_rate: int,
    channels: int = 1,
) -> bytes:
    """ftyp + moov for the two tracks; no samples (they all live in fragments)."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"iso5", b"mp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH10x", 0x00010000, 0x0100),
        _MATRIX,
        bytes(24),
        struct.pack(">I", AUDIO_TRACK_ID + 1),
    )
    avc1 = box(
        b"avc1",
        bytes(6),
        struct.pack(">H", 1),  # data_reference_index
        bytes(16),
        struct.pack(">HHIIIH", width, height, 0x00480000, 0x00480000, 0, 1),
        bytes(32),  # compressor name
        struct.pack(">Hh", 0x0018, -1),
        box(b"avcC", avcc(sps, pps)),
    )
    video = box(
        b"trak",
        _tkhd(VIDEO_TRACK_ID, 0, width, height),
        _mdia(video_timescale, b"vide", b"VideoHandler", full_box(b"vmhd", 0, 1, bytes(8)), avc1),
    )
    mp4a = box(
        b"mp4a",
        bytes(6),
        struct.pack(">H", 1),
        bytes(8),
        struct.pack(">HHHHI", channels, 16, 0, 0, sample_rate << 16),
        _esds(audio_specific_config, audio_bit_rate),
    )
    audio = box(
        b"trak",
        _tkhd(AUDIO_TRACK_ID, 0x0100, 0, 0),
        _mdia(sample_rate, b"soun", b"SoundHandler", full_box(b"smhd", 0, 0, bytes(4)), mp4a),
    )
    trex = [full_box(b"trex", 0, 0, struct.pack(">IIIII", track, 1, 0, 0, 0)) for track in (1, 2)]
    return ftyp + box(b"moov", mvhd, video, audio, box(b"mvex", *trex))


# -- media segments -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    data: bytes
    duration: int
    sync: bool = True


@dataclass(frozen=True)
class TrackRun:
    track_id: int
    base_decode_time: int
    samples: Sequence[Sample]


def _traf(run: TrackRun, data_offset: int) -> bytes:
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", run.track_id))  # default-base-is-moof
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", run.base_decode_time))
    entries = b"".join(
        struct.pack(
            ">III", sample.duration, len(sample.data), _SYNC_SAMPLE_FLAGS if sample.sync else _NON_SYNC_SAMPLE_FLAGS
        )
        for sample in run.samples
    )
    # data offset, sample duration, sample size, sample flags present
    trun = full_box(b"trun", 0, 0x000701, struct.pack(">Ii", len(run.samples), data_offset), entries)
    return box(b"traf", tfhd, tfdt, trun)


STYP = box(b"styp", b"msdh", struct.pack(">I", 0), b"msdh")


def media_segment(sequence_number: int, runs: Iterable[TrackRun]) -> bytes:
    """styp + moof + mdat for the given track runs (empty runs are left out); sequence_number counts from 1."""
    return STYP + b"".join(fragment_parts(sequence_number, runs))


def fragment_parts(sequence_number: int, runs: Iterable[TrackRun]) -> tuple[bytes, ...]:
    """One fragment (moof + mdat: a CMAF chunk, an LL-HLS part) as its header (the moof and the mdat box header)
    followed by the samples' own bytes objects, so a fragment made of shared samples (the idle loop's) shares their
    memory instead of copying it. A segment is `STYP` followed by its fragments."""
    runs = [run for run in runs if run.samples]
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))
    # The data offsets depend on the moof size, which does not depend on the offsets' values: build twice.
    offsets = [0] * len(runs)
    moof = box(b"moof", mfhd, *(_traf(run, offset) for run, offset in zip(runs, offsets, strict=True)))
    position = len(moof) + 8
    for index, run in enumerate(runs):
        offsets[index] = position
        position += sum(len(sample.data) for sample in run.samples)
    moof = box(b"moof", mfhd, *(_traf(run, offset) for run, offset in zip(runs, offsets, strict=True)))
    payload = [sample.data for run in runs for sample in run.samples]
    mdat_header = struct.pack(">I4s", 8 + sum(len(data) for data in payload), b"mdat")
    return (moof + mdat_header, *payload)
