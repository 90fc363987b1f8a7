"""A session's fMP4 HLS media: already-encoded video chunks and the session's audio in, parts and segments out.

The video arrives H.264-encoded, chunk by chunk (each a closed group of pictures starting with an IDR frame): either
a chunk of the avatar's idle loop or one the video worker rendered for speech. So muxing a chunk costs no pixel work:
the samples are re-stamped (video frame n has time n / fps) and framed in a fragment (moof + mdat); the idle loop's
sample bytes are shared, not copied. Each chunk's fragment is a Low-Latency HLS part, available at once; a segment
is `styp` and the fragments of `chunks_per_segment` chunks. Audio is AAC (`AacTrack`: silent stretches cost
nothing); each fragment carries the AAC packets finished by then, so audio stays continuous across fragments. With
the session's lookahead (the final audio after the chunk) every fragment's audio reaches its video's end (ending
less than one packet after it); without, it runs up to ~85 ms behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.packager import fmp4
from services.packager.audio import AAC_FRAME_SAMPLES, AacTrack, ChunkAudio

VIDEO_TICKS_PER_FRAME = 1000  # video timescale = fps * 1000: exact for every whole fps


@dataclass(frozen=True)
class MuxerSettings:
    width: int
    height: int
    fps: int
    sample_rate: int
    chunk_frames: int
    chunks_per_segment: int
    audio_bit_rate: int = 64_000

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def segment_frames(self) -> int:
        return self.chunk_frames * self.chunks_per_segment


@dataclass(frozen=True)
class VideoChunk:
    """One chunk's access units (AVC sample format) and which of them are IDR frames (the first always is)."""

    frames: tuple[bytes, ...]
    sync: tuple[bool, ...]


@dataclass(frozen=True)
class MuxedPart:
    """One chunk's fragment: part `index` of segment `sequence`. `data` joined are the part's bytes."""

    sequence: int
    index: int
    start_frame_index: int
    frame_count: int
    start_us: int
    duration_us: int
    has_speech: bool
    data: tuple[bytes, ...]


@dataclass(frozen=True)
class MuxedSegment:
    """One finished media segment. `sequence` counts from 0; times are media time since frame 0. `parts` joined are
    the segment's bytes (styp and its fragments)."""

    sequence: int
    start_frame_index: int
    frame_count: int
    start_us: int
    duration_us: int
    has_speech: bool
    parts: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)


@dataclass
class _Pending:
    start_frame: int | None = None
    fragments: list[MuxedPart] = field(default_factory=list)
    audio: list[fmp4.Sample] = field(default_factory=list)
    audio_start: int | None = None
    speech: bool = False


class SessionMuxer:
    """Not thread-safe: one caller at a time."""

    def __init__(self, settings: MuxerSettings, sps: bytes, pps: bytes) -> None:
        self.settings = settings
        self.audio = AacTrack(settings.sample_rate, settings.audio_bit_rate)
        self.codec_string = f"{fmp4.avc_codec_string(sps)},mp4a.40.2"
        self.init_segment = fmp4.init_segment(
            width=settings.width,
            height=settings.height,
            video_timescale=settings.fps * VIDEO_TICKS_PER_FRAME,
            sps=sps,
            pps=pps,
            sample_rate=settings.sample_rate,
            audio_specific_config=self.audio.audio_specific_config,
            audio_bit_rate=settings.audio_bit_rate,
        )
        self.next_frame = 0
        self._sequence = 0
        self._fragments = 0
        self._pending = _Pending()

    def add_chunk(
        self, video: VideoChunk, audio: ChunkAudio | None, speech: bool
    ) -> tuple[MuxedPart, MuxedSegment | None]:
        """Appends the next chunk (`chunk_frames` frames and their audio, or None for silence without lookahead);
        returns its part and the segment it completed, if any."""
        settings = self.settings
        if len(video.frames) != settings.chunk_frames or not video.sync[0]:
            raise ValueError(f"a chunk is {settings.chunk_frames} frames starting with an IDR frame")
        pending = self._pending
        if pending.start_frame is None:
            pending.start_frame = self.next_frame
        audio = audio or ChunkAudio()
        audio_samples = settings.chunk_frames * settings.samples_per_frame
        self._add_audio(
            self.audio.add(audio.pcm_s16le, audio_samples, audio.lookahead_pcm_s16le, audio.lookahead_samples)
        )
        first = self.next_frame
        samples = [
            fmp4.Sample(data, VIDEO_TICKS_PER_FRAME, sync) for data, sync in zip(video.frames, video.sync, strict=True)
        ]
        part = self._fragment(first, samples, speech)
        pending.fragments.append(part)
        pending.speech = pending.speech or speech
        self.next_frame += settings.chunk_frames
        if len(pending.fragments) >= settings.chunks_per_segment:
            return part, self._cut()
        return part, None

    def finish(self) -> MuxedSegment | None:
        """The last segment: the chunks since the last cut (the audio still owed has no video left to go with)."""
        self._add_audio(self.audio.flush())
        return self._cut() if self._pending.fragments else None

    def _add_audio(self, packets: Sequence[bytes]) -> None:
        if not packets:
            return
        pending = self._pending
        if pending.audio_start is None:
            pending.audio_start = self.audio.emitted - len(packets) * AAC_FRAME_SAMPLES
        pending.audio.extend(fmp4.Sample(packet, AAC_FRAME_SAMPLES, True) for packet in packets)

    def _fragment(self, first: int, samples: list[fmp4.Sample], speech: bool) -> MuxedPart:
        """The fragment of one chunk, with the audio packets finished so far."""
        settings = self.settings
        pending = self._pending
        runs = [fmp4.TrackRun(fmp4.VIDEO_TRACK_ID, first * VIDEO_TICKS_PER_FRAME, samples)]
        if pending.audio and pending.audio_start is not None:
            runs.append(fmp4.TrackRun(fmp4.AUDIO_TRACK_ID, pending.audio_start, pending.audio))
        pending.audio, pending.audio_start = [], None
        self._fragments += 1
        start_us = first * 1_000_000 // settings.fps
        end_us = (first + len(samples)) * 1_000_000 // settings.fps
        return MuxedPart(
            sequence=self._sequence,
            index=len(pending.fragments),
            start_frame_index=first,
            frame_count=len(samples),
            start_us=start_us,
            duration_us=end_us - start_us,
            has_speech=speech,
            data=fmp4.fragment_parts(self._fragments, runs),
        )

    def _cut(self) -> MuxedSegment:
        settings = self.settings
        pending, self._pending = self._pending, _Pending()
        first = pending.start_frame or 0
        frame_count = sum(part.frame_count for part in pending.fragments)
        start_us = first * 1_000_000 // settings.fps
        end_us = (first + frame_count) * 1_000_000 // settings.fps
        segment = MuxedSegment(
            sequence=self._sequence,
            start_frame_index=first,
            frame_count=frame_count,
            start_us=start_us,
            duration_us=end_us - start_us,
            has_speech=pending.speech,
            parts=(fmp4.STYP, *(data for part in pending.fragments for data in part.data)),
        )
        self._sequence += 1
        return segment
