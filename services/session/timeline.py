"""The session's playout timeline: which audio and which marks go under each video frame.

Pure bookkeeping, no I/O. Utterance audio arrives in pieces with phoneme and word marks relative to the
utterance's own audio; the timeline cuts it into frame-sized slots placed at the write head of the session clock.
Marks get session-clock times when the audio under them is placed, so a gap (the voice arriving late in a live
session) shifts the words with their sound. A cut removes everything from a frame on, for interrupts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from services.common.media import FPS, SAMPLE_RATE_HZ, SAMPLES_PER_FRAME


@dataclass(frozen=True)
class Mark:
    """A phoneme or word, in samples of its utterance's audio."""

    text: str
    start_sample: int
    end_sample: int
    word_index: int = -1  # -1 for phonemes


@dataclass(frozen=True)
class PlacedMark:
    """A mark in session-clock microseconds."""

    text: str
    start_us: int
    end_us: int
    word_index: int = -1


@dataclass
class FrameSlot:
    frame_index: int
    epoch: int
    utterance_id: str = ""
    pcm: bytes = b""
    phonemes: list[PlacedMark] = field(default_factory=list)
    words: list[PlacedMark] = field(default_factory=list)
    # True for the first frame holding the utterance's audio.
    first_of_utterance: bool = False
    # The utterance whose audio ends with this frame, or ended just before it ("" if none).
    ends_utterance: str = ""

    @property
    def speech(self) -> bool:
        return bool(self.utterance_id)


@dataclass
class UtteranceAudio:
    utterance_id: str
    pending: bytearray = field(default_factory=bytearray)
    received_samples: int = 0
    consumed_samples: int = 0
    marks: deque[Mark] = field(default_factory=deque)
    complete: bool = False
    started: bool = False

    @property
    def pending_samples(self) -> int:
        return len(self.pending) // 2


class Timeline:
    """Frame slots from the write head on; one utterance's audio at a time."""

    def __init__(self, fps: int = FPS, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.fps = fps
        self.sample_rate_hz = sample_rate_hz
        self.samples_per_frame = sample_rate_hz // fps
        if self.samples_per_frame * fps != sample_rate_hz:
            raise ValueError("sample rate must be a whole number of samples per frame")
        self.write_head = 0
        self.epoch = 0
        self.slots: dict[int, FrameSlot] = {}
        self.current: UtteranceAudio | None = None

    # -- input -------------------------------------------------------------------------------------------------
    def begin(self, utterance_id: str) -> None:
        """Makes `utterance_id` the one whose audio is placed next (call `cut` first to drop an earlier one)."""
        self.current = UtteranceAudio(utterance_id)

    def add_audio(self, utterance_id: str, pcm_s16le: bytes, marks: list[Mark]) -> bool:
        """Appends audio (and marks relative to the utterance audio start); False if the utterance is not current."""
        current = self.current
        if current is None or current.utterance_id != utterance_id or current.complete:
            return False
        current.pending += pcm_s16le
        current.received_samples += len(pcm_s16le) // 2
        current.marks.extend(sorted(marks, key=lambda m: m.start_sample))
        return True

    def finish_audio(self, utterance_id: str) -> None:
        """No more audio will come for the utterance."""
        if self.current is not None and self.current.utterance_id == utterance_id:
            self.current.complete = True

    @property
    def waiting_for_audio(self) -> bool:
        """True while an utterance is current and its next frame of audio has not arrived."""
        current = self.current
        return current is not None and not current.complete and current.pending_samples < self.samples_per_frame

    # -- placing -----------------------------------------------------------------------------------------------
    def next_slot(self, force: bool) -> FrameSlot | None:
        """The slot for the write head, or None when it should wait for audio (and `force` is false).

        Forced with too little audio, a speaking utterance gets a short gap of silence; one that has not started
        yet leaves the frame idle.
        """
        index = self.write_head
        slot = FrameSlot(frame_index=index, epoch=self.epoch)
        current = self.current
        if current is not None:
            enough = current.pending_samples >= self.samples_per_frame
            if enough or (current.complete and current.pending_samples > 0):
                self._take_audio(current, slot)
            elif current.complete:
                slot.ends_utterance = current.utterance_id  # its audio ended exactly at a frame boundary, or never came
                self.current = None
            elif not force:
                return None
            elif current.started and current.pending_samples > 0:
                self._take_audio(current, slot)
        self.slots[index] = slot
        self.write_head += 1
        return slot

    def idle_slot(self) -> FrameSlot:
        """An idle slot at the write head, leaving the current utterance's audio for later (a pre-roll)."""
        slot = FrameSlot(frame_index=self.write_head, epoch=self.epoch)
        self.slots[slot.frame_index] = slot
        self.write_head += 1
        return slot

    def _take_audio(self, current: UtteranceAudio, slot: FrameSlot) -> None:
        take = min(current.pending_samples, self.samples_per_frame)
        pcm = bytes(current.pending[: take * 2])
        del current.pending[: take * 2]
        if take < self.samples_per_frame:
            pcm += bytes(2 * (self.samples_per_frame - take))
        first_sample = current.consumed_samples
        current.consumed_samples += take
        frame_start_sample = slot.frame_index * self.samples_per_frame
        while current.marks and current.marks[0].start_sample < current.consumed_samples:
            mark = current.marks.popleft()
            start = frame_start_sample + max(0, mark.start_sample - first_sample)
            placed = PlacedMark(
                mark.text,
                self._us(start),
                self._us(start + max(0, mark.end_sample - mark.start_sample)),
                mark.word_index,
            )
            (slot.words if mark.word_index >= 0 else slot.phonemes).append(placed)
        slot.utterance_id = current.utterance_id
        slot.pcm = pcm
        slot.first_of_utterance = not current.started
        current.started = True
        if current.complete and current.pending_samples == 0:
            slot.ends_utterance = current.utterance_id
            self.current = None

    def _us(self, sample: int) -> int:
        return sample * 1_000_000 // self.sample_rate_hz

    # -- playing and cutting -----------------------------------------------------------------------------------
    def pop(self, frame_index: int) -> FrameSlot | None:
        return self.slots.pop(frame_index, None)

    def cut(self, from_frame: int) -> list[FrameSlot]:
        """Drops the current utterance and every slot at or after `from_frame`; returns the dropped slots."""
        self.current = None
        dropped = [self.slots.pop(i) for i in sorted(i for i in self.slots if i >= from_frame)]
        if from_frame < self.write_head:
            self.write_head = from_frame
            self.epoch += 1
        return dropped


__all__ = ["SAMPLES_PER_FRAME", "FrameSlot", "Mark", "PlacedMark", "Timeline", "UtteranceAudio"]
