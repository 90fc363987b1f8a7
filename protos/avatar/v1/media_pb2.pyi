from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PhonemeMark(_message.Message):
    __slots__ = ("phoneme", "start_us", "end_us")
    PHONEME_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    phoneme: str
    start_us: int
    end_us: int
    def __init__(self, phoneme: _Optional[str] = ..., start_us: _Optional[int] = ..., end_us: _Optional[int] = ...) -> None: ...

class WordMark(_message.Message):
    __slots__ = ("word", "start_us", "end_us", "word_index")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    WORD_INDEX_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_us: int
    end_us: int
    word_index: int
    def __init__(self, word: _Optional[str] = ..., start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., word_index: _Optional[int] = ...) -> None: ...

class TextClause(_message.Message):
    __slots__ = ("utterance_id", "clause_index", "text")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    clause_index: int
    text: str
    def __init__(self, utterance_id: _Optional[str] = ..., clause_index: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class CancelUtterance(_message.Message):
    __slots__ = ("utterance_id",)
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    def __init__(self, utterance_id: _Optional[str] = ...) -> None: ...

class UtteranceError(_message.Message):
    __slots__ = ("utterance_id", "code", "message")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    utterance_id: str
    code: int
    message: str
    def __init__(self, utterance_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
