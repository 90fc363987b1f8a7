"""What the packager accepts on its two streams: every field checked, each refusal (the shared InvalidRequest) a
sentence naming the field."""

from __future__ import annotations

import re

from avatar.v1 import packager_pb2
from services.common.stream import InvalidRequest
from services.packager.audio import AAC_SAMPLE_RATES
from services.packager.config import PackagerConfig
from services.packager.muxer import MuxerSettings
from services.packager.store import valid_session_id

LOOP_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
MAX_TOKEN_CHARS = 128
MAX_PARAMETER_SET_BYTES = 1024
MAX_LOOP_CHUNKS = 10_000
MAX_CHUNK_FRAMES = 60


def _check_geometry(prefix: str, width: int, height: int, fps: int, chunk_frames: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not 64 <= value <= 1920 or value % 2:
            raise InvalidRequest(f"{prefix}.{name}", f"{name} must be an even number from 64 to 1920, got {value}")
    if not 1 <= fps <= 60:
        raise InvalidRequest(f"{prefix}.fps", f"fps must be 1 to 60, got {fps}")
    if not 1 <= chunk_frames <= MAX_CHUNK_FRAMES:
        raise InvalidRequest(
            f"{prefix}.chunk_frames", f"chunk_frames must be 1 to {MAX_CHUNK_FRAMES}, got {chunk_frames}"
        )


def _check_token(field: str, token: str) -> None:
    if not 16 <= len(token) <= MAX_TOKEN_CHARS:
        raise InvalidRequest(field, f"publish_token must be 16 to {MAX_TOKEN_CHARS} characters")


def _check_loop_id(field: str, loop_id: str) -> None:
    if not LOOP_ID_PATTERN.fullmatch(loop_id):
        raise InvalidRequest(field, "idle_loop_id must be 32 lowercase hex digits (the loop's content id)")


def settings_from_config(config: packager_pb2.PublishConfig, defaults: PackagerConfig) -> MuxerSettings:
    """Validates a PublishConfig; raises InvalidRequest naming the first bad field."""
    if not valid_session_id(config.stream_id):
        raise InvalidRequest("config.stream_id", "stream_id must be 16-64 characters from A-Z a-z 0-9 _ -")
    _check_geometry("config", config.width, config.height, config.fps, config.chunk_frames)
    rate = config.sample_rate_hz
    if rate not in AAC_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in sorted(AAC_SAMPLE_RATES))
        raise InvalidRequest("config.sample_rate_hz", f"sample_rate_hz must be one of {rates}, got {rate}")
    if rate % config.fps:
        raise InvalidRequest(
            "config.sample_rate_hz",
            f"sample_rate_hz {rate} is not a whole number of samples per frame at {config.fps} fps",
        )
    duration_ms = config.segment_duration_ms
    if not 200 <= duration_ms <= 1000:
        raise InvalidRequest(
            "config.segment_duration_ms", f"segment_duration_ms must be 200 to 1000, got {duration_ms}"
        )
    segment_frames, remainder = divmod(duration_ms * config.fps, 1000)
    if remainder or segment_frames % config.chunk_frames:
        raise InvalidRequest(
            "config.segment_duration_ms",
            f"segment_duration_ms {duration_ms} is not a whole number of {config.chunk_frames}-frame chunks at "
            f"{config.fps} fps",
        )
    if not config.HasField("media_epoch") or config.media_epoch.seconds <= 0:
        raise InvalidRequest("config.media_epoch", "media_epoch (wall-clock time of media time 0) is required")
    _check_token("config.publish_token", config.publish_token)
    _check_loop_id("config.idle_loop_id", config.idle_loop_id)
    return MuxerSettings(
        width=config.width,
        height=config.height,
        fps=config.fps,
        sample_rate=rate,
        chunk_frames=config.chunk_frames,
        chunks_per_segment=segment_frames // config.chunk_frames,
        audio_bit_rate=defaults.audio_bit_rate,
    )


def check_video_config(config: packager_pb2.PublishVideoConfig) -> None:
    if not valid_session_id(config.stream_id):
        raise InvalidRequest("config.stream_id", "stream_id must be 16-64 characters from A-Z a-z 0-9 _ -")
    _check_token("config.publish_token", config.publish_token)
    _check_geometry("config", config.width, config.height, config.fps, config.chunk_frames)
    for name, value in (("sps", config.sps), ("pps", config.pps)):
        if not 1 <= len(value) <= MAX_PARAMETER_SET_BYTES:
            raise InvalidRequest(f"config.{name}", f"{name} must be 1 to {MAX_PARAMETER_SET_BYTES} bytes")
    _check_loop_id("config.idle_loop_id", config.idle_loop_id)
    if not 1 <= config.idle_loop_chunks <= MAX_LOOP_CHUNKS:
        raise InvalidRequest(
            "config.idle_loop_chunks", f"idle_loop_chunks must be 1 to {MAX_LOOP_CHUNKS}, got {config.idle_loop_chunks}"
        )


def check_commit(commit: packager_pb2.ChunkCommit, expected_start: int, settings: MuxerSettings) -> None:
    if commit.start_frame_index != expected_start:
        raise InvalidRequest(
            "chunk.start_frame_index",
            f"chunk at frame {commit.start_frame_index} is out of order: expected {expected_start} (consecutive "
            f"{settings.chunk_frames}-frame chunks from 0)",
        )
    pcm_bytes = 2 * settings.chunk_frames * settings.samples_per_frame
    if len(commit.pcm_s16le) not in (0, pcm_bytes):
        raise InvalidRequest(
            "chunk.pcm_s16le",
            f"chunk at frame {expected_start} has {len(commit.pcm_s16le)} bytes of PCM; it needs {pcm_bytes} "
            f"({settings.chunk_frames} frames of {settings.samples_per_frame} samples s16le) or none for silence",
        )
    chunk_samples = settings.chunk_frames * settings.samples_per_frame
    if not 0 <= commit.lookahead_samples <= chunk_samples:
        raise InvalidRequest(
            "chunk.lookahead_samples",
            f"chunk at frame {expected_start} has a lookahead of {commit.lookahead_samples} samples; it may be 0 to "
            f"{chunk_samples} (one chunk)",
        )
    if len(commit.lookahead_pcm_s16le) not in (0, 2 * commit.lookahead_samples):
        raise InvalidRequest(
            "chunk.lookahead_pcm_s16le",
            f"chunk at frame {expected_start} has {len(commit.lookahead_pcm_s16le)} bytes of lookahead PCM; it needs "
            f"{2 * commit.lookahead_samples} (lookahead_samples s16le) or none for silence",
        )
    _check_loop_id("chunk.idle_loop_id", commit.idle_loop_id)
    if commit.idle_chunk_index < 0:
        raise InvalidRequest("chunk.idle_chunk_index", "idle_chunk_index must not be negative")
