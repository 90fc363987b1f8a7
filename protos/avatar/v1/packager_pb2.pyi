import datetime

from avatar.v1 import media_pb2 as _media_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishConfig(_message.Message):
    __slots__ = ("session_id", "width", "height", "fps", "sample_rate_hz", "segment_duration_ms", "media_epoch")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_EPOCH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    width: int
    height: int
    fps: int
    sample_rate_hz: int
    segment_duration_ms: int
    media_epoch: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., segment_duration_ms: _Optional[int] = ..., media_epoch: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MediaFrame(_message.Message):
    __slots__ = ("video", "pcm_s16le", "speech")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    PCM_S16LE_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FIELD_NUMBER: _ClassVar[int]
    video: _media_pb2.VideoFrame
    pcm_s16le: bytes
    speech: bool
    def __init__(self, video: _Optional[_Union[_media_pb2.VideoFrame, _Mapping]] = ..., pcm_s16le: _Optional[bytes] = ..., speech: _Optional[bool] = ...) -> None: ...

class EndOfStream(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("config", "frame", "end")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    config: PublishConfig
    frame: MediaFrame
    end: EndOfStream
    def __init__(self, config: _Optional[_Union[PublishConfig, _Mapping]] = ..., frame: _Optional[_Union[MediaFrame, _Mapping]] = ..., end: _Optional[_Union[EndOfStream, _Mapping]] = ...) -> None: ...

class PlaylistReady(_message.Message):
    __slots__ = ("playlist_path",)
    PLAYLIST_PATH_FIELD_NUMBER: _ClassVar[int]
    playlist_path: str
    def __init__(self, playlist_path: _Optional[str] = ...) -> None: ...

class SegmentPublished(_message.Message):
    __slots__ = ("sequence", "uri", "start_frame_index", "frame_count", "start_us", "duration_us", "has_speech")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    HAS_SPEECH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    uri: str
    start_frame_index: int
    frame_count: int
    start_us: int
    duration_us: int
    has_speech: bool
    def __init__(self, sequence: _Optional[int] = ..., uri: _Optional[str] = ..., start_frame_index: _Optional[int] = ..., frame_count: _Optional[int] = ..., start_us: _Optional[int] = ..., duration_us: _Optional[int] = ..., has_speech: _Optional[bool] = ...) -> None: ...

class PlaylistEnded(_message.Message):
    __slots__ = ("segment_count",)
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    segment_count: int
    def __init__(self, segment_count: _Optional[int] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("ready", "segment", "ended")
    READY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ready: PlaylistReady
    segment: SegmentPublished
    ended: PlaylistEnded
    def __init__(self, ready: _Optional[_Union[PlaylistReady, _Mapping]] = ..., segment: _Optional[_Union[SegmentPublished, _Mapping]] = ..., ended: _Optional[_Union[PlaylistEnded, _Mapping]] = ...) -> None: ...
