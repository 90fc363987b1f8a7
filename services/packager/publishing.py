"""One Publish stream's media onto its playlist: a committed chunk muxed with its audio (AAC encoding off the event
loop; a chunk whose audio differs from the lookahead sent before it is counted), then its part and any segment it
completes listed in the store, and what a broken-off stream's muxer still holds listed when it can be."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter, Histogram

from avatar.v1 import packager_pb2
from services.packager.audio import ChunkAudio
from services.packager.muxer import MuxedPart, MuxedSegment, SessionMuxer, VideoChunk
from services.packager.playlist import PlaylistPart, part_uri, segment_uri
from services.packager.store import HlsStore, HlsStream

log = logging.getLogger(__name__)

LOOKAHEAD_MISMATCHES = Counter(
    "packager_audio_lookahead_mismatches_total", "Chunks whose audio differed from the lookahead sent before them"
)
SEGMENTS_PUBLISHED = Counter("packager_segments_total", "Media segments put on playlists")
SEGMENT_BYTES = Counter("packager_segment_bytes_total", "Bytes of media segments produced")
# How late a part reaches its playlist after the wall-clock end of its media (epoch + end; negative: early). A
# low-latency player holds PART-HOLD-BACK behind the edge: lateness near that is a stall in every viewer.
PART_LATENESS = Histogram(
    "packager_part_lateness_seconds",
    "Wall time a part reaches its playlist after the end of its media (media epoch + end), by content",
    ["content"],
    buckets=(-0.1, -0.04, 0, 0.04, 0.08, 0.12, 0.16, 0.24, 0.32, 0.4, 0.48, 0.64, 1.0, 2.0),
)


async def mux(
    muxer: SessionMuxer, video: VideoChunk, commit: packager_pb2.ChunkCommit
) -> tuple[MuxedPart, MuxedSegment | None]:
    audio = ChunkAudio(commit.pcm_s16le or None, commit.lookahead_samples, commit.lookahead_pcm_s16le or None)
    mismatches = muxer.audio.lookahead_mismatches
    if audio.pcm_s16le or audio.lookahead_pcm_s16le:  # AAC encoding: off the event loop
        muxed = await asyncio.to_thread(muxer.add_chunk, video, audio, commit.speech)
    else:
        muxed = muxer.add_chunk(video, audio, commit.speech)
    if muxer.audio.lookahead_mismatches > mismatches:
        LOOKAHEAD_MISMATCHES.inc()
        log.warning(
            "a chunk's audio differs from the lookahead sent before it",
            extra={"frame_index": commit.start_frame_index},
        )
    return muxed


def publish_part(store: HlsStore, stream: HlsStream, part: MuxedPart) -> packager_pb2.PartPublished:
    store.add_part(stream, PlaylistPart(part.sequence, part.index, part.duration_us), part.data)
    end_us = stream.playlist.media_epoch_us + part.start_us + part.duration_us
    PART_LATENESS.labels("speech" if part.has_speech else "idle").observe(time.time() - end_us / 1e6)
    return packager_pb2.PartPublished(
        sequence=part.sequence,
        index=part.index,
        uri=part_uri(part.sequence, part.index),
        start_frame_index=part.start_frame_index,
        frame_count=part.frame_count,
        start_us=part.start_us,
        duration_us=part.duration_us,
        has_speech=part.has_speech,
    )


def publish_segment(store: HlsStore, stream: HlsStream, segment: MuxedSegment) -> packager_pb2.SegmentPublished:
    store.add_segment(stream, segment.sequence, segment.start_us, segment.duration_us, segment.parts)
    SEGMENTS_PUBLISHED.inc()
    SEGMENT_BYTES.inc(segment.size)
    return packager_pb2.SegmentPublished(
        sequence=segment.sequence,
        uri=segment_uri(segment.sequence),
        start_frame_index=segment.start_frame_index,
        frame_count=segment.frame_count,
        start_us=segment.start_us,
        duration_us=segment.duration_us,
        has_speech=segment.has_speech,
    )


def publish_remains(store: HlsStore, stream: HlsStream, muxer: SessionMuxer) -> None:
    """Lists what the muxer still holds when a stream breaks off; never raises (the cleanup must run)."""
    try:
        last = muxer.finish()
        if last is not None:
            publish_segment(store, stream, last)
    except ValueError as problem:  # a part that never reached the playlist: the segment cannot be listed
        log.warning("the last segment of a broken-off stream was dropped", extra={"why": str(problem)})
