"""WatchSession's events as typed Python objects, and the enums they carry.

Why not hand out the protobuf messages: a `oneof` has to be asked which field is set, enums are bare ints and
times are Timestamps. Here each event is a frozen dataclass, matched with `isinstance` or `match`, with
`media_time_us` and `time` (when the server emitted it) on all of them and the raw message kept in `raw` for
anything newer than this client.

Media times are microseconds on the session clock: media time 0 is `Session.media_epoch`, the playlist's
EXT-X-PROGRAM-DATE-TIME base, so a player showing the stream can line words up with the picture.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import grpc

from .avatar.v1 import session_pb2

E = TypeVar("E", bound=enum.IntEnum)


class Pacing(enum.IntEnum):
    """How the session clock advances (SessionOptions.pacing)."""

    UNSPECIFIED = session_pb2.PACING_UNSPECIFIED
    REALTIME = session_pb2.PACING_REALTIME
    OFFLINE = session_pb2.PACING_OFFLINE


class State(enum.IntEnum):
    UNSPECIFIED = session_pb2.SESSION_STATE_UNSPECIFIED
    IDLE = session_pb2.SESSION_STATE_IDLE
    THINKING = session_pb2.SESSION_STATE_THINKING
    SPEAKING = session_pb2.SESSION_STATE_SPEAKING
    ENDED = session_pb2.SESSION_STATE_ENDED
    RENDERING = session_pb2.SESSION_STATE_RENDERING


class UtteranceSource(enum.IntEnum):
    UNSPECIFIED = session_pb2.UTTERANCE_SOURCE_UNSPECIFIED
    SAY = session_pb2.UTTERANCE_SOURCE_SAY
    CHAT = session_pb2.UTTERANCE_SOURCE_CHAT


class FinishReason(enum.IntEnum):
    UNSPECIFIED = session_pb2.FINISH_REASON_UNSPECIFIED
    COMPLETED = session_pb2.FINISH_REASON_COMPLETED
    INTERRUPTED = session_pb2.FINISH_REASON_INTERRUPTED
    FAILED = session_pb2.FINISH_REASON_FAILED


@dataclass(frozen=True, kw_only=True)
class Event:
    """What every event has: the session's playout position and the wall-clock time when it was emitted."""

    media_time_us: int = 0
    time: datetime | None = None
    raw: session_pb2.WatchSessionResponse | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class StateChanged(Event):
    """The first event of every watch is the current state, so a watcher started before `say` misses nothing."""

    state: State
    utterance_id: str = ""
    # RENDERING: the media time at which the utterance's speech is planned to start.
    expected_start_us: int = 0


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(Event):
    utterance_id: str
    source: UtteranceSource
    start_us: int


@dataclass(frozen=True, kw_only=True)
class SpeechFinished(Event):
    """Completed, interrupted (by `interrupt` or a newer say/chat) or failed; `spoken_text` is what was heard."""

    utterance_id: str
    reason: FinishReason
    end_us: int
    spoken_text: str = ""


@dataclass(frozen=True, kw_only=True)
class WordSpoken(Event):
    """Sent when the word's first frame goes out: show it when the player reaches `start_us`."""

    utterance_id: str
    text: str
    start_us: int
    end_us: int
    index: int = 0


@dataclass(frozen=True, kw_only=True)
class Latency(Event):
    """Where an utterance's time went, from the request's arrival at the server (µs; 0 when not reached)."""

    utterance_id: str
    first_clause_us: int = 0
    first_audio_us: int = 0
    first_speech_frame_us: int = 0
    first_speech_segment_us: int = 0


@dataclass(frozen=True, kw_only=True)
class SessionError(Event):
    """Something went wrong inside the session (it lives on): e.g. the LLM failed; `component` says which service."""

    utterance_id: str
    code: grpc.StatusCode
    message: str
    component: str = ""


@dataclass(frozen=True, kw_only=True)
class VoiceDegraded(Event):
    """The voice's provider failed mid-utterance; a fallback voice speaks the rest."""

    utterance_id: str
    message: str
    fallback_engine: str = ""


@dataclass(frozen=True, kw_only=True)
class Stalled(Event):
    """Frames whose pictures were late or lost: the idle loop showed while the audio played on."""

    start_us: int
    end_us: int
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Event):
    """Sent when nothing else happened for a while (15 s); proves the stream is alive."""


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """An event this client's version does not know (a newer server): see `raw`."""

    kind: str = ""


@dataclass(frozen=True)
class Interruption:
    """Interrupt's answer: the utterance cut ("" when nothing was in progress) and the media time of the cut."""

    utterance_id: str
    cut_at_us: int


def _enum(kind: type[E], value: int) -> E:
    """A known member, or UNSPECIFIED for a value a newer server added (the raw value stays in `Event.raw`)."""
    try:
        return kind(value)
    except ValueError:
        return kind(0)


def _status_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def event_from_proto(response: session_pb2.WatchSessionResponse) -> Event:
    """The typed event for one WatchSessionResponse."""
    common = {
        "media_time_us": response.media_time_us,
        "time": response.time.ToDatetime(tzinfo=UTC) if response.HasField("time") else None,
        "raw": response,
    }
    kind = response.WhichOneof("event")
    if kind == "state_changed":
        e = response.state_changed
        return StateChanged(
            state=_enum(State, e.state), utterance_id=e.utterance_id, expected_start_us=e.expected_start_us, **common
        )
    if kind == "speech_started":
        s = response.speech_started
        source = _enum(UtteranceSource, s.source)
        return SpeechStarted(utterance_id=s.utterance_id, source=source, start_us=s.start_us, **common)
    if kind == "speech_finished":
        f = response.speech_finished
        return SpeechFinished(
            utterance_id=f.utterance_id,
            reason=_enum(FinishReason, f.reason),
            end_us=f.end_us,
            spoken_text=f.spoken_text,
            **common,
        )
    if kind == "word_spoken":
        w = response.word_spoken
        return WordSpoken(
            utterance_id=w.utterance_id, text=w.word, start_us=w.start_us, end_us=w.end_us, index=w.word_index, **common
        )
    if kind == "latency":
        la = response.latency
        return Latency(
            utterance_id=la.utterance_id,
            first_clause_us=la.first_clause_us,
            first_audio_us=la.first_audio_us,
            first_speech_frame_us=la.first_speech_frame_us,
            first_speech_segment_us=la.first_speech_segment_us,
            **common,
        )
    if kind == "error":
        r = response.error
        code = _status_code(r.code)
        return SessionError(utterance_id=r.utterance_id, code=code, message=r.message, component=r.component, **common)
    if kind == "voice_degraded":
        v = response.voice_degraded
        return VoiceDegraded(
            utterance_id=v.utterance_id, message=v.message, fallback_engine=v.fallback_engine, **common
        )
    if kind == "stalled":
        st = response.stalled
        return Stalled(start_us=st.start_us, end_us=st.end_us, reason=st.reason, **common)
    if kind == "heartbeat":
        return Heartbeat(**common)
    return UnknownEvent(kind=kind or "", **common)
