"""A session's AAC-LC track that costs nothing while the avatar is silent.

Most of a live session is silence, and silence encodes to the same tiny AAC packet every time. So the track emits
that packet for silent stretches and runs a real encoder only around sound: it starts one on a packet boundary at
least one silent frame before the sound (a fresh encoder's first frame is exact only on silence: it lacks the
overlap its dropped priming packet carried), and drops it once it has encoded `QUIET_PACKETS` packets of pure
silence after the last sound (by then the encoder's overlap state is silent too, so the next silent packet follows
seamlessly). To be able to start that early, silent packets are emitted one frame behind what was committed.

Timestamps: packet k covers samples [1024 k, 1024 (k + 1)) of the session's audio. A fresh encoder's priming packet
(negative pts) is dropped and its input starts on a packet boundary, so every kept packet lands on that grid.
"""

from __future__ import annotations

import fractions
import functools

import av
import numpy as np
from av.codec.context import Flags

AAC_FRAME_SAMPLES = 1024
AAC_SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
QUIET_PACKETS = 3


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
        self._sound_until = 0  # sample time just after the last non-zero sample
        self.encoder_starts = 0

    @property
    def encoding(self) -> bool:
        return self._encoder is not None

    def add(self, pcm_s16le: bytes | None, samples: int) -> list[bytes]:
        """Appends `samples` of audio (`pcm_s16le` holds exactly that many, or is None/empty for silence); returns
        the packets finished by it, in order, starting at sample time `emitted` before the call."""
        sound = None
        if pcm_s16le:
            if len(pcm_s16le) != 2 * samples:
                raise ValueError(f"expected {2 * samples} bytes of PCM, got {len(pcm_s16le)}")
            pcm = np.frombuffer(pcm_s16le, dtype="<i2")
            nonzero = np.flatnonzero(pcm)
            if nonzero.size:
                sound = pcm
                self._sound_until = self.committed + int(nonzero[-1]) + 1
        start = self.committed
        self.committed += samples
        packets: list[bytes] = []
        if self._encoder is None and sound is None:
            self._emit_silence(packets)
            return packets
        if self._encoder is None:
            self._start_encoder(packets)
            # The committed silence between the packet boundary and this audio goes in first.
            self._feed(np.zeros(start - self._fed, np.float32), packets)
        samples_in = sound.astype(np.float32) / 32768.0 if sound is not None else np.zeros(samples, np.float32)
        self._feed(samples_in, packets)
        if self.emitted - self._sound_until >= QUIET_PACKETS * AAC_FRAME_SAMPLES:
            self._stop_encoder()
            self._emit_silence(packets)
        return packets

    def flush(self) -> list[bytes]:
        """At the end: packets for everything committed (the last one padded with silence)."""
        packets: list[bytes] = []
        if self._encoder is not None:
            pad = (-self.committed) % AAC_FRAME_SAMPLES
            self._feed(np.zeros(pad, np.float32), packets)
            self._take(self._encoder.encode(None), packets)
            self._stop_encoder()
        end = -(-self.committed // AAC_FRAME_SAMPLES) * AAC_FRAME_SAMPLES
        while self.emitted < end:
            packets.append(self.silent_packet)
            self.emitted += AAC_FRAME_SAMPLES
        return packets

    # -- internals ------------------------------------------------------------------------------------------------

    def _emit_silence(self, packets: list[bytes]) -> None:
        # One frame is held back: a sound starting in the next frame needs the encoder to start a frame before it
        # (a fresh encoder's first frame lacks the overlap its dropped priming packet carried: harmless on silence).
        while self.emitted + 2 * AAC_FRAME_SAMPLES <= self.committed:
            packets.append(self.silent_packet)
            self.emitted += AAC_FRAME_SAMPLES

    def _start_encoder(self, packets: list[bytes]) -> None:
        self._encoder = _open_encoder(self.sample_rate, self.bit_rate)
        self._fed = self.emitted
        self._buffer = np.zeros(0, np.float32)
        self.encoder_starts += 1

    def _stop_encoder(self) -> None:
        """Drops the encoder; input it held beyond `emitted` is committed silence, emitted as silent packets."""
        self._encoder = None
        self._buffer = np.zeros(0, np.float32)

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

    def _take(self, encoded: list[av.Packet], packets: list[bytes]) -> None:
        for packet in encoded:
            if packet.pts is None or packet.pts < self.emitted:  # the priming packet
                continue
            packets.append(bytes(packet))
            self.emitted += AAC_FRAME_SAMPLES
