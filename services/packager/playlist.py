"""Live HLS media playlist (fMP4) with Low-Latency HLS parts: a sliding window of segments, the parts of the last
few, a preload hint for the next part, ENDLIST once the stream ends.

Pure: no I/O and no clock. Every segment carries EXT-X-PROGRAM-DATE-TIME (media epoch + segment start), so a player
(and the web page) can map media time to wall-clock time, e.g. to show latency or to line up captions.

Low latency (the HLS 2nd edition draft, rfc8216bis, and Apple's "Enabling Low-Latency HLS"): each segment is made of
parts (`seg<msn>.<i>.m4s`) that each start with an independent frame and are listed with EXT-X-PART as soon as they
exist; EXT-X-PART-INF gives the part target, EXT-X-SERVER-CONTROL says the server holds playlist requests until a
part exists (CAN-BLOCK-RELOAD) and how far behind the live edge to play (PART-HOLD-BACK, three part targets), and
EXT-X-PRELOAD-HINT names the next part. The full segments stay listed, so a player without low-latency support plays
the same playlist at normal latency. Parts are listed for the segments of the last PART_SEGMENTS_KEPT target
durations only (the spec lets older ones go).

Delta updates (6.2.5.1, 6.3.7): the window holds up to 900 segments (a quarter of an hour), and a low-latency player
reloads the playlist every part (160 ms), so it may ask for a delta update (`_HLS_skip=YES`), which replaces the
segments more than CAN-SKIP-UNTIL (six target durations, the spec's least) before the end with one EXT-X-SKIP tag:
a few segments instead of hundreds, for the server to send and the player to parse five times a second.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass, field

INIT_URI = "init.mp4"
PART_HOLD_BACK_TARGETS = 3  # the spec's recommended minimum
PART_SEGMENTS_KEPT_S = 3  # list parts for the segments within three target durations of the end
SKIP_UNTIL_TARGETS = 6  # CAN-SKIP-UNTIL, in target durations: the spec's minimum
_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def segment_uri(sequence: int) -> str:
    return f"seg{sequence}.m4s"


def part_uri(sequence: int, index: int) -> str:
    return f"seg{sequence}.{index}.m4s"


def format_program_date_time(unix_us: int) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2025-01-02T03:04:05.678Z (truncated, not rounded)."""
    moment = _UNIX_EPOCH + dt.timedelta(microseconds=unix_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def format_duration(duration_us: int) -> str:
    """A duration in seconds with microsecond precision, trailing zeros trimmed (1.0, 0.04, 0.333333)."""
    whole, fraction = divmod(duration_us, 1_000_000)
    digits = f"{fraction:06d}".rstrip("0") or "0"
    return f"{whole}.{digits}"


@dataclass(frozen=True)
class PlaylistPart:
    sequence: int  # the media sequence number of its segment
    index: int  # its place in the segment, from 0
    duration_us: int
    independent: bool = True

    @property
    def uri(self) -> str:
        return part_uri(self.sequence, self.index)


@dataclass
class PlaylistSegment:
    sequence: int
    start_us: int
    duration_us: int
    parts: list[PlaylistPart] = field(default_factory=list)
    part_count: int = 0  # how many parts it was made of (still known once they are no longer listed)
    parts_delisted_us: int | None = None  # the playlist's media end when its parts stopped being listed

    @property
    def uri(self) -> str:
        return segment_uri(self.sequence)


class LivePlaylist:
    """A media playlist with at most `window` segments (more when fewer would last under three target durations);
    sequences must be added in order from 0.

    With `part_target_us`, parts are added (`add_part`) before the segment they make up is completed (`add`)."""

    def __init__(
        self,
        media_epoch_us: int,
        segment_duration_us: int,
        window: int,
        init_uri: str = INIT_URI,
        part_target_us: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1 segment")
        if segment_duration_us <= 0:
            raise ValueError("segment duration must be positive")
        if part_target_us is not None and not 0 < part_target_us <= segment_duration_us:
            raise ValueError("the part target must be positive and at most a segment")
        self.media_epoch_us = media_epoch_us
        self.window = window
        self.init_uri = init_uri
        self.part_target_us = part_target_us
        # Must not change while the playlist lives, so it comes from the configured (longest) duration.
        self._target_duration_s = max(1, math.ceil(segment_duration_us / 1_000_000))
        self._segments: deque[PlaylistSegment] = deque()
        self._open: PlaylistSegment | None = None  # the segment whose parts are coming
        self._next_sequence = 0
        self._ended = False
        self._text: str | None = None
        self._delta_text: str | None = None
        self.version = 0  # grows with every change (for waiters)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def media_sequence(self) -> int:
        """Sequence of the first segment in the window (the next one to come while the window is empty)."""
        return self._segments[0].sequence if self._segments else self._next_sequence

    @property
    def next_sequence(self) -> int:
        """The sequence number of the segment in progress (or the next one to start)."""
        return self._next_sequence

    @property
    def segments(self) -> tuple[PlaylistSegment, ...]:
        return tuple(self._segments)

    @property
    def target_duration_s(self) -> int:
        return self._target_duration_s

    @property
    def last_part(self) -> tuple[int, int] | None:
        """(sequence, index) of the newest part listed."""
        if self._open is not None and self._open.parts:
            return self._open.sequence, self._open.parts[-1].index
        if self._segments and self._segments[-1].parts:
            return self._segments[-1].sequence, self._segments[-1].parts[-1].index
        return None

    def __contains__(self, sequence: object) -> bool:
        return isinstance(sequence, int) and self.media_sequence <= sequence < self._next_sequence

    @property
    def last_sequence(self) -> int:
        """The media sequence number of the newest segment the playlist shows (whole, or by its first parts); -1
        before any."""
        if self._open is not None and self._open.parts:
            return self._open.sequence
        return self._next_sequence - 1

    def segment(self, sequence: int) -> PlaylistSegment | None:
        """The complete segment `sequence` while it is in the window."""
        offset = sequence - self.media_sequence
        return self._segments[offset] if 0 <= offset < len(self._segments) else None

    def has(self, sequence: int, part: int | None = None) -> bool:
        """Whether the playlist holds segment `sequence` (whole), or with `part`, that part of it (or later).

        A part index past a complete segment's last part means the next segment's first part (the spec's rule for
        blocking requests)."""
        if part is None:
            return sequence < self._next_sequence
        complete = self.segment(sequence)
        if complete is not None and part >= complete.part_count > 0:
            return self.has(sequence + 1, 0)
        if sequence < self._next_sequence:
            return True  # a complete segment holds all its parts
        return self._open is not None and self._open.sequence == sequence and len(self._open.parts) > part

    def add_part(self, part: PlaylistPart) -> None:
        """Lists the next part of the segment in progress."""
        if self._ended:
            raise ValueError("the playlist has ended")
        if self.part_target_us is None:
            raise ValueError("this playlist has no parts")
        if part.sequence != self._next_sequence:
            raise ValueError(f"expected a part of segment {self._next_sequence}, got {part.sequence}")
        if self._open is None:
            self._open = PlaylistSegment(part.sequence, 0, 0)
        if part.index != len(self._open.parts):
            raise ValueError(f"expected part {len(self._open.parts)}, got {part.index}")
        if not 0 < part.duration_us <= self.part_target_us:
            raise ValueError(f"a part lasts at most the part target ({self.part_target_us} us)")
        self._open.parts.append(part)
        self._changed()

    def add(self, segment: PlaylistSegment) -> list[int]:
        """Appends a complete segment (with its parts, when it has any); returns the sequences that slid out."""
        if self._ended:
            raise ValueError("the playlist has ended")
        if segment.sequence != self._next_sequence:
            raise ValueError(f"expected segment {self._next_sequence}, got {segment.sequence}")
        if segment.duration_us <= 0:
            raise ValueError("segment duration must be positive")
        if self._open is not None:
            if sum(part.duration_us for part in self._open.parts) != segment.duration_us:
                raise ValueError("the segment's parts do not add up to its duration")
            segment.parts = self._open.parts
            segment.part_count = len(segment.parts)
            self._open = None
        self._segments.append(segment)
        self._next_sequence += 1
        # A longer segment than configured would break the target duration rule; widen it rather than lie.
        self._target_duration_s = max(self._target_duration_s, math.ceil(segment.duration_us / 1_000_000))
        evicted: list[int] = []
        # A live playlist never gets shorter than three target durations (the spec's MUST), whatever the window.
        shortest_us = 3 * self._target_duration_s * 1_000_000
        listed_us = sum(listed.duration_us for listed in self._segments)
        while len(self._segments) > self.window and listed_us - self._segments[0].duration_us >= shortest_us:
            listed_us -= self._segments[0].duration_us
            evicted.append(self._segments.popleft().sequence)
        self._forget_old_parts()
        self._changed()
        return evicted

    def end(self) -> None:
        """Marks the stream finished (EXT-X-ENDLIST); idempotent. Parts of an unfinished segment are dropped."""
        if not self._ended:
            self._ended = True
            self._open = None
            self._changed()

    @property
    def part_horizon_us(self) -> int:
        """How much media at the end of the playlist lists its parts."""
        return PART_SEGMENTS_KEPT_S * self._target_duration_s * 1_000_000

    def _forget_old_parts(self) -> None:
        kept_us = 0
        horizon_us = self.part_horizon_us
        newest = self._segments[-1]
        for segment in reversed(self._segments):
            if kept_us >= horizon_us and segment.parts:
                segment.parts = []
                segment.parts_delisted_us = newest.start_us + newest.duration_us
            kept_us += segment.duration_us

    def _changed(self) -> None:
        self._text = None
        self._delta_text = None
        self.version += 1

    @property
    def skip_until_us(self) -> int:
        """CAN-SKIP-UNTIL: how much media at the end of the playlist a delta update still lists."""
        return SKIP_UNTIL_TARGETS * self._target_duration_s * 1_000_000

    def skippable(self) -> int:
        """How many segments at the front a delta update skips: those that end before the skip boundary
        (CAN-SKIP-UNTIL before the end of the playlist); none for a playlist without parts or once ended."""
        if self.part_target_us is None or self._ended or not self._segments:
            return 0
        last = self._segments[-1]
        end_us = last.start_us + last.duration_us
        if self._open is not None:
            end_us += sum(part.duration_us for part in self._open.parts)
        boundary_us = end_us - self.skip_until_us
        count = 0
        for segment in self._segments:
            if segment.start_us + segment.duration_us > boundary_us:
                break
            count += 1
        return count

    def render(self, delta: bool = False) -> str:
        """The playlist; with `delta` (a player's `_HLS_skip=YES`), the delta update when it skips anything."""
        if delta and self._delta_text is None and (skipped := self.skippable()) > 0:
            self._delta_text = self._render(skipped)
        if delta and self._delta_text is not None:
            return self._delta_text
        if self._text is None:
            self._text = self._render(0)
        return self._text

    def _render(self, skipped: int) -> str:
        # EXT-X-SKIP needs protocol version 9 (section 7).
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{9 if skipped else 7}", f"#EXT-X-TARGETDURATION:{self._target_duration_s}"]
        if self.part_target_us is not None:
            hold_back = PART_HOLD_BACK_TARGETS * self.part_target_us
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={format_duration(self.part_target_us)}")
            lines.append(
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                f"CAN-SKIP-UNTIL={format_duration(self.skip_until_us)},PART-HOLD-BACK={format_duration(hold_back)}"
            )
        lines += [
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            f'#EXT-X-MAP:URI="{self.init_uri}"',
        ]
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        listed = list(self._segments)[skipped:]
        start_us = listed[0].start_us if listed else 0
        for segment in listed:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(self.media_epoch_us + segment.start_us)}")
            lines += [_part_line(part) for part in segment.parts]
            lines.append(f"#EXTINF:{format_duration(segment.duration_us)},")
            lines.append(segment.uri)
            start_us = segment.start_us + segment.duration_us
        if self._open is not None and self._open.parts:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(self.media_epoch_us + start_us)}")
            lines += [_part_line(part) for part in self._open.parts]
        if self._ended:
            lines.append("#EXT-X-ENDLIST")
        elif self.part_target_us is not None:
            following = self._next_part()
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(*following)}"')
        return "\n".join(lines) + "\n"

    def _next_part(self) -> tuple[int, int]:
        """(sequence, index) of the part that comes next."""
        if self._open is not None:
            return self._open.sequence, len(self._open.parts)
        return self._next_sequence, 0


def _part_line(part: PlaylistPart) -> str:
    independent = ",INDEPENDENT=YES" if part.independent else ""
    return f'#EXT-X-PART:DURATION={format_duration(part.duration_us)},URI="{part.uri}"{independent}'
