from infinitetalk_live_client.avatar.v1 import media_pb2 as _media_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateConfig(_message.Message):
    __slots__ = ("session_id", "persona", "provider", "model")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    persona: str
    provider: str
    model: str
    def __init__(self, session_id: _Optional[str] = ..., persona: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class UserTurn(_message.Message):
    __slots__ = ("utterance_id", "text")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    text: str
    def __init__(self, utterance_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("config", "turn", "cancel")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    config: GenerateConfig
    turn: UserTurn
    cancel: _media_pb2.CancelUtterance
    def __init__(self, config: _Optional[_Union[GenerateConfig, _Mapping]] = ..., turn: _Optional[_Union[UserTurn, _Mapping]] = ..., cancel: _Optional[_Union[_media_pb2.CancelUtterance, _Mapping]] = ...) -> None: ...

class TurnDone(_message.Message):
    __slots__ = ("utterance_id", "clause_count")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_COUNT_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    clause_count: int
    def __init__(self, utterance_id: _Optional[str] = ..., clause_count: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("clause", "done", "error")
    CLAUSE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    clause: _media_pb2.TextClause
    done: TurnDone
    error: _media_pb2.UtteranceError
    def __init__(self, clause: _Optional[_Union[_media_pb2.TextClause, _Mapping]] = ..., done: _Optional[_Union[TurnDone, _Mapping]] = ..., error: _Optional[_Union[_media_pb2.UtteranceError, _Mapping]] = ...) -> None: ...
