import datetime

from avatar.v1 import media_pb2 as _media_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderConfig(_message.Message):
    __slots__ = ("session_id", "avatar", "width", "height", "fps", "sample_rate_hz", "portrait", "chunk_frames", "packager_address", "publish_token", "idle_phase_offset", "stream_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    PORTRAIT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PACKAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    IDLE_PHASE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    avatar: str
    width: int
    height: int
    fps: int
    sample_rate_hz: int
    portrait: bytes
    chunk_frames: int
    packager_address: str
    publish_token: str
    idle_phase_offset: int
    stream_id: str
    def __init__(self, session_id: _Optional[str] = ..., avatar: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., portrait: _Optional[bytes] = ..., chunk_frames: _Optional[int] = ..., packager_address: _Optional[str] = ..., publish_token: _Optional[str] = ..., idle_phase_offset: _Optional[int] = ..., stream_id: _Optional[str] = ...) -> None: ...

class FrameDrive(_message.Message):
    __slots__ = ("frame_index", "utterance_id", "pcm_s16le", "phonemes", "epoch")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PCM_S16LE_FIELD_NUMBER: _ClassVar[int]
    PHONEMES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    utterance_id: str
    pcm_s16le: bytes
    phonemes: _containers.RepeatedCompositeFieldContainer[_media_pb2.PhonemeMark]
    epoch: int
    def __init__(self, frame_index: _Optional[int] = ..., utterance_id: _Optional[str] = ..., pcm_s16le: _Optional[bytes] = ..., phonemes: _Optional[_Iterable[_Union[_media_pb2.PhonemeMark, _Mapping]]] = ..., epoch: _Optional[int] = ...) -> None: ...

class ResetTimeline(_message.Message):
    __slots__ = ("from_frame_index", "epoch")
    FROM_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    from_frame_index: int
    epoch: int
    def __init__(self, from_frame_index: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class PlayoutClock(_message.Message):
    __slots__ = ("media_epoch",)
    MEDIA_EPOCH_FIELD_NUMBER: _ClassVar[int]
    media_epoch: _timestamp_pb2.Timestamp
    def __init__(self, media_epoch: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("config", "frame", "reset", "clock")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    config: RenderConfig
    frame: FrameDrive
    reset: ResetTimeline
    clock: PlayoutClock
    def __init__(self, config: _Optional[_Union[RenderConfig, _Mapping]] = ..., frame: _Optional[_Union[FrameDrive, _Mapping]] = ..., reset: _Optional[_Union[ResetTimeline, _Mapping]] = ..., clock: _Optional[_Union[PlayoutClock, _Mapping]] = ...) -> None: ...

class RenderResponse(_message.Message):
    __slots__ = ("status", "ready")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    status: RenderStatus
    ready: RenderReady
    def __init__(self, status: _Optional[_Union[RenderStatus, _Mapping]] = ..., ready: _Optional[_Union[RenderReady, _Mapping]] = ...) -> None: ...

class RenderReady(_message.Message):
    __slots__ = ("idle_loop_id", "idle_loop_frames", "settle_frames", "render_every_chunk")
    IDLE_LOOP_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_LOOP_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SETTLE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    RENDER_EVERY_CHUNK_FIELD_NUMBER: _ClassVar[int]
    idle_loop_id: str
    idle_loop_frames: int
    settle_frames: int
    render_every_chunk: bool
    def __init__(self, idle_loop_id: _Optional[str] = ..., idle_loop_frames: _Optional[int] = ..., settle_frames: _Optional[int] = ..., render_every_chunk: _Optional[bool] = ...) -> None: ...

class RenderStatus(_message.Message):
    __slots__ = ("frames_per_second", "lookahead_frames")
    FRAMES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames_per_second: float
    lookahead_frames: int
    def __init__(self, frames_per_second: _Optional[float] = ..., lookahead_frames: _Optional[int] = ...) -> None: ...

class Avatar(_message.Message):
    __slots__ = ("name", "description", "backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    backend: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class ListAvatarsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAvatarsResponse(_message.Message):
    __slots__ = ("avatars", "default_avatar")
    AVATARS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_AVATAR_FIELD_NUMBER: _ClassVar[int]
    avatars: _containers.RepeatedCompositeFieldContainer[Avatar]
    default_avatar: str
    def __init__(self, avatars: _Optional[_Iterable[_Union[Avatar, _Mapping]]] = ..., default_avatar: _Optional[str] = ...) -> None: ...

class PrepareAvatarRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    def __init__(self, image: _Optional[bytes] = ...) -> None: ...

class PrepareAvatarResponse(_message.Message):
    __slots__ = ("avatar",)
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    avatar: Avatar
    def __init__(self, avatar: _Optional[_Union[Avatar, _Mapping]] = ...) -> None: ...

class GetWorkerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetWorkerStatusResponse(_message.Message):
    __slots__ = ("capacity", "active_streams", "worker_id", "frames_per_second", "speaking_capacity", "speaking_streams", "cpu_budget_cores", "speaking_stream_cores", "idle_stream_cores")
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_STREAMS_FIELD_NUMBER: _ClassVar[int]
    CPU_BUDGET_CORES_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_STREAM_CORES_FIELD_NUMBER: _ClassVar[int]
    IDLE_STREAM_CORES_FIELD_NUMBER: _ClassVar[int]
    capacity: int
    active_streams: int
    worker_id: str
    frames_per_second: float
    speaking_capacity: int
    speaking_streams: int
    cpu_budget_cores: float
    speaking_stream_cores: float
    idle_stream_cores: float
    def __init__(self, capacity: _Optional[int] = ..., active_streams: _Optional[int] = ..., worker_id: _Optional[str] = ..., frames_per_second: _Optional[float] = ..., speaking_capacity: _Optional[int] = ..., speaking_streams: _Optional[int] = ..., cpu_budget_cores: _Optional[float] = ..., speaking_stream_cores: _Optional[float] = ..., idle_stream_cores: _Optional[float] = ...) -> None: ...
