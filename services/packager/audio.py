"""A session's AAC-LC track that costs nothing while the avatar is silent, and ends each chunk's audio with its video.

Most of a live session is silence, and silence encodes to the same tiny AAC packet every time. So the track emits
that packet for silent stretches and runs a real encoder only around sound: it starts one on a packet boundary at
least one silent frame before the sound (a fresh encoder's first frame is exact only on silence: it lacks the
overlap its dropped priming packet carried), and drops it once it has encoded `QUIET_PACKETS` packets of pure
silence after the last sound (by then the encoder's overlap state is silent too, so the next silent packet follows
seamlessly).

FFmpeg's AAC encoder finishes a packet only once it has the two frames (2,048 samples) after it, so a chunk's own
audio alone ends two to three packets (85-128 ms at 24 kHz) short of the chunk's end, and players stop at the end of
the shorter track (hls.js maps that gap at a finished segment's end into the segment and stops loading). So each
chunk may come with its lookahead: the audio right after it, already final (the session never changes it). The track
treats it as known audio: it feeds it to the encoder (or, in silence, knows the silence goes on) and emits every
packet that reaches the chunk's end; the next chunk's first samples, already fed, are skipped (compared with what
was fed, and counted in `lookahead_mismatches` if they differ). 3,071 samples of lookahead always suffice.

Timestamps: packet k covers samples [1024 k, 1024 (k + 1)) of the session's audio. A fresh encoder's priming packet
(negative pts) is dropped and its input starts on a packet boundary, so every kept packet lands on that grid.
"""

from __future__ import annotations

import fractions
import functools
from dataclasses import dataclass

import av
import numpy as np
from av.codec.context import Flags

AAC_FRAME_SAMPLES = 1024
AAC_SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
QUIET_PACKETS = 3
# The encoder emits packet k once it has frames k + 1 and k + 2.
ENCODER_DELAY_SAMPLES = 2 * AAC_FRAME_SAMPLES
# Lookahead that finishes every packet reaching a chunk's end: the rest of that packet and the encoder's delay (the
# session sends at least this much: tests/test_chunk_plan.py holds its figure to this one).
FULL_LOOKAHEAD_SAMPLES = AAC_FRAME_SAMPLES - 1 + ENCODER_DELAY_SAMPLES


@dataclass(frozen=True)
class ChunkAudio:
    """A chunk's audio (s16le mono, None for silence) and the final audio after it (see ChunkCommit)."""

    pcm_s16le: bytes | None = None
    lookahead_samples: int = 0
    lookahead_pcm_s16le: bytes | None = None


def _open_encoder(sample_rate: int, bit_rate: int) -> av.AudioCodecContext:
    context = av.CodecContext.create("aac", "w")
    context.sample_rate = sample_rate
    context.layout = "mono"
    context.format = "fltp"
    context.bit_rate = bit_rate
    context.time_base = fractions.Fraction(1, sample_rate)
    context.flags |= Flags.global_header
    context.open()
    return context


@functools.lru_cache(maxsize=32)
def silence(sample_rate: int, bit_rate: int) -> tuple[bytes, bytes]:
    """(AudioSpecificConfig, the packet of a silent frame) for these settings."""
    if sample_rate not in AAC_SAMPLE_RATES:
        raise ValueError(f"AAC does not support {sample_rate} Hz")
    encoder = _open_encoder(sample_rate, bit_rate)
    packets: list[bytes] = []
    for index in range(8):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, AAC_FRAME_SAMPLES), np.float32), format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = index * AAC_FRAME_SAMPLES
        packets += [bytes(p) for p in encoder.encode(frame) if p.pts is not None and p.pts >= 0]
    if len(set(packets[-3:])) != 1:
        raise RuntimeError("the AAC encoder does not settle on one packet for silence")
    return bytes(encoder.extradata or b""), packets[-1]


class AacTrack:
    """Committed audio in (PCM, or nothing for silence), finished AAC packets out, each `AAC_FRAME_SAMPLES` long."""

    def __init__(self, sample_rate: int, bit_rate: int) -> None:
        self.sample_rate = sample_rate
        self.bit_rate = bit_rate
        self.audio_specific_config, self.silent_packet = silence(sample_rate, bit_rate)
        self._encoder: av.AudioCodecContext | None = None
        self.committed = 0  # samples of audio received (the track's length)
        self.emitted = 0  # start of the next packet to emit; a multiple of AAC_FRAME_SAMPLES
        self._fed = 0  # samples handed to the running encoder (absolute sample time of its next input)
        self._buffer = np.zeros(0, np.float32)  # input waiting for a whole encoder frame
        self._ahead = np.zeros(0, "<i2")  # the final audio after `committed` (the last chunk's lookahead)
        self._sound_until = 0  # sample time just after the last non-zero sample known
        self.encoder_starts = 0
        self.lookahead_mismatches = 0

    @property
    def encoding(self) -> bool:
        return self._encoder is not None

    @property
    def known(self) -> int:
        """Sample time up to which the audio is known: committed, and the lookahead after it."""
        return self.committed + self._ahead.size

    def add(
        self, pcm_s16le: bytes | None, samples: int, lookahead_pcm: bytes | None = None, lookahead_samples: int = 0
    ) -> list[bytes]:
        """Appends `samples` of audio (`pcm_s16le` holds exactly that many, or is None/empty for silence), and
        the final audio after them (`lookahead_samples`, in `lookahead_pcm` or None for silence); returns the
        packets finished by it, in order, starting at sample time `emitted` before the call."""
        chunk = _pcm(pcm_s16le, samples)
        ahead = _pcm(lookahead_pcm, lookahead_samples)
        start = self.committed
        overlap = min(self._ahead.size, samples)
        if overlap and not np.array_equal(chunk[:overlap], self._ahead[:overlap]):
            self.lookahead_mismatches += 1  # what was fed stands; the rest follows the new audio
        self.committed += samples
        self._ahead = ahead
        audio = np.concatenate((chunk, ahead)) if ahead.size else chunk
        nonzero = np.flatnonzero(audio)
        if nonzero.size:
            self._sound_until = max(self._sound_until, start + int(nonzero[-1]) + 1)
        packets: list[bytes] = []
        if self._encoder is None:
            first_sound = start + int(nonzero[0]) if nonzero.size else None
            self._emit_silence(packets, first_sound)
            if first_sound is None or first_sound >= self._feed_limit:  # no sound yet in what goes in now
                return packets
            self._start_encoder()
            # The known silence between the packet boundary and this audio goes in first.
            self._feed(np.zeros(max(0, start - self._fed), np.float32), packets)
        # Input up to the encoder's delay past the packet that reaches the chunk's end finishes that packet; the rest
        # of the lookahead waits for the next chunk (which starts with it).
        fed = self._fed + self._buffer.size
        self._feed(audio[max(0, fed - start) : self._feed_limit - start].astype(np.float32) / 32768.0, packets)
        if self.emitted - self._sound_until >= QUIET_PACKETS * AAC_FRAME_SAMPLES:
            self._stop_encoder()
            self._emit_silence(packets, None)
        return packets

    def flush(self) -> list[bytes]:
        """At the end: packets for everything committed (the last one padded with silence, or its lookahead)."""
        packets: list[bytes] = []
        end = self._packet_end
        if self._encoder is not None:
            self._feed(np.zeros((-(self._fed + self._buffer.size)) % AAC_FRAME_SAMPLES, np.float32), packets)
            self._take(self._encoder.encode(None), packets, until=end)
            self._stop_encoder()
        while self.emitted < end:
            packets.append(self.silent_packet)
            self.emitted += AAC_FRAME_SAMPLES
        return packets

    @property
    def _packet_end(self) -> int:
        """The end of the packet that holds the last committed sample."""
        return -(-self.committed // AAC_FRAME_SAMPLES) * AAC_FRAME_SAMPLES

    @property
    def _feed_limit(self) -> int:
        return min(self.known, self._packet_end + ENCODER_DELAY_SAMPLES)

    # -- internals ------------------------------------------------------------------------------------------------

    def _emit_silence(self, packets: list[bytes], first_sound: int | None) -> None:
        # A packet is emitted as silence only when the frame after it is known silent too: a sound starting there
        # needs the encoder to start a frame before it (a fresh encoder's first frame lacks the overlap its dropped
        # priming packet carried: harmless on silence).
        until = self.known if first_sound is None else min(self.known, first_sound)
        while self.emitted < self._packet_end and self.emitted + 2 * AAC_FRAME_SAMPLES <= until:
            packets.append(self.silent_packet)
            self.emitted += AAC_FRAME_SAMPLES

    def _start_encoder(self) -> None:
        self._encoder = _open_encoder(self.sample_rate, self.bit_rate)
        self._fed = self.emitted
        self._buffer = np.zeros(0, np.float32)
        self.encoder_starts += 1

    def _stop_encoder(self) -> None:
        """Drops the encoder; input it held beyond `emitted` is known silence, emitted as silent packets."""
        self._encoder = None
        self._buffer = np.zeros(0, np.float32)
        self._fed = self.emitted

    def _feed(self, samples: np.ndarray, packets: list[bytes]) -> None:
        buffer = np.concatenate((self._buffer, samples)) if self._buffer.size else samples
        whole = buffer.size // AAC_FRAME_SAMPLES * AAC_FRAME_SAMPLES
        for offset in range(0, whole, AAC_FRAME_SAMPLES):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(buffer[offset : offset + AAC_FRAME_SAMPLES]).reshape(1, -1),
                format="fltp",
                layout="mono",
            )
            frame.sample_rate = self.sample_rate
            frame.pts = self._fed
            self._fed += AAC_FRAME_SAMPLES
            assert self._encoder is not None
            self._take(self._encoder.encode(frame), packets)
        self._buffer = buffer[whole:].copy()

    def _take(self, encoded: list[av.Packet], packets: list[bytes], until: int | None = None) -> None:
        for packet in encoded:
            if packet.pts is None or packet.pts < self.emitted:  # the priming packet
                continue
            if until is not None and packet.pts >= until:  # lookahead only, at the end
                continue
            packets.append(bytes(packet))
            self.emitted += AAC_FRAME_SAMPLES


def _pcm(pcm_s16le: bytes | None, samples: int) -> np.ndarray:
    """`samples` of s16le audio, or silence when `pcm_s16le` is None/empty."""
    if not pcm_s16le:
        return np.zeros(samples, "<i2")
    if len(pcm_s16le) != 2 * samples:
        raise ValueError(f"expected {2 * samples} bytes of PCM, got {len(pcm_s16le)}")
    return np.frombuffer(pcm_s16le, dtype="<i2")
