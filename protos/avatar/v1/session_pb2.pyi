import datetime

from avatar.v1 import tts_pb2 as _tts_pb2
from avatar.v1 import video_pb2 as _video_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pacing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACING_UNSPECIFIED: _ClassVar[Pacing]
    PACING_REALTIME: _ClassVar[Pacing]
    PACING_OFFLINE: _ClassVar[Pacing]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_IDLE: _ClassVar[SessionState]
    SESSION_STATE_THINKING: _ClassVar[SessionState]
    SESSION_STATE_SPEAKING: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]
    SESSION_STATE_RENDERING: _ClassVar[SessionState]

class UtteranceSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UTTERANCE_SOURCE_UNSPECIFIED: _ClassVar[UtteranceSource]
    UTTERANCE_SOURCE_SAY: _ClassVar[UtteranceSource]
    UTTERANCE_SOURCE_CHAT: _ClassVar[UtteranceSource]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_COMPLETED: _ClassVar[FinishReason]
    FINISH_REASON_INTERRUPTED: _ClassVar[FinishReason]
    FINISH_REASON_FAILED: _ClassVar[FinishReason]
PACING_UNSPECIFIED: Pacing
PACING_REALTIME: Pacing
PACING_OFFLINE: Pacing
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_IDLE: SessionState
SESSION_STATE_THINKING: SessionState
SESSION_STATE_SPEAKING: SessionState
SESSION_STATE_ENDED: SessionState
SESSION_STATE_RENDERING: SessionState
UTTERANCE_SOURCE_UNSPECIFIED: UtteranceSource
UTTERANCE_SOURCE_SAY: UtteranceSource
UTTERANCE_SOURCE_CHAT: UtteranceSource
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_COMPLETED: FinishReason
FINISH_REASON_INTERRUPTED: FinishReason
FINISH_REASON_FAILED: FinishReason

class SessionOptions(_message.Message):
    __slots__ = ("pacing", "persona", "llm_provider", "llm_model")
    PACING_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    LLM_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LLM_MODEL_FIELD_NUMBER: _ClassVar[int]
    pacing: Pacing
    persona: str
    llm_provider: str
    llm_model: str
    def __init__(self, pacing: _Optional[_Union[Pacing, str]] = ..., persona: _Optional[str] = ..., llm_provider: _Optional[str] = ..., llm_model: _Optional[str] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("avatar", "voice", "options", "portrait")
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PORTRAIT_FIELD_NUMBER: _ClassVar[int]
    avatar: str
    voice: str
    options: SessionOptions
    portrait: bytes
    def __init__(self, avatar: _Optional[str] = ..., voice: _Optional[str] = ..., options: _Optional[_Union[SessionOptions, _Mapping]] = ..., portrait: _Optional[bytes] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "playlist_path", "playlist_url", "avatar", "voice", "width", "height", "fps", "media_epoch", "control_token", "stream_id", "expire_time")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYLIST_PATH_FIELD_NUMBER: _ClassVar[int]
    PLAYLIST_URL_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONTROL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    playlist_path: str
    playlist_url: str
    avatar: str
    voice: str
    width: int
    height: int
    fps: int
    media_epoch: _timestamp_pb2.Timestamp
    control_token: str
    stream_id: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., playlist_path: _Optional[str] = ..., playlist_url: _Optional[str] = ..., avatar: _Optional[str] = ..., voice: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., media_epoch: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., control_token: _Optional[str] = ..., stream_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class SayRequest(_message.Message):
    __slots__ = ("session_id", "text")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    text: str
    def __init__(self, session_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class SayResponse(_message.Message):
    __slots__ = ("utterance_id",)
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    def __init__(self, utterance_id: _Optional[str] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("session_id", "text")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    text: str
    def __init__(self, session_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("utterance_id",)
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    def __init__(self, utterance_id: _Optional[str] = ...) -> None: ...

class InterruptRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class InterruptResponse(_message.Message):
    __slots__ = ("utterance_id", "cut_at_us")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CUT_AT_US_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    cut_at_us: int
    def __init__(self, utterance_id: _Optional[str] = ..., cut_at_us: _Optional[int] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalogResponse(_message.Message):
    __slots__ = ("avatars", "default_avatar", "voices", "default_voice")
    AVATARS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_AVATAR_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VOICE_FIELD_NUMBER: _ClassVar[int]
    avatars: _containers.RepeatedCompositeFieldContainer[_video_pb2.Avatar]
    default_avatar: str
    voices: _containers.RepeatedCompositeFieldContainer[_tts_pb2.Voice]
    default_voice: str
    def __init__(self, avatars: _Optional[_Iterable[_Union[_video_pb2.Avatar, _Mapping]]] = ..., default_avatar: _Optional[str] = ..., voices: _Optional[_Iterable[_Union[_tts_pb2.Voice, _Mapping]]] = ..., default_voice: _Optional[str] = ...) -> None: ...

class WatchSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class StateChanged(_message.Message):
    __slots__ = ("state", "utterance_id", "expected_start_us")
    STATE_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_START_US_FIELD_NUMBER: _ClassVar[int]
    state: SessionState
    utterance_id: str
    expected_start_us: int
    def __init__(self, state: _Optional[_Union[SessionState, str]] = ..., utterance_id: _Optional[str] = ..., expected_start_us: _Optional[int] = ...) -> None: ...

class SpeechStarted(_message.Message):
    __slots__ = ("utterance_id", "source", "start_us")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    source: UtteranceSource
    start_us: int
    def __init__(self, utterance_id: _Optional[str] = ..., source: _Optional[_Union[UtteranceSource, str]] = ..., start_us: _Optional[int] = ...) -> None: ...

class SpeechFinished(_message.Message):
    __slots__ = ("utterance_id", "reason", "end_us", "spoken_text")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    SPOKEN_TEXT_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    reason: FinishReason
    end_us: int
    spoken_text: str
    def __init__(self, utterance_id: _Optional[str] = ..., reason: _Optional[_Union[FinishReason, str]] = ..., end_us: _Optional[int] = ..., spoken_text: _Optional[str] = ...) -> None: ...

class WordSpoken(_message.Message):
    __slots__ = ("utterance_id", "word", "start_us", "end_us", "word_index")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    WORD_INDEX_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    word: str
    start_us: int
    end_us: int
    word_index: int
    def __init__(self, utterance_id: _Optional[str] = ..., word: _Optional[str] = ..., start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., word_index: _Optional[int] = ...) -> None: ...

class UtteranceLatency(_message.Message):
    __slots__ = ("utterance_id", "first_clause_us", "first_audio_us", "first_speech_frame_us", "first_speech_segment_us")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_CLAUSE_US_FIELD_NUMBER: _ClassVar[int]
    FIRST_AUDIO_US_FIELD_NUMBER: _ClassVar[int]
    FIRST_SPEECH_FRAME_US_FIELD_NUMBER: _ClassVar[int]
    FIRST_SPEECH_SEGMENT_US_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    first_clause_us: int
    first_audio_us: int
    first_speech_frame_us: int
    first_speech_segment_us: int
    def __init__(self, utterance_id: _Optional[str] = ..., first_clause_us: _Optional[int] = ..., first_audio_us: _Optional[int] = ..., first_speech_frame_us: _Optional[int] = ..., first_speech_segment_us: _Optional[int] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("utterance_id", "code", "message", "component")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    code: int
    message: str
    component: str
    def __init__(self, utterance_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., component: _Optional[str] = ...) -> None: ...

class VoiceDegraded(_message.Message):
    __slots__ = ("utterance_id", "message", "fallback_engine")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ENGINE_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    message: str
    fallback_engine: str
    def __init__(self, utterance_id: _Optional[str] = ..., message: _Optional[str] = ..., fallback_engine: _Optional[str] = ...) -> None: ...

class StreamStalled(_message.Message):
    __slots__ = ("start_us", "end_us", "reason")
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    start_us: int
    end_us: int
    reason: str
    def __init__(self, start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchSessionResponse(_message.Message):
    __slots__ = ("media_time_us", "time", "state_changed", "speech_started", "speech_finished", "word_spoken", "latency", "error", "voice_degraded", "stalled", "heartbeat")
    MEDIA_TIME_US_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_STARTED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FINISHED_FIELD_NUMBER: _ClassVar[int]
    WORD_SPOKEN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VOICE_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    STALLED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    media_time_us: int
    time: _timestamp_pb2.Timestamp
    state_changed: StateChanged
    speech_started: SpeechStarted
    speech_finished: SpeechFinished
    word_spoken: WordSpoken
    latency: UtteranceLatency
    error: SessionError
    voice_degraded: VoiceDegraded
    stalled: StreamStalled
    heartbeat: Heartbeat
    def __init__(self, media_time_us: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_changed: _Optional[_Union[StateChanged, _Mapping]] = ..., speech_started: _Optional[_Union[SpeechStarted, _Mapping]] = ..., speech_finished: _Optional[_Union[SpeechFinished, _Mapping]] = ..., word_spoken: _Optional[_Union[WordSpoken, _Mapping]] = ..., latency: _Optional[_Union[UtteranceLatency, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ..., voice_degraded: _Optional[_Union[VoiceDegraded, _Mapping]] = ..., stalled: _Optional[_Union[StreamStalled, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
