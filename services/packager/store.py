"""In-memory HLS state of every session this process packages: playlist, init segment, the segments still in the
playlist window and the Low-Latency HLS parts of the last few. Shared by the gRPC side (writes) and the HTTP side
(reads); used only from the event loop thread.

Segments and parts are kept as the pieces they were made of (headers and sample payloads, see
fmp4.fragment_parts), so idle segments share the idle loop's picture bytes instead of each holding a copy, and a
segment shares its parts' bytes. Segments that slide out of the window are dropped at once (then 404); parts stay
fetchable for three target durations after the playlist stops listing them. Readers that wait for something not
there yet (a blocking playlist reload, the hinted next part) wait for the stream's next change. An ended stream
stays readable for `retain_ended_s` (players and late viewers still fetch it), then the whole stream is dropped.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.packager.playlist import LivePlaylist, PlaylistPart, PlaylistSegment

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")


def valid_session_id(session_id: str) -> bool:
    return SESSION_ID_PATTERN.fullmatch(session_id) is not None


class StreamExists(Exception):
    """The session id already has a stream (live, or ended but still retained)."""


@dataclass
class HlsStream:
    session_id: str
    playlist: LivePlaylist
    init_segment: bytes | None = None
    segments: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    parts: dict[tuple[int, int], tuple[bytes, ...]] = field(default_factory=dict)
    ended_at: float | None = None
    _change: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def live(self) -> bool:
        return not self.playlist.ended

    async def changed(self, timeout_s: float) -> bool:
        """Waits for the stream's next change (a part, a segment, the end); False when `timeout_s` passed first."""
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._change), timeout_s)
        except TimeoutError:
            return False
        return True

    def notify(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)


class HlsStore:
    def __init__(
        self, window_segments: int = 900, retain_ended_s: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_segments < 1:
            raise ValueError("window_segments must be at least 1")
        self.window_segments = window_segments
        self.retain_ended_s = retain_ended_s
        self._clock = clock
        self._streams: dict[str, HlsStream] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def get(self, session_id: str) -> HlsStream | None:
        self._expire()
        return self._streams.get(session_id)

    def open(
        self, session_id: str, media_epoch_us: int, segment_duration_us: int, part_target_us: int | None = None
    ) -> HlsStream:
        """Creates the (empty) stream of a session (with parts of `part_target_us` when given); StreamExists if the
        id is taken."""
        self._expire()
        if session_id in self._streams:
            raise StreamExists(session_id)
        playlist = LivePlaylist(
            media_epoch_us, segment_duration_us, self.window_segments, part_target_us=part_target_us
        )
        stream = HlsStream(session_id, playlist)
        self._streams[session_id] = stream
        return stream

    def set_init(self, stream: HlsStream, data: bytes) -> None:
        stream.init_segment = data

    def add_part(self, stream: HlsStream, part: PlaylistPart, data: tuple[bytes, ...]) -> None:
        stream.playlist.add_part(part)
        stream.parts[(part.sequence, part.index)] = data
        stream.notify()

    def add_segment(
        self, stream: HlsStream, sequence: int, start_us: int, duration_us: int, data: bytes | tuple[bytes, ...]
    ) -> None:
        for evicted in stream.playlist.add(PlaylistSegment(sequence, start_us, duration_us)):
            stream.segments.pop(evicted, None)
        stream.segments[sequence] = (data,) if isinstance(data, bytes) else data
        self._forget_old_parts(stream, start_us + duration_us)
        stream.notify()

    @staticmethod
    def _forget_old_parts(stream: HlsStream, end_us: int) -> None:
        playlist = stream.playlist
        for key in list(stream.parts):
            if key[0] >= playlist.next_sequence:
                continue  # the segment in progress
            segment = playlist.segment(key[0])
            delisted_us = None if segment is None else segment.parts_delisted_us
            if segment is None or (delisted_us is not None and end_us - delisted_us >= playlist.part_horizon_us):
                del stream.parts[key]

    def end(self, stream: HlsStream) -> None:
        """Adds ENDLIST and schedules the stream's removal after the retention time (idempotent)."""
        if stream.ended_at is not None:
            return
        stream.playlist.end()
        stream.ended_at = self._clock()
        stream.notify()
        if self._streams.get(stream.session_id) is not stream:
            return
        if self.retain_ended_s <= 0:
            self._drop(stream)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (pure use): expired lazily by get/open
        self._timers[stream.session_id] = loop.call_later(self.retain_ended_s, self._drop, stream)

    def live_streams(self) -> list[HlsStream]:
        return [stream for stream in self._streams.values() if stream.live]

    def close(self) -> None:
        """Cancels the retention timers (at shutdown)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _drop(self, stream: HlsStream) -> None:
        if self._streams.get(stream.session_id) is stream:
            del self._streams[stream.session_id]
            timer = self._timers.pop(stream.session_id, None)
            if timer is not None:
                timer.cancel()

    def _expire(self) -> None:
        if self.retain_ended_s <= 0:
            return
        now = self._clock()
        for stream in [s for s in self._streams.values() if s.ended_at is not None]:
            if now - stream.ended_at >= self.retain_ended_s:  # type: ignore[operator]
                self._drop(stream)
