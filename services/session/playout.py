"""A session's clock: places the timeline's frames ahead of it, emits each frame's events when its time comes, and
commits each chunk to the packager when its last frame is due.

Live, frame n is due at t0 + n / fps. Idle frames are placed just ahead of the clock (IDLE_LEAD), speech up to the
lookahead, in batches of RENDER_BATCH frames so the worker renders a few back to back (so are the idle frames of
chunks the worker renders); a frame the clock is about to reach (MIN_LEAD) is forced, with a gap of silence if the
voice is late. An idle session wakes only to commit its chunks (twice a second): its pictures are the idle loop, so
nothing is sent to the video worker. Offline (rendering to a file) there is no clock: chunks are committed as soon
as they are complete, a few ahead of what the packager has published.

A slow renderer (slower than real time, or one that holds a whole chunk of drives) gets the whole utterance at once
and the speech starts only when it can play through (services.session.preroll); meanwhile the state is RENDERING.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from prometheus_client import Histogram

from infinitetalk_live_client.avatar.v1 import video_pb2
from services.common.media import frame_start_us
from services.session.chunks import ChunkPlan, CommitPlan
from services.session.preroll import needs_preroll, preroll_frames
from services.session.timeline import FrameSlot, Timeline

# In frames: idle frames are placed IDLE_LEAD ahead of the clock, speech up to the lookahead; a frame is forced out
# (with a gap if the voice is late) MIN_LEAD ahead; a cut takes effect CUT_MARGIN frames after the clock.
IDLE_LEAD = 3
MIN_LEAD = 2
CUT_MARGIN = 2
RENDER_BATCH = 4  # frames driven to the video worker at a time (speech, and idle frames of rendered chunks)
# With a slow renderer, the whole utterance's drives go out at once (bounded: 10 minutes of frames).
SLOW_LEAD_FRAMES = 25 * 600
OFFLINE_LEAD_IN_FRAMES = 5
OFFLINE_TAIL_FRAMES = 10
OFFLINE_CHUNKS_AHEAD = 3

PREROLL_FRAMES = Histogram(
    "session_preroll_frames",
    "Idle frames played before an utterance so a slow renderer plays it through",
    buckets=(0, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)


class Playout:
    def __init__(
        self,
        timeline: Timeline,
        plan: ChunkPlan,
        realtime: bool,
        lookahead_frames: int,
        *,
        on_drive: Callable[[FrameSlot], None],
        on_commit: Callable[[CommitPlan], None],
        on_frame: Callable[[FrameSlot], None],
        on_preroll: Callable[[str, int], None],
    ) -> None:
        """`on_drive(slot)`: drive the video worker with a slot of a rendered chunk. `on_commit(plan)`: commit a
        chunk to the packager. `on_frame(slot)`: the slot's time came (emit its events). `on_preroll(utterance_id,
        start_frame)`: a slow renderer's utterance will start at that frame."""
        self.timeline = timeline
        self.plan = plan
        self.realtime = realtime
        self.lookahead = lookahead_frames
        self.fps = timeline.fps
        self._on_drive = on_drive
        self._on_commit = on_commit
        self._on_frame = on_frame
        self._on_preroll = on_preroll
        self.t0 = time.monotonic()
        self.next_play = 0  # the next frame whose time has not come (whose events are not out)
        self.pace: video_pb2.RenderStatus | None = None
        self.speech_from: int | None = None
        self._flush_until = 0
        self.idle_frames_wanted = 0 if realtime else OFFLINE_LEAD_IN_FRAMES
        self.published_until = 0  # offline flow control: frames the packager has put on the playlist
        self.ending = False
        self.work = asyncio.Event()

    # -- the clock ------------------------------------------------------------------------------------------------

    def next_due(self) -> int:
        """The next frame to become due (live: the first whose start time has not come), or the first uncommitted
        frame (offline)."""
        if not self.realtime:
            return self.plan.committed
        return max(0, int((time.monotonic() - self.t0) * self.fps)) + 1

    def cut_frame(self) -> int:
        """Where an interrupt takes effect: CUT_MARGIN frames after the clock, never in a committed chunk or in the
        audio a commit sent ahead of it."""
        return max(min(self.next_due() + CUT_MARGIN, self.timeline.write_head), self.plan.final_until)

    # -- placing frames -------------------------------------------------------------------------------------------

    def _place(self, slot: FrameSlot) -> None:
        if slot.ends_utterance:
            self._flush_until = slot.frame_index + 2
        for driven in self.plan.placed(slot, self.timeline.slots):
            self._on_drive(driven)

    def slow_video(self) -> bool:
        pace = self.pace
        return pace is not None and needs_preroll(
            pace.frames_per_second, pace.lookahead_frames, self.fps, self.lookahead
        )

    def fill(self) -> None:
        """Places frames at the write head: idle ones just ahead of the clock, speech up to the lookahead."""
        timeline = self.timeline
        now = self.next_due()
        batch_from: int | None = None
        while True:
            index = timeline.write_head
            current = timeline.current
            if self.realtime:
                slow = self.slow_video()
                if current is not None and not current.started and not self.ending:
                    if slow and (not current.complete or (self.speech_from is None and not self._plan_preroll(index))):
                        # Wait for all of the utterance's audio (the voice is far faster than real time): idle.
                        if index >= now + IDLE_LEAD:
                            return
                        self._place(timeline.idle_slot())
                        continue
                    waiting = slow and self.speech_from is not None and index < self.speech_from
                    if waiting or (current.pending_samples > 0 and index <= now + MIN_LEAD):
                        # Idle until the pre-roll ends (the renderer works ahead), or up to the clock: speech never
                        # starts in a frame the clock is about to reach.
                        self._place(timeline.idle_slot())
                        continue
                has_speech = current is not None and (current.started or current.pending_samples > 0)
                ahead = has_speech or self.plan.chunk_start(index) in self.plan.rendered
                lead = self.lookahead if ahead else IDLE_LEAD
                if ahead and not slow and batch_from is None:
                    # Frames the worker renders go out in batches (its caches stay warm through a batch): top up
                    # only once there is room for RENDER_BATCH frames, then up to the lookahead.
                    batch_from = now + lead - RENDER_BATCH
                    if index > batch_from and index > now + MIN_LEAD:
                        return
                if slow and (has_speech or index < self._flush_until):
                    # The whole utterance goes to the renderer at once, and the idle frame after it too, so the
                    # renderer knows where it ends and can render its last chunk ahead as well.
                    lead = SLOW_LEAD_FRAMES
                if self.ending or index >= now + lead:
                    return
                force = index <= now + MIN_LEAD
            else:
                if index >= self.plan.committed + self.plan.chunk_frames + self.lookahead:
                    return
                if current is None:
                    if self.idle_frames_wanted <= 0:
                        return
                    self.idle_frames_wanted -= 1
                force = False
            slot = timeline.next_slot(force)
            if slot is None:
                return
            self._place(slot)

    def _plan_preroll(self, index: int) -> bool:
        """Decides where the current (complete) utterance's speech starts."""
        current = self.timeline.current
        pace = self.pace
        if current is None or pace is None:
            return False
        frames = -(-current.pending_samples // self.timeline.samples_per_frame)
        wait = preroll_frames(frames, pace.frames_per_second, pace.lookahead_frames, self.fps)
        self.speech_from = max(index, self.next_due() + IDLE_LEAD) + wait
        PREROLL_FRAMES.observe(wait)
        self._on_preroll(current.utterance_id, self.speech_from)
        return True

    def _force_slot(self) -> None:
        """Places the write head's frame now: speech in progress goes on (with a gap if its audio is late);
        otherwise it is idle (speech that has not started never starts in a frame that is already due)."""
        current = self.timeline.current
        self._place(
            self.timeline.next_slot(True) if current is not None and current.started else self.timeline.idle_slot()
        )

    def pad_to_chunk(self) -> None:
        """Frames up to the end of the chunk at the write head (when the stream ends)."""
        while self.timeline.write_head % self.plan.chunk_frames:
            self._force_slot()

    # -- time passing ---------------------------------------------------------------------------------------------

    def _play_until(self, frame: int) -> None:
        """Emits the events of every frame up to `frame` (their time has come)."""
        slots = self.timeline.slots
        while self.next_play <= frame:
            slot = slots.get(self.next_play)
            if slot is not None:
                self._on_frame(slot)
            self.next_play += 1

    def commit_next(self) -> None:
        """Commits the chunk after the last committed one (its frames are placed first if needed)."""
        plan, timeline = self.plan, self.timeline
        end = plan.committed + plan.chunk_frames
        while timeline.write_head < end:
            self._force_slot()
        self._play_until(end - 1)
        commit = plan.commit(timeline.slots)
        for index in range(commit.start_frame_index, end):
            timeline.pop(index)
        self._on_commit(commit)

    def _next_event_frame(self) -> int | None:
        slots = self.timeline.slots
        for index in range(self.next_play, self.timeline.write_head):
            slot = slots.get(index)
            if slot is not None and (slot.first_of_utterance or slot.words or slot.ends_utterance):
                return index
        return None

    async def run_realtime(self) -> None:
        frame_s = 1.0 / self.fps
        n = self.plan.chunk_frames
        while not self.ending:
            now = self.next_due() - 1  # the frame whose time it is
            self.fill()
            self._play_until(now)
            while self.plan.committed + n - 1 <= now:
                self.commit_next()
            wake = self.plan.committed + n - 1
            head = self.timeline.write_head
            current = self.timeline.current
            if self.plan.chunk_start(head) in self.plan.rendered or (current is not None and current.started):
                # Keep the worker's frames coming: wake when there is room for the next batch.
                wake = min(wake, head - self.lookahead + RENDER_BATCH - 1)
            event = self._next_event_frame()
            if event is not None:
                wake = min(wake, event)
            delay = self.t0 + max(wake, now + 1) * frame_s - time.monotonic()
            if delay > 0:
                self.work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.work.wait(), delay)

    async def run_offline(self) -> None:
        n = self.plan.chunk_frames
        while True:
            self.fill()
            settled = self.idle_frames_wanted <= 0 and self.timeline.current is None
            done = self.ending and settled
            if done or (settled and self._speech_uncommitted()):
                self.pad_to_chunk()  # so that the utterance's last chunk can go out (and its end be reported)
            while (
                self.timeline.write_head >= self.plan.committed + n
                and self.plan.committed < self.published_until + OFFLINE_CHUNKS_AHEAD * n
            ):
                self.commit_next()
            if done and self.timeline.write_head == self.plan.committed:
                return
            self.work.clear()
            await self.work.wait()

    def _speech_uncommitted(self) -> bool:
        slots = self.timeline.slots
        return any(
            (slot := slots.get(index)) is not None and (slot.speech or bool(slot.ends_utterance))
            for index in range(self.plan.committed, self.timeline.write_head)
        )

    def finish_live(self) -> None:
        """At the end of a live stream: the chunk in progress is completed and committed."""
        self.pad_to_chunk()
        while self.timeline.write_head > self.plan.committed:
            self.commit_next()

    def expected_start_us(self) -> int:
        return frame_start_us(self.speech_from or 0, self.fps)
