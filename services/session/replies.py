"""What a session does with its peers' answers: the llm's clauses go to the tts, the tts's audio and marks onto the
timeline, the video worker's pace and readiness to the clock, the packager's published parts to flow control and the
latency report, its stalls to the watchers.

Output for an utterance that is no longer in progress (cut, failed, or replaced) is dropped: only the utterance the
session is speaking takes clauses and audio. A peer's error for it fails it with the peer's own code and sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from prometheus_client import Counter

from avatar.v1 import llm_pb2, packager_pb2
from infinitetalk_live_client.avatar.v1 import session_pb2, tts_pb2, video_pb2
from services.common.media import SAMPLE_RATE_HZ, frame_start_us
from services.session import latency
from services.session.chunks import ChunkPlan, IdleLoopInfo
from services.session.links import Readiness
from services.session.narration import Narrator
from services.session.playout import Playout
from services.session.speech import Speech
from services.session.timeline import Timeline

log = logging.getLogger(__name__)

STALLED_FRAMES = Counter("session_stalled_frames_total", "Frames whose rendered pictures were late: the loop showed")


def status_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


class Replies:
    def __init__(
        self,
        speech: Speech,
        timeline: Timeline,
        plan: ChunkPlan,
        playout: Playout,
        narrator: Narrator,
        ready: Readiness,
        on_video_back: Callable[[], None],
    ) -> None:
        """`on_video_back()`: a video stream came back up (a new worker knows nothing of the session yet)."""
        self.speech = speech
        self.timeline = timeline
        self.plan = plan
        self.playout = playout
        self.narrator = narrator
        self.ready = ready
        self._on_video_back = on_video_back
        self._handlers = {"llm": self.on_llm, "tts": self.on_tts, "video": self.on_video, "packager": self.on_packager}

    def handle(self, component: str, response) -> None:
        self._handlers[component](response)

    def on_llm(self, response: llm_pb2.GenerateResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "clause":
            utterance = self.speech.accepting(response.clause.utterance_id)
            if utterance is None:
                return
            latency.first_clause(utterance)
            self.speech.send("tts", tts_pb2.SynthesizeRequest(clause=response.clause), utterance)
        elif kind == "done":
            utterance = self.speech.accepting(response.done.utterance_id)
            if utterance is not None:
                utterance.clause_count = response.done.clause_count
                self.speech.complete_if_synthesized(utterance)
        elif kind == "error":
            utterance = self.speech.accepting(response.error.utterance_id)
            if utterance is not None:
                self.speech.fail(utterance, "llm", status_code(response.error.code), response.error.message)

    def on_tts(self, response: tts_pb2.SynthesizeResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "audio":
            utterance = self.speech.accepting(response.audio.utterance_id)
            if utterance is None:
                return
            latency.first_audio(utterance)
            marks = utterance.take_audio(response.audio, SAMPLE_RATE_HZ)
            self.timeline.add_audio(utterance.utterance_id, response.audio.pcm_s16le, marks)
            self.playout.fill()
            self.playout.work.set()
        elif kind == "clause_done":
            utterance = self.speech.accepting(response.clause_done.utterance_id)
            if utterance is not None:
                utterance.clauses_synthesized += 1
                self.speech.complete_if_synthesized(utterance)
        elif kind == "error":
            utterance = self.speech.accepting(response.error.utterance_id)
            if utterance is not None:
                self.speech.fail(utterance, "tts", status_code(response.error.code), response.error.message)
        elif kind == "degraded":
            degraded = response.degraded
            self.narrator.emit(
                voice_degraded=session_pb2.VoiceDegraded(
                    utterance_id=degraded.utterance_id,
                    message=degraded.message,
                    fallback_engine=degraded.fallback_engine,
                )
            )

    def on_video(self, response: video_pb2.RenderResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "status":
            self.playout.pace = response.status
        elif kind == "ready":
            ready = response.ready
            self.plan.loop = IdleLoopInfo(
                ready.idle_loop_id, ready.idle_loop_frames, ready.settle_frames, ready.render_every_chunk
            )
            self.ready.video_connected = True
            if not self.ready.video_ready.done():
                self.ready.video_ready.set_result(None)
                return
            self._on_video_back()

    def on_packager(self, response: packager_pb2.PublishResponse) -> None:
        kind = response.WhichOneof("response")
        if kind in ("part", "segment"):  # a part is on the playlist before its segment: the first counts
            segment = response.part if kind == "part" else response.segment
            end = segment.start_frame_index + segment.frame_count
            self.playout.published_until = max(self.playout.published_until, end)
            self.playout.work.set()
            latency.published(self.speech.recent.values(), segment.start_frame_index, end, self.narrator)
        elif kind == "stall":
            stall = response.stall
            STALLED_FRAMES.inc(stall.frame_count)
            start_us = frame_start_us(stall.start_frame_index, self.timeline.fps)
            end_us = frame_start_us(stall.start_frame_index + stall.frame_count, self.timeline.fps)
            log.warning(
                "stream stalled: the idle loop showed instead of rendered frames",
                extra={"frame_index": stall.start_frame_index, "frames": stall.frame_count, "reason": stall.reason},
            )
            self.narrator.emit(stalled=session_pb2.StreamStalled(start_us=start_us, end_us=end_us, reason=stall.reason))
        elif kind == "ready":
            if not self.ready.packager_accepted.done():
                self.ready.packager_accepted.set_result(None)
        elif kind == "ended":
            self.ready.playlist_ended.set()
