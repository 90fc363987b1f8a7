"""How long an utterance took to be heard, stage by stage: its first clause (llm), its first audio (tts), its first
speech frame's time on the clock, and the first playlist part or segment holding that frame.

Each stage is stamped once, on the utterance, when it first happens, and observed in the first-speech histogram;
when the packager publishes the first speech frame, the watchers get the whole UtteranceLatency (microseconds from
the request; 0 for a stage that did not happen, e.g. no llm for Say). Only the stamping lives here: when each stage
happens is for the parts that see it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Histogram

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.session.narration import Narrator
from services.session.utterances import Utterance

LATENCY = Histogram(
    "session_first_speech_seconds",
    "From request to the utterance's first speech, by stage",
    ["stage"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
)


def first_clause(utterance: Utterance) -> None:
    if utterance.first_clause_at is None:
        utterance.first_clause_at = time.monotonic()
        LATENCY.labels("first_clause").observe(utterance.first_clause_at - utterance.requested_at)


def first_audio(utterance: Utterance) -> None:
    if utterance.first_audio_at is None:
        utterance.first_audio_at = time.monotonic()
        LATENCY.labels("first_audio").observe(utterance.first_audio_at - utterance.requested_at)


def first_frame(utterance: Utterance, frame_index: int) -> None:
    """The utterance's first speech frame's time came (it is marked started by then)."""
    utterance.first_frame_at = time.monotonic()
    utterance.first_frame_index = frame_index
    LATENCY.labels("first_speech_frame").observe(utterance.first_frame_at - utterance.requested_at)


def published(utterances: Iterable[Utterance], start_frame: int, end_frame: int, narrator: Narrator) -> None:
    """Frames [start_frame, end_frame) are on the playlist: reports each utterance whose first frame is there."""
    for utterance in utterances:
        first = utterance.first_frame_index
        if utterance.latency_reported or first is None or not (start_frame <= first < end_frame):
            continue
        utterance.latency_reported = True
        _report(utterance, time.monotonic(), narrator)


def _report(utterance: Utterance, segment_at: float, narrator: Narrator) -> None:
    def since(t: float | None) -> int:
        return 0 if t is None else int((t - utterance.requested_at) * 1e6)

    LATENCY.labels("first_speech_segment").observe(segment_at - utterance.requested_at)
    narrator.emit(
        latency=session_pb2.UtteranceLatency(
            utterance_id=utterance.utterance_id,
            first_clause_us=since(utterance.first_clause_at),
            first_audio_us=since(utterance.first_audio_at),
            first_speech_frame_us=since(utterance.first_frame_at),
            first_speech_segment_us=since(segment_at),
        )
    )
