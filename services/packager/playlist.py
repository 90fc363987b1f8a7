"""Live HLS media playlist (version 7, fMP4): a sliding window of segments, ENDLIST once the stream ends.

Pure: no I/O and no clock. Every segment carries EXT-X-PROGRAM-DATE-TIME (media epoch + segment start), so a player
(and the web page) can map media time to wall-clock time, e.g. to show latency or to line up captions.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass

INIT_URI = "init.mp4"
_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def segment_uri(sequence: int) -> str:
    return f"seg{sequence}.m4s"


def format_program_date_time(unix_us: int) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2025-01-02T03:04:05.678Z (truncated, not rounded)."""
    moment = _UNIX_EPOCH + dt.timedelta(microseconds=unix_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def format_duration(duration_us: int) -> str:
    """EXTINF value in seconds with microsecond precision, trailing zeros trimmed (1.0, 0.04, 0.333333)."""
    whole, fraction = divmod(duration_us, 1_000_000)
    digits = f"{fraction:06d}".rstrip("0") or "0"
    return f"{whole}.{digits}"


@dataclass(frozen=True)
class PlaylistSegment:
    sequence: int
    start_us: int
    duration_us: int

    @property
    def uri(self) -> str:
        return segment_uri(self.sequence)


class LivePlaylist:
    """A media playlist with at most `window` segments; sequences must be added in order from 0."""

    def __init__(self, media_epoch_us: int, segment_duration_us: int, window: int, init_uri: str = INIT_URI) -> None:
        if window < 1:
            raise ValueError("window must be at least 1 segment")
        if segment_duration_us <= 0:
            raise ValueError("segment duration must be positive")
        self.media_epoch_us = media_epoch_us
        self.window = window
        self.init_uri = init_uri
        # Must not change while the playlist lives, so it comes from the configured (longest) duration.
        self._target_duration_s = max(1, math.ceil(segment_duration_us / 1_000_000))
        self._segments: deque[PlaylistSegment] = deque()
        self._next_sequence = 0
        self._ended = False
        self._text: str | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def media_sequence(self) -> int:
        """Sequence of the first segment in the window (the next one to come while the window is empty)."""
        return self._segments[0].sequence if self._segments else self._next_sequence

    @property
    def next_sequence(self) -> int:
        return self._next_sequence

    @property
    def segments(self) -> tuple[PlaylistSegment, ...]:
        return tuple(self._segments)

    @property
    def target_duration_s(self) -> int:
        return self._target_duration_s

    def __contains__(self, sequence: object) -> bool:
        return isinstance(sequence, int) and self.media_sequence <= sequence < self._next_sequence

    def add(self, segment: PlaylistSegment) -> list[int]:
        """Appends a segment; returns the sequences that slid out of the window."""
        if self._ended:
            raise ValueError("the playlist has ended")
        if segment.sequence != self._next_sequence:
            raise ValueError(f"expected segment {self._next_sequence}, got {segment.sequence}")
        if segment.duration_us <= 0:
            raise ValueError("segment duration must be positive")
        self._segments.append(segment)
        self._next_sequence += 1
        # A longer segment than configured would break the target duration rule; widen it rather than lie.
        self._target_duration_s = max(self._target_duration_s, math.ceil(segment.duration_us / 1_000_000))
        evicted: list[int] = []
        while len(self._segments) > self.window:
            evicted.append(self._segments.popleft().sequence)
        self._text = None
        return evicted

    def end(self) -> None:
        """Marks the stream finished (EXT-X-ENDLIST); idempotent."""
        if not self._ended:
            self._ended = True
            self._text = None

    def render(self) -> str:
        if self._text is None:
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:7",
                f"#EXT-X-TARGETDURATION:{self._target_duration_s}",
                f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
                "#EXT-X-INDEPENDENT-SEGMENTS",
                f'#EXT-X-MAP:URI="{self.init_uri}"',
            ]
            for segment in self._segments:
                lines.append(
                    f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(self.media_epoch_us + segment.start_us)}"
                )
                lines.append(f"#EXTINF:{format_duration(segment.duration_us)},")
                lines.append(segment.uri)
            if self._ended:
                lines.append("#EXT-X-ENDLIST")
            self._text = "\n".join(lines) + "\n"
        return self._text
