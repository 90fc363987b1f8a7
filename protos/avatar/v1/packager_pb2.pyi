import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishConfig(_message.Message):
    __slots__ = ("stream_id", "width", "height", "fps", "sample_rate_hz", "segment_duration_ms", "media_epoch", "chunk_frames", "publish_token", "idle_loop_id", "offline")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    IDLE_LOOP_ID_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    width: int
    height: int
    fps: int
    sample_rate_hz: int
    segment_duration_ms: int
    media_epoch: _timestamp_pb2.Timestamp
    chunk_frames: int
    publish_token: str
    idle_loop_id: str
    offline: bool
    def __init__(self, stream_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., segment_duration_ms: _Optional[int] = ..., media_epoch: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., chunk_frames: _Optional[int] = ..., publish_token: _Optional[str] = ..., idle_loop_id: _Optional[str] = ..., offline: _Optional[bool] = ...) -> None: ...

class ChunkCommit(_message.Message):
    __slots__ = ("start_frame_index", "pcm_s16le", "speech", "idle_loop_id", "idle_chunk_index", "rendered", "epoch", "lookahead_samples", "lookahead_pcm_s16le")
    START_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    PCM_S16LE_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FIELD_NUMBER: _ClassVar[int]
    IDLE_LOOP_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_PCM_S16LE_FIELD_NUMBER: _ClassVar[int]
    start_frame_index: int
    pcm_s16le: bytes
    speech: bool
    idle_loop_id: str
    idle_chunk_index: int
    rendered: bool
    epoch: int
    lookahead_samples: int
    lookahead_pcm_s16le: bytes
    def __init__(self, start_frame_index: _Optional[int] = ..., pcm_s16le: _Optional[bytes] = ..., speech: _Optional[bool] = ..., idle_loop_id: _Optional[str] = ..., idle_chunk_index: _Optional[int] = ..., rendered: _Optional[bool] = ..., epoch: _Optional[int] = ..., lookahead_samples: _Optional[int] = ..., lookahead_pcm_s16le: _Optional[bytes] = ...) -> None: ...

class EndOfStream(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("config", "end", "chunk")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    config: PublishConfig
    end: EndOfStream
    chunk: ChunkCommit
    def __init__(self, config: _Optional[_Union[PublishConfig, _Mapping]] = ..., end: _Optional[_Union[EndOfStream, _Mapping]] = ..., chunk: _Optional[_Union[ChunkCommit, _Mapping]] = ...) -> None: ...

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

class PartPublished(_message.Message):
    __slots__ = ("sequence", "index", "uri", "start_frame_index", "frame_count", "start_us", "duration_us", "has_speech")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    HAS_SPEECH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    index: int
    uri: str
    start_frame_index: int
    frame_count: int
    start_us: int
    duration_us: int
    has_speech: bool
    def __init__(self, sequence: _Optional[int] = ..., index: _Optional[int] = ..., uri: _Optional[str] = ..., start_frame_index: _Optional[int] = ..., frame_count: _Optional[int] = ..., start_us: _Optional[int] = ..., duration_us: _Optional[int] = ..., has_speech: _Optional[bool] = ...) -> None: ...

class PlaylistEnded(_message.Message):
    __slots__ = ("segment_count",)
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    segment_count: int
    def __init__(self, segment_count: _Optional[int] = ...) -> None: ...

class ChunkStalled(_message.Message):
    __slots__ = ("start_frame_index", "frame_count", "reason")
    START_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    start_frame_index: int
    frame_count: int
    reason: str
    def __init__(self, start_frame_index: _Optional[int] = ..., frame_count: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("ready", "segment", "ended", "stall", "part")
    READY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    STALL_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    ready: PlaylistReady
    segment: SegmentPublished
    ended: PlaylistEnded
    stall: ChunkStalled
    part: PartPublished
    def __init__(self, ready: _Optional[_Union[PlaylistReady, _Mapping]] = ..., segment: _Optional[_Union[SegmentPublished, _Mapping]] = ..., ended: _Optional[_Union[PlaylistEnded, _Mapping]] = ..., stall: _Optional[_Union[ChunkStalled, _Mapping]] = ..., part: _Optional[_Union[PartPublished, _Mapping]] = ...) -> None: ...

class PublishVideoConfig(_message.Message):
    __slots__ = ("stream_id", "publish_token", "width", "height", "fps", "chunk_frames", "sps", "pps", "idle_loop_id", "idle_loop_chunks")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SPS_FIELD_NUMBER: _ClassVar[int]
    PPS_FIELD_NUMBER: _ClassVar[int]
    IDLE_LOOP_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_LOOP_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    publish_token: str
    width: int
    height: int
    fps: int
    chunk_frames: int
    sps: bytes
    pps: bytes
    idle_loop_id: str
    idle_loop_chunks: int
    def __init__(self, stream_id: _Optional[str] = ..., publish_token: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., chunk_frames: _Optional[int] = ..., sps: _Optional[bytes] = ..., pps: _Optional[bytes] = ..., idle_loop_id: _Optional[str] = ..., idle_loop_chunks: _Optional[int] = ...) -> None: ...

class EncodedChunk(_message.Message):
    __slots__ = ("start_frame_index", "first_frame_index", "epoch", "frames")
    START_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    start_frame_index: int
    first_frame_index: int
    epoch: int
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, start_frame_index: _Optional[int] = ..., first_frame_index: _Optional[int] = ..., epoch: _Optional[int] = ..., frames: _Optional[_Iterable[bytes]] = ...) -> None: ...

class IdleLoopChunk(_message.Message):
    __slots__ = ("index", "frames")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    index: int
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., frames: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PublishVideoRequest(_message.Message):
    __slots__ = ("config", "loop_chunk", "chunk")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LOOP_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    config: PublishVideoConfig
    loop_chunk: IdleLoopChunk
    chunk: EncodedChunk
    def __init__(self, config: _Optional[_Union[PublishVideoConfig, _Mapping]] = ..., loop_chunk: _Optional[_Union[IdleLoopChunk, _Mapping]] = ..., chunk: _Optional[_Union[EncodedChunk, _Mapping]] = ...) -> None: ...

class IdleLoopWanted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishVideoReady(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishVideoResponse(_message.Message):
    __slots__ = ("loop_wanted", "ready")
    LOOP_WANTED_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    loop_wanted: IdleLoopWanted
    ready: PublishVideoReady
    def __init__(self, loop_wanted: _Optional[_Union[IdleLoopWanted, _Mapping]] = ..., ready: _Optional[_Union[PublishVideoReady, _Mapping]] = ...) -> None: ...
