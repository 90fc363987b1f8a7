"""A session's utterances from request to finish: the one in progress, the recent ones whose frames may still play,
and every change of their state with the event it tells the watchers.

One utterance speaks at a time: a new one (Say, Chat) cuts the one in progress. A cut (interrupt, end) takes effect
a couple of frames after the clock: the timeline and the chunk plan drop what follows, the video worker is told to
reset, the llm and tts cancel, and the utterance finishes with its last queued frame (or at once if none is left).
A failure cancels the rest but lets what was already synthesised play. As frames' times come, the utterance starts,
its words are spoken and it finishes (SpeechStarted, WordSpoken, SpeechFinished, and the session's state).
"""

from __future__ import annotations

import secrets
import time

import grpc
from google.protobuf.message import Message
from prometheus_client import Counter

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.lru import Lru
from services.common.media import frame_start_us
from services.session import latency, messages
from services.session.chunks import ChunkPlan
from services.session.links import SessionLinks
from services.session.narration import Narrator
from services.session.playout import Playout
from services.session.timeline import FrameSlot, Timeline
from services.session.utterances import Utterance

RECENT_UTTERANCES = 16

UTTERANCES = Counter("session_utterances_total", "Utterances by source and finish reason", ["source", "reason"])
SOURCE_NAMES = {session_pb2.UTTERANCE_SOURCE_SAY: "say", session_pb2.UTTERANCE_SOURCE_CHAT: "chat"}
REASON_NAMES = {
    session_pb2.FINISH_REASON_COMPLETED: "completed",
    session_pb2.FINISH_REASON_INTERRUPTED: "interrupted",
    session_pb2.FINISH_REASON_FAILED: "failed",
}


def new_id() -> str:
    """128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


class Speech:
    def __init__(
        self, links: SessionLinks, timeline: Timeline, plan: ChunkPlan, playout: Playout, narrator: Narrator
    ) -> None:
        self.links = links
        self.timeline = timeline
        self.plan = plan
        self.playout = playout
        self.narrator = narrator
        self.fps = timeline.fps
        self.utterance: Utterance | None = None
        self.recent: Lru[str, Utterance] = Lru(RECENT_UTTERANCES)  # the newest, by when they began

    @property
    def speaking(self) -> bool:
        """An utterance is in progress (it holds one of its worker's speaking places)."""
        return self.utterance is not None and not self.utterance.finished

    def send(self, component: str, message: Message, utterance: Utterance | None = None) -> None:
        """Sends on a peer stream; `utterance` fails if it does not go out."""
        unsent = self.links.send(component, message)
        if unsent is not None and utterance is not None:
            self.fail(utterance, component, *unsent)

    # -- requests ----------------------------------------------------------------------------------------------
    def say(self, text: str) -> str:
        utterance = self._begin(session_pb2.UTTERANCE_SOURCE_SAY)
        clauses = messages.said_clauses(utterance.utterance_id, text)
        utterance.clause_count = len(clauses)
        for clause in clauses:
            self.send("tts", clause, utterance)
        return utterance.utterance_id

    def chat(self, text: str) -> str:
        utterance = self._begin(session_pb2.UTTERANCE_SOURCE_CHAT)
        self.send("llm", messages.user_turn(utterance.utterance_id, text), utterance)
        return utterance.utterance_id

    def _begin(self, source: int) -> Utterance:
        self.cut(session_pb2.FINISH_REASON_INTERRUPTED)
        utterance = Utterance(new_id(), source, time.monotonic())
        self.utterance = utterance
        self.recent.put(utterance.utterance_id, utterance)
        self.timeline.begin(utterance.utterance_id)
        self.playout.speech_from = None
        self.narrator.set_state(session_pb2.SESSION_STATE_THINKING, utterance.utterance_id)
        self.playout.work.set()
        return utterance

    def accepting(self, utterance_id: str) -> Utterance | None:
        """The utterance in progress if it is `utterance_id` and still takes the peers' output."""
        utterance = self.utterance
        if utterance is None or utterance.utterance_id != utterance_id or utterance.finish_reason:
            return None
        return utterance

    # -- changes of state --------------------------------------------------------------------------------------
    def cut(self, reason: int) -> tuple[str, int]:
        """Stops the utterance in progress CUT_MARGIN frames after the clock."""
        utterance = self.utterance
        if utterance is None or utterance.finished:
            return "", 0
        cut_frame = self.playout.cut_frame()
        self.playout.speech_from = None
        epoch_before = self.timeline.epoch
        self.timeline.cut(cut_frame)
        self.plan.cut(cut_frame, self.timeline.slots)
        if self.timeline.epoch != epoch_before and self.links.ready.video_connected:
            self.send("video", messages.reset(cut_frame, self.timeline.epoch))
        self.send("llm", messages.cancel_generate(utterance.utterance_id))
        self.send("tts", messages.cancel_synthesize(utterance.utterance_id))
        utterance.finish_reason = reason
        still_queued = [s for s in self.timeline.slots.values() if s.utterance_id == utterance.utterance_id]
        if still_queued and max(s.frame_index for s in still_queued) >= self.playout.next_play:
            max(still_queued, key=lambda s: s.frame_index).ends_utterance = utterance.utterance_id
        else:
            self._finish(utterance, frame_start_us(cut_frame, self.fps))
        self.playout.work.set()
        return utterance.utterance_id, frame_start_us(cut_frame, self.fps)

    def fail(self, utterance: Utterance, component: str, code: grpc.StatusCode, message: str) -> None:
        self.narrator.emit(
            error=session_pb2.SessionError(
                utterance_id=utterance.utterance_id, code=code.value[0], message=message, component=component
            )
        )
        if utterance.finished or utterance.failed:
            return
        utterance.failed = True
        utterance.finish_reason = session_pb2.FINISH_REASON_FAILED
        self.send("llm", messages.cancel_generate(utterance.utterance_id))
        self.send("tts", messages.cancel_synthesize(utterance.utterance_id))
        self.timeline.finish_audio(utterance.utterance_id)  # what was already synthesised still plays
        self.playout.work.set()

    def complete_if_synthesized(self, utterance: Utterance) -> None:
        if utterance.synthesized:
            self.timeline.finish_audio(utterance.utterance_id)
            self.playout.work.set()

    def _finish(self, utterance: Utterance, end_us: int) -> None:
        if utterance.finished:
            return
        utterance.finished = True
        reason = utterance.finish_reason or session_pb2.FINISH_REASON_COMPLETED
        UTTERANCES.labels(SOURCE_NAMES.get(utterance.source, "?"), REASON_NAMES.get(reason, "?")).inc()
        self.narrator.emit(
            speech_finished=session_pb2.SpeechFinished(
                utterance_id=utterance.utterance_id,
                reason=reason,
                end_us=end_us,
                spoken_text=" ".join(utterance.spoken_words),
            )
        )
        if self.utterance is utterance:
            self.utterance = None
            if self.narrator.state != session_pb2.SESSION_STATE_ENDED:
                self.narrator.set_state(session_pb2.SESSION_STATE_IDLE, "")

    # -- the clock ---------------------------------------------------------------------------------------------
    def play(self, slot: FrameSlot) -> None:
        """A frame's time came: its utterance starts, its words are spoken, or its utterance ends."""
        utterance = self.recent.peek(slot.utterance_id or slot.ends_utterance)
        if utterance is None:
            return
        index = slot.frame_index
        if slot.first_of_utterance and not utterance.started:
            utterance.started = True
            latency.first_frame(utterance, index)
            self.narrator.emit(
                speech_started=session_pb2.SpeechStarted(
                    utterance_id=utterance.utterance_id,
                    source=utterance.source,
                    start_us=frame_start_us(index, self.fps),
                )
            )
            if self.utterance is utterance:
                self.narrator.set_state(session_pb2.SESSION_STATE_SPEAKING, utterance.utterance_id)
        for word in slot.words:
            utterance.spoken_words.append(word.text)
            self.narrator.emit(
                word_spoken=session_pb2.WordSpoken(
                    utterance_id=utterance.utterance_id,
                    word=word.text,
                    start_us=word.start_us,
                    end_us=word.end_us,
                    word_index=word.word_index,
                )
            )
        if slot.ends_utterance:
            end_frame = index + 1 if slot.speech else index
            self._finish(utterance, frame_start_us(end_frame, self.fps))
