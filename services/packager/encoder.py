"""Per-session encoder: raw frames + PCM in, one init segment and one fMP4 media segment per N frames out.

H.264 (libx264 ultrafast/zerolatency, no B-frames, an IDR at every segment start) and mono AAC-LC, both through
PyAV codec contexts; the fragments are written by `fmp4`. Timestamps: video frame n has time n / fps; audio sample k
has time k / sample_rate (the AAC encoder's priming packet is dropped, so the first kept packet starts at sample 0).

A segment is cut as soon as its last video frame is encoded. AAC runs 1024-2048 samples behind its input, so a
segment carries the audio packets finished by then and the next segment carries on from there: audio stays
continuous across segments, each segment's audio ends (and the next one's starts) up to ~85 ms before its video
does. At `finish` the encoders are flushed into the final segment.

Not thread-safe: one thread at a time (the session's worker thread) uses an encoder.
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass, field

import av
import numpy as np
from av.codec.context import Flags
from av.video.frame import PictureType

from services.packager import fmp4

log = logging.getLogger(__name__)

AAC_FRAME_SAMPLES = 1024
AAC_SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
VIDEO_TICKS_PER_FRAME = 1000  # video timescale = fps * 1000: exact for every whole fps


@dataclass(frozen=True)
class EncoderSettings:
    width: int
    height: int
    fps: int
    sample_rate: int
    frames_per_segment: int
    crf: int = 23
    max_kbps: int = 0  # 0: uncapped CRF
    audio_bit_rate: int = 64_000
    threads: int = 1

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def i420_bytes(self) -> int:
        return self.width * self.height * 3 // 2


@dataclass(frozen=True)
class EncodedSegment:
    """One finished media segment. `sequence` counts from 0; times are media time since frame 0."""

    sequence: int
    start_frame_index: int
    frame_count: int
    start_us: int
    duration_us: int
    has_speech: bool
    data: bytes
    audio_start_sample: int
    audio_samples: int


@dataclass
class _PendingVideo:
    frame_index: int
    sample: fmp4.Sample


@dataclass
class _State:
    video: list[_PendingVideo] = field(default_factory=list)
    audio: list[fmp4.Sample] = field(default_factory=list)
    audio_start: int | None = None  # sample time of audio[0]
    next_audio_pts: int = 0  # sample time the next kept AAC packet must have


class SessionEncoder:
    def __init__(self, settings: EncoderSettings) -> None:
        if settings.sample_rate not in AAC_SAMPLE_RATES:
            raise ValueError(f"AAC does not support {settings.sample_rate} Hz")
        self.settings = settings
        self._video = self._open_video(settings)
        self._audio = self._open_audio(settings)
        sample = fmp4.annexb_to_sample(bytes(self._video.extradata or b""))
        if sample.sps is None or sample.pps is None:
            raise RuntimeError("libx264 gave no SPS/PPS in its global header")
        self.codec_string = f"{fmp4.avc_codec_string(sample.sps)},mp4a.40.2"
        self.init_segment = fmp4.init_segment(
            width=settings.width,
            height=settings.height,
            video_timescale=settings.fps * VIDEO_TICKS_PER_FRAME,
            sps=sample.sps,
            pps=sample.pps,
            sample_rate=settings.sample_rate,
            audio_specific_config=bytes(self._audio.extradata or b""),
            audio_bit_rate=settings.audio_bit_rate,
        )
        self._frames_in = 0
        self._speech: dict[int, bool] = {}
        self._audio_buffer = np.zeros(0, dtype=np.float32)
        self._audio_fed = 0  # samples handed to the AAC encoder
        self._state = _State()
        self._sequence = 0
        self._closed = False

    @staticmethod
    def _open_video(settings: EncoderSettings) -> av.VideoCodecContext:
        context = av.CodecContext.create("libx264", "w")
        context.width = settings.width
        context.height = settings.height
        context.pix_fmt = "yuv420p"
        context.time_base = fractions.Fraction(1, settings.fps)
        context.framerate = fractions.Fraction(settings.fps, 1)
        context.gop_size = settings.frames_per_segment
        context.max_b_frames = 0
        context.thread_count = settings.threads
        context.flags |= Flags.global_header
        options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": str(settings.crf),
            "keyint_min": str(settings.frames_per_segment),
            "sc_threshold": "0",
            "forced-idr": "1",
        }
        if settings.max_kbps > 0:
            options["maxrate"] = f"{settings.max_kbps}k"
            options["bufsize"] = f"{settings.max_kbps}k"
        context.options = options
        context.open()
        return context

    @staticmethod
    def _open_audio(settings: EncoderSettings) -> av.AudioCodecContext:
        context = av.CodecContext.create("aac", "w")
        context.sample_rate = settings.sample_rate
        context.layout = "mono"
        context.format = "fltp"
        context.bit_rate = settings.audio_bit_rate
        context.time_base = fractions.Fraction(1, settings.sample_rate)
        context.flags |= Flags.global_header
        context.open()
        return context

    @property
    def frames_in(self) -> int:
        return self._frames_in

    def add_frame(
        self, video: bytes, pcm_s16le: bytes, speech: bool = False, rgb24: bool = False
    ) -> list[EncodedSegment]:
        """Encodes frame number `frames_in` (I420, or packed RGB24) with its PCM; returns the segments it completed."""
        settings = self.settings
        index = self._frames_in
        if rgb24:
            array = np.frombuffer(video, dtype=np.uint8).reshape(settings.height, settings.width, 3)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")
        else:
            array = np.frombuffer(video, dtype=np.uint8).reshape(settings.height * 3 // 2, settings.width)
            frame = av.VideoFrame.from_ndarray(array, format="yuv420p")
        frame.pts = index
        frame.time_base = self._video.time_base
        if index % settings.frames_per_segment == 0:
            frame.pict_type = PictureType.I
        self._speech[index] = speech
        self._frames_in += 1
        self._take_video(self._video.encode(frame))
        self._feed_audio(np.frombuffer(pcm_s16le, dtype="<i2").astype(np.float32) / 32768.0)
        return self._cut(final=False)

    def finish(self) -> list[EncodedSegment]:
        """Flushes both encoders; returns the last segment(s). The encoder is closed afterwards."""
        if self._closed:
            return []
        self._take_video(self._video.encode(None))
        if self._audio_buffer.size:
            self._encode_audio(self._audio_buffer)
            self._audio_buffer = np.zeros(0, dtype=np.float32)
        self._take_audio(self._audio.encode(None))
        segments = self._cut(final=True)
        self.close()
        return segments

    def close(self) -> None:
        """Frees the codec contexts (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._video = None  # type: ignore[assignment]
        self._audio = None  # type: ignore[assignment]

    # -- internals ------------------------------------------------------------------------------------------------

    def _take_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            frame_index = int(packet.pts)
            sample = fmp4.annexb_to_sample(bytes(packet))
            self._state.video.append(
                _PendingVideo(frame_index, fmp4.Sample(sample.data, VIDEO_TICKS_PER_FRAME, packet.is_keyframe))
            )

    def _feed_audio(self, samples: np.ndarray) -> None:
        buffer = np.concatenate((self._audio_buffer, samples)) if self._audio_buffer.size else samples
        whole = buffer.size // AAC_FRAME_SAMPLES * AAC_FRAME_SAMPLES
        for start in range(0, whole, AAC_FRAME_SAMPLES):
            self._encode_audio(buffer[start : start + AAC_FRAME_SAMPLES])
        self._audio_buffer = buffer[whole:].copy()

    def _encode_audio(self, chunk: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = self.settings.sample_rate
        frame.pts = self._audio_fed
        frame.time_base = self._audio.time_base
        self._audio_fed += chunk.size
        self._take_audio(self._audio.encode(frame))

    def _take_audio(self, packets: list[av.Packet]) -> None:
        state = self._state
        for packet in packets:
            pts = int(packet.pts)
            if pts < 0:  # encoder priming: decodes to the delay before sample 0
                continue
            if pts != state.next_audio_pts:
                log.warning("AAC packet out of place", extra={"pts": pts, "expected": state.next_audio_pts})
            duration = int(packet.duration or AAC_FRAME_SAMPLES)
            if state.audio_start is None:
                state.audio_start = pts
            state.audio.append(fmp4.Sample(bytes(packet), duration, True))
            state.next_audio_pts = pts + duration

    def _cut(self, final: bool) -> list[EncodedSegment]:
        per_segment = self.settings.frames_per_segment
        segments: list[EncodedSegment] = []
        while len(self._state.video) >= per_segment or (final and self._state.video):
            segments.append(self._segment(min(per_segment, len(self._state.video))))
        return segments

    def _segment(self, frame_count: int) -> EncodedSegment:
        settings = self.settings
        state = self._state
        video = state.video[:frame_count]
        del state.video[:frame_count]
        first = video[0].frame_index
        if not video[0].sample.sync:
            log.warning("segment does not start with a keyframe", extra={"frame_index": first})
        audio, audio_start = state.audio, state.audio_start
        state.audio, state.audio_start = [], None
        runs = [fmp4.TrackRun(fmp4.VIDEO_TRACK_ID, first * VIDEO_TICKS_PER_FRAME, [item.sample for item in video])]
        if audio and audio_start is not None:
            runs.append(fmp4.TrackRun(fmp4.AUDIO_TRACK_ID, audio_start, audio))
        start_us = first * 1_000_000 // settings.fps
        end_us = (first + frame_count) * 1_000_000 // settings.fps
        has_speech = any([self._speech.pop(item.frame_index, False) for item in video])
        segment = EncodedSegment(
            sequence=self._sequence,
            start_frame_index=first,
            frame_count=frame_count,
            start_us=start_us,
            duration_us=end_us - start_us,
            has_speech=has_speech,
            data=fmp4.media_segment(self._sequence + 1, runs),
            audio_start_sample=audio_start or 0,
            audio_samples=sum(sample.duration for sample in audio),
        )
        self._sequence += 1
        return segment
