"""H.264 bitstream helpers shared by the video worker (which encodes) and the packager (which muxes).

Encoders (libx264 through PyAV) emit Annex B: NAL units behind 3- or 4-byte start codes. MP4 wants the AVC sample
format: each NAL unit behind its 4-byte length, parameter sets (SPS, PPS) kept apart in the init segment's avcC and
access unit delimiters dropped. The split uses `bytes.find` (C speed), not a Python loop over bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
_START = b"\x00\x00\x01"
_LENGTH = struct.Struct(">I")


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes; trailing zero bytes trimmed)."""
    units: list[bytes] = []
    start = data.find(_START)
    while start >= 0:
        begin = start + 3
        following = data.find(_START, begin)
        end = len(data) if following < 0 else following
        while end > begin and data[end - 1] == 0:  # the leading zero of a 4-byte start code, or trailing zeros
            end -= 1
        if end > begin:
            units.append(data[begin:end])
        start = following
    return units


@dataclass(frozen=True)
class AvcSample:
    """One access unit in the AVC sample format, with the parameter sets it carried in-band (if any)."""

    data: bytes
    sps: bytes | None
    pps: bytes | None
    idr: bool


def annexb_to_sample(data: bytes, keep_sei: bool = False) -> AvcSample:
    """Converts one access unit; parameter sets and delimiters are taken out (SEI too unless `keep_sei`)."""
    sps = pps = None
    idr = False
    parts: list[bytes] = []
    for unit in split_annexb(data):
        nal_type = unit[0] & 0x1F
        if nal_type == NAL_SPS:
            sps = sps or unit
        elif nal_type == NAL_PPS:
            pps = pps or unit
        elif nal_type == NAL_AUD or (nal_type == NAL_SEI and not keep_sei):
            continue
        else:
            idr = idr or nal_type == NAL_IDR
            parts.append(_LENGTH.pack(len(unit)))
            parts.append(unit)
    return AvcSample(b"".join(parts), sps, pps, idr)


def sample_nal_types(sample: bytes) -> list[int]:
    """The NAL unit types of an AVC-format sample (for checks: a chunk must start with an IDR)."""
    types: list[int] = []
    position = 0
    while position + 4 <= len(sample):
        (length,) = _LENGTH.unpack_from(sample, position)
        position += 4
        if length == 0 or position + length > len(sample):
            raise ValueError("malformed AVC sample: a NAL length runs past the end")
        types.append(sample[position] & 0x1F)
        position += length
    if position != len(sample):
        raise ValueError("malformed AVC sample: trailing bytes")
    return types


def is_idr_sample(sample: bytes) -> bool:
    """Whether an AVC-format sample holds an IDR picture (ValueError when it is malformed)."""
    return NAL_IDR in sample_nal_types(sample)


def loop_content_id(
    width: int, height: int, fps: int, chunk_frames: int, sps: bytes, pps: bytes, chunks: Sequence[Sequence[bytes]]
) -> str:
    """The content id of an idle loop of encoded chunks: what names it between the video worker and the packager."""
    digest = hashlib.sha256()
    digest.update(struct.pack(">IIII", width, height, fps, chunk_frames))
    for part in (sps, pps):
        digest.update(struct.pack(">I", len(part)))
        digest.update(part)
    for chunk in chunks:
        digest.update(struct.pack(">I", len(chunk)))
        for frame in chunk:
            digest.update(struct.pack(">I", len(frame)))
            digest.update(frame)
    return digest.hexdigest()[:32]
