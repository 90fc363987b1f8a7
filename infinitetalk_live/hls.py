"""Reading a live HLS playlist from the outside, as a player would: parse, follow, save to MP4."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin

import av


@dataclass(frozen=True)
class Segment:
    sequence: int
    uri: str
    duration_s: float
    program_date_time: datetime | None


@dataclass(frozen=True)
class Part:
    """A Low-Latency HLS part (EXT-X-PART) and the wall-clock time its media starts (from its segment's PDT)."""

    sequence: int
    index: int
    uri: str
    duration_s: float
    program_date_time: datetime | None


@dataclass
class Playlist:
    media_sequence: int = 0
    target_duration_s: float = 0.0
    map_uri: str = ""
    segments: list[Segment] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    ended: bool = False
    tags: list[str] = field(default_factory=list)

    def covered_until(self) -> datetime | None:
        """Wall-clock time of the end of the newest media listed (the newest part, else the newest segment)."""
        ends = [p.program_date_time + timedelta(seconds=p.duration_s) for p in self.parts if p.program_date_time]
        ends += [
            s.program_date_time + timedelta(seconds=s.duration_s) for s in self.segments[-1:] if s.program_date_time
        ]
        return max(ends) if ends else None


def parse_playlist(text: str) -> Playlist:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an HLS playlist")
    playlist = Playlist()
    duration: float | None = None
    pdt: datetime | None = None
    part_pdt: datetime | None = None  # where the next part starts
    part_index = 0
    for line in lines[1:]:
        if line.startswith("#"):
            playlist.tags.append(line)
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            playlist.media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            playlist.target_duration_s = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MAP:"):
            playlist.map_uri = line.split('URI="', 1)[1].split('"', 1)[0]
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00"))
            part_pdt, part_index = pdt, 0
        elif line.startswith("#EXT-X-PART:"):
            attributes = dict(item.split("=", 1) for item in line.split(":", 1)[1].split(",") if "=" in item)
            part_duration = float(attributes.get("DURATION", "0"))
            sequence = playlist.media_sequence + len(playlist.segments)
            uri = attributes.get("URI", "").strip('"')
            playlist.parts.append(Part(sequence, part_index, uri, part_duration, part_pdt))
            part_index += 1
            if part_pdt is not None:
                part_pdt += timedelta(seconds=part_duration)
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line == "#EXT-X-ENDLIST":
            playlist.ended = True
        elif not line.startswith("#"):
            sequence = playlist.media_sequence + len(playlist.segments)
            playlist.segments.append(Segment(sequence, line, duration or 0.0, pdt))
            if pdt is not None:
                part_pdt = pdt + timedelta(seconds=duration or 0.0)
            duration, pdt, part_index = None, None, 0
    return playlist


def fetch(url: str, timeout_s: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


def fetch_playlist(url: str) -> Playlist | None:
    """The playlist, or None while it does not exist yet (404)."""
    try:
        return parse_playlist(fetch(url).decode())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


class PlaylistFollower:
    """Downloads every segment once, as the live playlist grows (a recording)."""

    def __init__(self, playlist_url: str) -> None:
        self.url = playlist_url
        self.init: bytes = b""
        self.segments: dict[int, bytes] = {}
        self.info: dict[int, Segment] = {}
        self.playlist: Playlist | None = None

    def poll(self) -> Playlist | None:
        playlist = fetch_playlist(self.url)
        if playlist is None:
            return None
        self.playlist = playlist
        if not self.init and playlist.map_uri:
            self.init = fetch(urljoin(self.url, playlist.map_uri))
        for segment in playlist.segments:
            if segment.sequence not in self.segments:
                self.segments[segment.sequence] = fetch(urljoin(self.url, segment.uri))
                self.info[segment.sequence] = segment
        return playlist

    def fmp4_bytes(self) -> bytes:
        return self.init + b"".join(self.segments[k] for k in sorted(self.segments))

    def save_mp4(self, path: Path) -> None:
        remux_to_mp4(self.fmp4_bytes(), path)


def remux_to_mp4(fmp4: bytes, path: Path) -> None:
    """Rewrites fragmented MP4 (init + segments) as an ordinary MP4 with its index up front; no re-encoding."""
    with (
        av.open(io.BytesIO(fmp4), format="mp4") as source,
        av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as sink,
    ):
        mapping = {}
        for stream in source.streams:
            if stream.type in ("video", "audio"):
                mapping[stream.index] = sink.add_stream_from_template(stream)
        for packet in source.demux(*[source.streams[i] for i in mapping]):
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            sink.mux(packet)
