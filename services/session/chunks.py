"""Which chunks of a session's timeline the video worker renders, and what each chunk's commit says.

Pure bookkeeping, no I/O. The timeline is cut into chunks of `chunk_frames` frames. An idle chunk shows the avatar's
idle loop (phase (frame + phase_offset) mod loop frames), which costs nothing to render or encode. A chunk holding
speech, or any of the `settle_frames` frames after speech (the renderer's way back to the loop's exact pictures),
is rendered: every one of its frames is driven to the video worker, idle ones included, so the worker can encode the
whole chunk from an IDR frame. A cut (interrupt) may leave a chunk with nothing to render any more: it shows the loop
again. Drives are handed out in frame order, each once per worker connection.

A commit also carries the audio of the frames placed after its chunk (up to `AUDIO_LOOKAHEAD_SAMPLES`): the AAC
encoder finishes a packet only with the audio after it, and with this the packager ends each part's audio with its
video. Those frames are final from then on (`final_until`): a cut never reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.session.timeline import FrameSlot

NEVER = -(10**12)
# Audio after a chunk that lets the packager finish every AAC packet reaching the chunk's end: the rest of the last
# 1024-sample packet and the two frames FFmpeg's AAC encoder holds before it emits a packet.
AUDIO_LOOKAHEAD_SAMPLES = 3071


@dataclass(frozen=True)
class IdleLoopInfo:
    """The idle loop the worker put on the packager (RenderReady)."""

    loop_id: str
    frames: int
    settle_frames: int
    render_every_chunk: bool = False


@dataclass(frozen=True)
class CommitPlan:
    """What a chunk's commit says (see PackagerService's ChunkCommit)."""

    start_frame_index: int
    pcm_s16le: bytes
    speech: bool
    idle_loop_id: str
    idle_chunk_index: int
    rendered: bool
    epoch: int
    lookahead_samples: int = 0
    lookahead_pcm_s16le: bytes = b""


class ChunkPlan:
    def __init__(self, chunk_frames: int, phase_offset: int, samples_per_frame: int) -> None:
        self.chunk_frames = chunk_frames
        self.phase_offset = phase_offset
        self.samples_per_frame = samples_per_frame
        self.loop: IdleLoopInfo | None = None
        self.rendered: set[int] = set()  # starts of the uncommitted chunks the worker renders
        self.sent: set[int] = set()  # frames whose drive went to the current worker connection
        self.committed = 0  # the next frame to commit (a chunk start)
        self.final_until = 0  # frames before this are final: committed, or a commit's audio lookahead
        self.lookahead_frames = -(-AUDIO_LOOKAHEAD_SAMPLES // samples_per_frame)
        self._last_speech = NEVER  # the latest frame holding speech
        self._committed_speech = NEVER  # the latest committed frame holding speech

    def chunk_start(self, frame_index: int) -> int:
        return frame_index - frame_index % self.chunk_frames

    def _needs_render(self, slot: FrameSlot) -> bool:
        loop = self.loop
        if loop is None or loop.render_every_chunk:
            return True
        return slot.speech or slot.frame_index <= self._last_speech + loop.settle_frames

    def placed(self, slot: FrameSlot, slots: Mapping[int, FrameSlot]) -> list[FrameSlot]:
        """Records a slot placed on the timeline; returns the slots whose drives must go out now, in order."""
        if slot.speech:
            self._last_speech = max(self._last_speech, slot.frame_index)
        start = self.chunk_start(slot.frame_index)
        if start not in self.rendered:
            if not self._needs_render(slot):
                return []
            self.rendered.add(start)
        return self._unsent(start, slot.frame_index + 1, slots)

    def _unsent(self, start: int, end: int, slots: Mapping[int, FrameSlot]) -> list[FrameSlot]:
        out = []
        for index in range(start, end):
            slot = slots.get(index)
            if slot is not None and index not in self.sent:
                self.sent.add(index)
                out.append(slot)
        return out

    def cut(self, from_frame: int, slots: Mapping[int, FrameSlot]) -> None:
        """The timeline dropped every slot from `from_frame` on (`slots`: what it holds now)."""
        self.sent = {index for index in self.sent if index < from_frame}
        speech = [index for index, slot in slots.items() if index < from_frame and slot.speech]
        self._last_speech = max(speech) if speech else min(self._last_speech, self._committed_speech)
        start = self.chunk_start(from_frame)
        keep_current = from_frame > start and (
            self.loop is None or self.loop.render_every_chunk or self._last_speech + self.loop.settle_frames >= start
        )
        self.rendered = {c for c in self.rendered if c < start or (c == start and keep_current)}

    def reconnected(self, slots: Mapping[int, FrameSlot]) -> list[FrameSlot]:
        """A new worker connection knows nothing: every slot of the rendered chunks, in order."""
        self.sent = set()
        out: list[FrameSlot] = []
        for start in sorted(self.rendered):
            out += self._unsent(start, start + self.chunk_frames, slots)
        return out

    def commit(self, slots: Mapping[int, FrameSlot]) -> CommitPlan:
        """The commit of the next chunk (all its slots must be placed); advances `committed`."""
        loop = self.loop
        assert loop is not None, "no idle loop yet"
        start = self.committed
        chunk = [slots[index] for index in range(start, start + self.chunk_frames)]
        speech = any(slot.speech for slot in chunk)
        if speech:
            self._committed_speech = max(slot.frame_index for slot in chunk if slot.speech)
        end = start + self.chunk_frames
        lookahead: list[FrameSlot] = []
        while len(lookahead) < self.lookahead_frames and (slot := slots.get(end + len(lookahead))) is not None:
            lookahead.append(slot)
        rendered = start in self.rendered
        self.rendered.discard(start)
        self.sent.difference_update(range(start, end))
        self.committed = end
        self.final_until = max(self.final_until, end + len(lookahead))
        phase = (start + self.phase_offset) % loop.frames
        return CommitPlan(
            start_frame_index=start,
            pcm_s16le=self._pcm(chunk),
            speech=speech,
            idle_loop_id=loop.loop_id,
            idle_chunk_index=phase // self.chunk_frames,
            rendered=rendered,
            epoch=max(slot.epoch for slot in chunk),
            lookahead_samples=len(lookahead) * self.samples_per_frame,
            lookahead_pcm_s16le=self._pcm(lookahead),
        )

    def _pcm(self, slots: list[FrameSlot]) -> bytes:
        """The slots' audio, or nothing when all of it is silence."""
        if not any(slot.pcm for slot in slots):
            return b""
        silence = bytes(2 * self.samples_per_frame)
        return b"".join(slot.pcm or silence for slot in slots)
