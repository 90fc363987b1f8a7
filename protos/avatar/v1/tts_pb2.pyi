from avatar.v1 import media_pb2 as _media_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SynthesizeConfig(_message.Message):
    __slots__ = ("session_id", "voice", "sample_rate_hz")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    voice: str
    sample_rate_hz: int
    def __init__(self, session_id: _Optional[str] = ..., voice: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("config", "clause", "cancel")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    config: SynthesizeConfig
    clause: _media_pb2.TextClause
    cancel: _media_pb2.CancelUtterance
    def __init__(self, config: _Optional[_Union[SynthesizeConfig, _Mapping]] = ..., clause: _Optional[_Union[_media_pb2.TextClause, _Mapping]] = ..., cancel: _Optional[_Union[_media_pb2.CancelUtterance, _Mapping]] = ...) -> None: ...

class SynthesizedAudio(_message.Message):
    __slots__ = ("utterance_id", "clause_index", "pcm_s16le", "sample_rate_hz", "offset_samples", "phonemes", "words")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_INDEX_FIELD_NUMBER: _ClassVar[int]
    PCM_S16LE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PHONEMES_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    clause_index: int
    pcm_s16le: bytes
    sample_rate_hz: int
    offset_samples: int
    phonemes: _containers.RepeatedCompositeFieldContainer[_media_pb2.PhonemeMark]
    words: _containers.RepeatedCompositeFieldContainer[_media_pb2.WordMark]
    def __init__(self, utterance_id: _Optional[str] = ..., clause_index: _Optional[int] = ..., pcm_s16le: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., offset_samples: _Optional[int] = ..., phonemes: _Optional[_Iterable[_Union[_media_pb2.PhonemeMark, _Mapping]]] = ..., words: _Optional[_Iterable[_Union[_media_pb2.WordMark, _Mapping]]] = ...) -> None: ...

class ClauseSynthesized(_message.Message):
    __slots__ = ("utterance_id", "clause_index", "sample_count", "engine")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    clause_index: int
    sample_count: int
    engine: str
    def __init__(self, utterance_id: _Optional[str] = ..., clause_index: _Optional[int] = ..., sample_count: _Optional[int] = ..., engine: _Optional[str] = ...) -> None: ...

class SynthesisDegraded(_message.Message):
    __slots__ = ("utterance_id", "code", "message", "fallback_engine")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ENGINE_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    code: int
    message: str
    fallback_engine: str
    def __init__(self, utterance_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., fallback_engine: _Optional[str] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("audio", "clause_done", "error", "degraded")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    audio: SynthesizedAudio
    clause_done: ClauseSynthesized
    error: _media_pb2.UtteranceError
    degraded: SynthesisDegraded
    def __init__(self, audio: _Optional[_Union[SynthesizedAudio, _Mapping]] = ..., clause_done: _Optional[_Union[ClauseSynthesized, _Mapping]] = ..., error: _Optional[_Union[_media_pb2.UtteranceError, _Mapping]] = ..., degraded: _Optional[_Union[SynthesisDegraded, _Mapping]] = ...) -> None: ...

class Voice(_message.Message):
    __slots__ = ("name", "language", "engine", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    language: str
    engine: str
    description: str
    def __init__(self, name: _Optional[str] = ..., language: _Optional[str] = ..., engine: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices", "default_voice")
    VOICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VOICE_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    default_voice: str
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ..., default_voice: _Optional[str] = ...) -> None: ...
