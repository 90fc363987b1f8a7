"""One live session: its four peer streams, its timeline and its playout clock.

The playout loop is the session clock. In real time it hands the packager one frame (video + the audio under it)
every 1/fps seconds, idle or speaking, so the playlist never stalls; audio and mouth are paired per frame by
construction. Speech is placed on the timeline a few frames ahead of playout (the lookahead), which bounds both
the time to first speech and how late an interrupt can take effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge, Histogram

from avatar.v1 import (
    llm_pb2,
    llm_pb2_grpc,
    media_pb2,
    packager_pb2,
    session_pb2,
    tts_pb2,
    tts_pb2_grpc,
    video_pb2,
)
from services.common.clauses import split_clauses
from services.common.logs import session_id_var
from services.common.media import FPS, SAMPLE_RATE_HZ, frame_start_us
from services.session.config import SessionConfig
from services.session.events import EventBus
from services.session.peers import REFUSALS, OutboxFull, PeerLink, PeerRefused
from services.session.placement import Packager, Packagers, VideoWorker, VideoWorkers
from services.session.preroll import needs_preroll, preroll_frames
from services.session.timeline import FrameSlot, Mark, Timeline

log = logging.getLogger(__name__)

# Playout tuning, in frames: idle frames are scheduled IDLE_LEAD ahead of playout, speech up to the configured
# lookahead; a frame is forced out (with a gap if the voice is late) MIN_LEAD ahead; a cut takes effect CUT_MARGIN
# frames after the frame being played.
IDLE_LEAD = 3
# With a slow renderer, the whole utterance's drives go out at once (bounded: 10 minutes of frames).
SLOW_LEAD_FRAMES = 25 * 600
MIN_LEAD = 2
CUT_MARGIN = 2
RENDER_GRACE_S = 0.03
OFFLINE_LEAD_IN_FRAMES = 5
OFFLINE_TAIL_FRAMES = 10
RECENT_UTTERANCES = 16

UTTERANCES = Counter("session_utterances_total", "Utterances by source and finish reason", ["source", "reason"])
PREROLL_FRAMES = Histogram(
    "session_preroll_frames",
    "Idle frames played before an utterance so a slow renderer plays it through",
    buckets=(0, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
STALLED_FRAMES = Counter("session_stalled_frames_total", "Frames whose render was late; the last frame was repeated")
LIVE_SESSIONS = Gauge("session_live_sessions", "Sessions open")
LATENCY = Histogram(
    "session_first_speech_seconds",
    "From request to the utterance's first speech, by stage",
    ["stage"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
)

SOURCE_NAMES = {session_pb2.UTTERANCE_SOURCE_SAY: "say", session_pb2.UTTERANCE_SOURCE_CHAT: "chat"}
REASON_NAMES = {
    session_pb2.FINISH_REASON_COMPLETED: "completed",
    session_pb2.FINISH_REASON_INTERRUPTED: "interrupted",
    session_pb2.FINISH_REASON_FAILED: "failed",
}


class SessionStartError(Exception):
    """The session's streams could not be brought up."""


def new_id() -> str:
    """128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


@dataclass
class PeerStubs:
    """The peer services: stubs on shared channels to llm and tts; the video workers and packagers sessions are
    placed on."""

    llm: llm_pb2_grpc.LlmServiceStub
    tts: tts_pb2_grpc.TtsServiceStub
    video: VideoWorkers
    packagers: Packagers


@dataclass
class Utterance:
    utterance_id: str
    source: int
    requested_at: float
    clause_count: int | None = None
    clauses_synthesized: int = 0
    next_word_index: int = 0
    clause_word_base: dict[int, int] = field(default_factory=dict)
    clause_sample_base: dict[int, int] = field(default_factory=dict)
    received_samples: int = 0
    spoken_words: list[str] = field(default_factory=list)
    first_clause_at: float | None = None
    first_audio_at: float | None = None
    first_frame_at: float | None = None
    first_frame_index: int | None = None
    started: bool = False
    failed: bool = False
    finish_reason: int = session_pb2.FINISH_REASON_UNSPECIFIED
    finished: bool = False
    latency_reported: bool = False


class LiveSession:
    def __init__(
        self,
        session_id: str,
        avatar: str,
        voice: str,
        options: session_pb2.SessionOptions,
        stubs: PeerStubs,
        config: SessionConfig,
        on_ended: Callable[[LiveSession], None],
        *,
        video_worker: VideoWorker,
        packager: Packager,
        portrait: bytes = b"",
    ) -> None:
        """`video_worker` and `packager`: where the session was placed (it releases them when it ends); the video
        stream moves to another worker if its worker's stream breaks. `portrait`: uploaded image bytes to animate
        (then `avatar` is its prepared name). They live in the video link's config, which is sent first on every
        (re)connection so any video worker can serve the stream, and are dropped with the session."""
        self.session_id = session_id
        self.stubs = stubs
        self.video_worker = video_worker
        self.packager = packager
        self._placement_released = False
        self.avatar = avatar
        self.voice = voice
        self.realtime = options.pacing != session_pb2.PACING_OFFLINE
        self.persona = options.persona
        self.config = config
        self._on_ended = on_ended
        self.fps = FPS
        self.sample_rate_hz = SAMPLE_RATE_HZ
        self.width, self.height = config.video_width, config.video_height
        self.timeline = Timeline(self.fps, self.sample_rate_hz)
        self.bus = EventBus(config.max_watchers_per_session)
        self.state = session_pb2.SESSION_STATE_IDLE
        self.state_utterance = ""
        self.state_expected_start_us = 0
        # The video renderer's pace (RenderStatus); when it cannot keep up in real time, an utterance starts at
        # `_speech_from` (decided once its audio is complete) and the stream idles until then.
        self._video_pace: video_pb2.RenderStatus | None = None
        self._speech_from: int | None = None
        self._flush_until = 0
        self.utterance: Utterance | None = None
        self._recent: OrderedDict[str, Utterance] = OrderedDict()
        self._rendered: dict[int, media_pb2.VideoFrame] = {}
        self._frame_arrived = asyncio.Event()
        self._work = asyncio.Event()
        self._last_frame: media_pb2.VideoFrame | None = None
        self.next_play = 0
        self._idle_frames_wanted = 0 if self.realtime else OFFLINE_LEAD_IN_FRAMES
        self._ending = False
        self.ended = asyncio.Event()
        self._playlist_ended = asyncio.Event()
        self.last_activity = time.monotonic()
        self.media_epoch = time.time()
        self._t0 = time.monotonic()
        self._playout_task: asyncio.Task[None] | None = None
        self._fatal: asyncio.Task[None] | None = None
        self._packager_accepted: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._links = {
            "llm": PeerLink(
                "llm",
                stubs.llm.Generate,
                llm_pb2.GenerateRequest(
                    config=llm_pb2.GenerateConfig(
                        session_id=session_id,
                        persona=self.persona,
                        provider=options.llm_provider,
                        model=options.llm_model,
                    )
                ),
                session_id,
                self._on_llm,
                self._down_handler("llm"),
            ),
            "tts": PeerLink(
                "tts",
                stubs.tts.Synthesize,
                tts_pb2.SynthesizeRequest(
                    config=tts_pb2.SynthesizeConfig(
                        session_id=session_id, voice=voice, sample_rate_hz=self.sample_rate_hz
                    )
                ),
                session_id,
                self._on_tts,
                self._down_handler("tts"),
            ),
            "video": PeerLink(
                "video",
                lambda **kwargs: self.video_worker.stub.Render(**kwargs),
                video_pb2.RenderRequest(
                    config=video_pb2.RenderConfig(
                        session_id=session_id,
                        avatar="" if portrait else avatar,
                        portrait=portrait,
                        width=self.width,
                        height=self.height,
                        fps=self.fps,
                        sample_rate_hz=self.sample_rate_hz,
                        pixel_format=media_pb2.PIXEL_FORMAT_I420,
                    )
                ),
                session_id,
                self._on_video,
                self._down_handler("video"),
                self._on_video_up,
                before_reconnect=self._place_video_again,
            ),
            "packager": PeerLink(
                "packager",
                packager.stub.Publish,
                packager_pb2.PublishRequest(config=self._publish_config()),
                session_id,
                self._on_packager,
                self._on_packager_down,
                reconnect=False,  # a playlist cannot be resumed mid-stream: losing it ends the session
            ),
        }

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def playlist_path(self) -> str:
        return self.stubs.packagers.playlist_path(self.packager, self.session_id)

    async def _place_video_again(self) -> None:
        """The video stream broke (its worker died, restarted or refused): reserve room on the best worker now
        (NoCapacity: the link waits and asks again; the stream idles on its last frame meanwhile)."""
        lost = self.video_worker
        if not self._placement_released:
            self.stubs.video.release(lost)
        self.video_worker = await self.stubs.video.place(avoid=lost.addr)
        if self._placement_released:  # the session ended while waiting
            self.stubs.video.release(self.video_worker)
        elif self.video_worker.addr != lost.addr:
            log.info("video stream placed on another worker", extra={"from": lost.addr, "to": self.video_worker.addr})

    def _release_placement(self) -> None:
        if not self._placement_released:
            self._placement_released = True
            self.stubs.video.release(self.video_worker)
            self.stubs.packagers.release(self.packager)

    def media_epoch_timestamp(self) -> Timestamp:
        epoch = Timestamp()
        epoch.FromNanoseconds(int(self.media_epoch * 1e9))
        return epoch

    def _publish_config(self) -> packager_pb2.PublishConfig:
        return packager_pb2.PublishConfig(
            session_id=self.session_id,
            width=self.width,
            height=self.height,
            fps=self.fps,
            sample_rate_hz=self.sample_rate_hz,
            segment_duration_ms=self.config.segment_duration_ms,
            media_epoch=self.media_epoch_timestamp(),
        )

    async def start(self, first_frame_timeout_s: float = 10.0) -> None:
        """Opens the peer streams and starts the clock once the first frame is rendered, so the stream's first
        frame is the avatar (not a placeholder) and media time 0 is when it plays."""
        LIVE_SESSIONS.inc()
        for name in ("llm", "tts", "video"):
            self._links[name].start()
        self._fill()
        try:
            async with asyncio.timeout(first_frame_timeout_s):
                while 0 not in self._rendered:
                    self._frame_arrived.clear()
                    await self._frame_arrived.wait()
        except TimeoutError:
            await self._close_links()
            LIVE_SESSIONS.dec()
            raise SessionStartError(
                f"the video service rendered no frame within {first_frame_timeout_s:g} s; try again later"
            ) from None
        self._t0 = time.monotonic()
        self.media_epoch = time.time()
        packager = self._links["packager"]
        packager.config = packager_pb2.PublishRequest(config=self._publish_config())
        self._packager_accepted = asyncio.get_running_loop().create_future()
        packager.start()
        try:
            refusal = await asyncio.wait_for(self._packager_accepted, first_frame_timeout_s)
        except TimeoutError:
            refusal = f"no answer within {first_frame_timeout_s:g} s"
        if refusal is not None:
            await self._close_links()
            LIVE_SESSIONS.dec()
            raise SessionStartError(f"the packager did not open the stream's playlist: {refusal}")
        self._playout_task = asyncio.create_task(self._playout(), name=f"playout-{self.session_id[:6]}")

    async def end(self) -> None:
        """Ends the session: cuts speech (live) or plays a short idle tail (offline), closes the playlist."""
        if self._ending:
            await self.ended.wait()
            return
        self._ending = True
        try:
            if self.realtime:
                self._cut(session_pb2.FINISH_REASON_INTERRUPTED)
            else:
                self._idle_frames_wanted = OFFLINE_TAIL_FRAMES
            self._work.set()
            if self._playout_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._playout_task, 10.0)
            self._send("packager", packager_pb2.PublishRequest(end=packager_pb2.EndOfStream()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._playlist_ended.wait(), 5.0)
        finally:
            await self._close_links()
            self._set_state(session_pb2.SESSION_STATE_ENDED, "")
            self.bus.close()
            LIVE_SESSIONS.dec()
            self.ended.set()
            self._on_ended(self)

    async def _close_links(self) -> None:
        await asyncio.gather(*(link.close() for link in self._links.values()), return_exceptions=True)
        self._release_placement()
        if self._playout_task is not None and not self._playout_task.done():
            self._playout_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._playout_task

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    # -- requests ----------------------------------------------------------------------------------------------
    def say(self, text: str) -> str:
        utterance = self._begin(session_pb2.UTTERANCE_SOURCE_SAY)
        clauses = split_clauses(text)
        utterance.clause_count = len(clauses)
        for index, clause in enumerate(clauses):
            self._send(
                "tts",
                tts_pb2.SynthesizeRequest(
                    clause=media_pb2.TextClause(utterance_id=utterance.utterance_id, clause_index=index, text=clause)
                ),
                utterance,
            )
        return utterance.utterance_id

    def chat(self, text: str) -> str:
        utterance = self._begin(session_pb2.UTTERANCE_SOURCE_CHAT)
        self._send(
            "llm",
            llm_pb2.GenerateRequest(turn=llm_pb2.UserTurn(utterance_id=utterance.utterance_id, text=text)),
            utterance,
        )
        return utterance.utterance_id

    def interrupt(self) -> tuple[str, int]:
        return self._cut(session_pb2.FINISH_REASON_INTERRUPTED)

    def _begin(self, source: int) -> Utterance:
        self._cut(session_pb2.FINISH_REASON_INTERRUPTED)
        utterance = Utterance(new_id(), source, time.monotonic())
        self.utterance = utterance
        self._recent[utterance.utterance_id] = utterance
        while len(self._recent) > RECENT_UTTERANCES:
            self._recent.popitem(last=False)
        self.timeline.begin(utterance.utterance_id)
        self._speech_from = None
        self._set_state(session_pb2.SESSION_STATE_THINKING, utterance.utterance_id)
        self._work.set()
        return utterance

    def _send(self, component: str, message, utterance: Utterance | None = None) -> None:
        try:
            self._links[component].send(message)
        except OutboxFull as error:
            if utterance is not None:
                self._fail(utterance, component, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except PeerRefused as error:
            if utterance is not None:
                self._fail(utterance, component, grpc.StatusCode.FAILED_PRECONDITION, str(error))

    def _cut(self, reason: int) -> tuple[str, int]:
        """Stops the utterance in progress CUT_MARGIN frames after the frame now playing."""
        utterance = self.utterance
        if utterance is None or utterance.finished:
            return "", 0
        cut_frame = min(self.next_play + CUT_MARGIN, self.timeline.write_head)
        self._speech_from = None
        epoch_before = self.timeline.epoch
        self.timeline.cut(cut_frame)
        if self.timeline.epoch != epoch_before:
            for index in [i for i in self._rendered if i >= cut_frame]:
                del self._rendered[index]
            self._send(
                "video",
                video_pb2.RenderRequest(
                    reset=video_pb2.ResetTimeline(from_frame_index=cut_frame, epoch=self.timeline.epoch)
                ),
            )
        for component, message in (
            ("llm", llm_pb2.GenerateRequest(cancel=media_pb2.CancelUtterance(utterance_id=utterance.utterance_id))),
            ("tts", tts_pb2.SynthesizeRequest(cancel=media_pb2.CancelUtterance(utterance_id=utterance.utterance_id))),
        ):
            self._send(component, message)
        utterance.finish_reason = reason
        still_queued = [s for s in self.timeline.slots.values() if s.utterance_id == utterance.utterance_id]
        if still_queued:
            max(still_queued, key=lambda s: s.frame_index).ends_utterance = utterance.utterance_id
        else:
            self._finish(utterance, frame_start_us(cut_frame, self.fps))
        self._work.set()
        return utterance.utterance_id, frame_start_us(cut_frame, self.fps)

    def _fail(self, utterance: Utterance, component: str, code: grpc.StatusCode, message: str) -> None:
        self._emit(
            error=session_pb2.SessionError(
                utterance_id=utterance.utterance_id, code=code.value[0], message=message, component=component
            )
        )
        if utterance.finished or utterance.failed:
            return
        utterance.failed = True
        utterance.finish_reason = session_pb2.FINISH_REASON_FAILED
        self._send(
            "llm", llm_pb2.GenerateRequest(cancel=media_pb2.CancelUtterance(utterance_id=utterance.utterance_id))
        )
        self._send(
            "tts", tts_pb2.SynthesizeRequest(cancel=media_pb2.CancelUtterance(utterance_id=utterance.utterance_id))
        )
        self.timeline.finish_audio(utterance.utterance_id)  # what was already synthesised still plays
        self._work.set()

    def _finish(self, utterance: Utterance, end_us: int) -> None:
        if utterance.finished:
            return
        utterance.finished = True
        reason = utterance.finish_reason or session_pb2.FINISH_REASON_COMPLETED
        UTTERANCES.labels(SOURCE_NAMES.get(utterance.source, "?"), REASON_NAMES.get(reason, "?")).inc()
        self._emit(
            speech_finished=session_pb2.SpeechFinished(
                utterance_id=utterance.utterance_id,
                reason=reason,
                end_us=end_us,
                spoken_text=" ".join(utterance.spoken_words),
            )
        )
        if self.utterance is utterance:
            self.utterance = None
            if self.state != session_pb2.SESSION_STATE_ENDED:
                self._set_state(session_pb2.SESSION_STATE_IDLE, "")

    # -- peer responses ----------------------------------------------------------------------------------------
    def _current(self, utterance_id: str) -> Utterance | None:
        utterance = self.utterance
        if utterance is None or utterance.utterance_id != utterance_id or utterance.finish_reason:
            return None
        return utterance

    def _on_llm(self, response: llm_pb2.GenerateResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "clause":
            utterance = self._current(response.clause.utterance_id)
            if utterance is None:
                return
            if utterance.first_clause_at is None:
                utterance.first_clause_at = time.monotonic()
                LATENCY.labels("first_clause").observe(utterance.first_clause_at - utterance.requested_at)
            self._send("tts", tts_pb2.SynthesizeRequest(clause=response.clause), utterance)
        elif kind == "done":
            utterance = self._current(response.done.utterance_id)
            if utterance is not None:
                utterance.clause_count = response.done.clause_count
                self._maybe_complete(utterance)
        elif kind == "error":
            utterance = self._current(response.error.utterance_id)
            if utterance is not None:
                self._fail(utterance, "llm", _code(response.error.code), response.error.message)

    def _on_tts(self, response: tts_pb2.SynthesizeResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "audio":
            audio = response.audio
            utterance = self._current(audio.utterance_id)
            if utterance is None:
                return
            if utterance.first_audio_at is None:
                utterance.first_audio_at = time.monotonic()
                LATENCY.labels("first_audio").observe(utterance.first_audio_at - utterance.requested_at)
            clause = audio.clause_index
            if clause not in utterance.clause_sample_base:
                utterance.clause_sample_base[clause] = utterance.received_samples - audio.offset_samples
                utterance.clause_word_base[clause] = utterance.next_word_index
            base = utterance.clause_sample_base[clause]
            rate = audio.sample_rate_hz or self.sample_rate_hz
            marks = [
                Mark(p.phoneme, base + p.start_us * rate // 1_000_000, base + p.end_us * rate // 1_000_000)
                for p in audio.phonemes
            ]
            for word in audio.words:
                index = utterance.clause_word_base[clause] + word.word_index
                utterance.next_word_index = max(utterance.next_word_index, index + 1)
                marks.append(
                    Mark(
                        word.word,
                        base + word.start_us * rate // 1_000_000,
                        base + word.end_us * rate // 1_000_000,
                        index,
                    )
                )
            utterance.received_samples += len(audio.pcm_s16le) // 2
            self.timeline.add_audio(utterance.utterance_id, audio.pcm_s16le, marks)
            self._work.set()
            self._fill()
        elif kind == "clause_done":
            utterance = self._current(response.clause_done.utterance_id)
            if utterance is not None:
                utterance.clauses_synthesized += 1
                self._maybe_complete(utterance)
        elif kind == "error":
            utterance = self._current(response.error.utterance_id)
            if utterance is not None:
                self._fail(utterance, "tts", _code(response.error.code), response.error.message)
        elif kind == "degraded":
            degraded = response.degraded
            self._emit(
                voice_degraded=session_pb2.VoiceDegraded(
                    utterance_id=degraded.utterance_id,
                    message=degraded.message,
                    fallback_engine=degraded.fallback_engine,
                )
            )

    def _maybe_complete(self, utterance: Utterance) -> None:
        if utterance.clause_count is not None and utterance.clauses_synthesized >= utterance.clause_count:
            self.timeline.finish_audio(utterance.utterance_id)
            self._work.set()

    def _on_video(self, response: video_pb2.RenderResponse) -> None:
        if response.HasField("status"):
            self._video_pace = response.status
            return
        frame = response.frame
        slot = self.timeline.slots.get(frame.frame_index)
        if slot is not None and slot.epoch == frame.epoch:
            self._rendered[frame.frame_index] = frame
            self._frame_arrived.set()

    def _on_video_up(self, first: bool) -> None:
        if first:
            return
        # A new video stream knows nothing: render again every frame not yet rendered.
        for index in sorted(self.timeline.slots):
            if index not in self._rendered:
                self._send_drive(self.timeline.slots[index])

    def _on_packager(self, response: packager_pb2.PublishResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "segment":
            segment = response.segment
            end = segment.start_frame_index + segment.frame_count
            for utterance in self._recent.values():
                first = utterance.first_frame_index
                if utterance.latency_reported or first is None or not (segment.start_frame_index <= first < end):
                    continue
                utterance.latency_reported = True
                self._report_latency(utterance, time.monotonic())
        elif kind == "ready":
            if not self._packager_accepted.done():
                self._packager_accepted.set_result(None)
        elif kind == "ended":
            self._playlist_ended.set()

    def _report_latency(self, utterance: Utterance, segment_at: float) -> None:
        def since(t: float | None) -> int:
            return 0 if t is None else int((t - utterance.requested_at) * 1e6)

        LATENCY.labels("first_speech_segment").observe(segment_at - utterance.requested_at)
        self._emit(
            latency=session_pb2.UtteranceLatency(
                utterance_id=utterance.utterance_id,
                first_clause_us=since(utterance.first_clause_at),
                first_audio_us=since(utterance.first_audio_at),
                first_speech_frame_us=since(utterance.first_frame_at),
                first_speech_segment_us=since(segment_at),
            )
        )

    def _on_packager_down(self, error: Exception) -> None:
        if not self._packager_accepted.done():  # refused at start: CreateSession reports it
            detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
            self._packager_accepted.set_result(detail or "stream closed")
            return
        self._down_handler("packager")(error)
        if not self._ending:
            self._emit(
                error=session_pb2.SessionError(
                    code=grpc.StatusCode.UNAVAILABLE.value[0],
                    message="the stream's playlist was lost with the packager; the session ends, create a new one",
                    component="session",
                )
            )
            self._playlist_ended.set()
            self._fatal = asyncio.create_task(self.end())

    def _down_handler(self, component: str) -> Callable[[Exception], None]:
        def on_down(error: Exception) -> None:
            detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
            code = error.code() if isinstance(error, grpc.aio.AioRpcError) else grpc.StatusCode.UNAVAILABLE
            if code in REFUSALS:
                message = f"the {component} service refused this session: {detail}"
            else:
                message = f"the {component} service is unavailable ({detail})" + (
                    "" if component == "packager" else "; reconnecting"
                )
            utterance = self.utterance
            if utterance is not None and not utterance.finished and self._waits_on(utterance, component):
                self._fail(utterance, component, code, message)
            else:
                self._emit(error=session_pb2.SessionError(code=code.value[0], message=message, component=component))

        return on_down

    @staticmethod
    def _waits_on(utterance: Utterance, component: str) -> bool:
        """Whether the utterance still needs output from `component` (a peer that has done its part can fail)."""
        text_done = utterance.source == session_pb2.UTTERANCE_SOURCE_SAY or utterance.clause_count is not None
        if component == "llm":
            return not text_done
        if component == "tts":
            return not text_done or utterance.clauses_synthesized < (utterance.clause_count or 0)
        return False

    # -- timeline and playout ----------------------------------------------------------------------------------
    def _send_drive(self, slot: FrameSlot) -> None:
        drive = video_pb2.FrameDrive(
            frame_index=slot.frame_index,
            utterance_id=slot.utterance_id,
            pcm_s16le=slot.pcm,
            epoch=slot.epoch,
            phonemes=[
                media_pb2.PhonemeMark(phoneme=p.text, start_us=p.start_us, end_us=p.end_us) for p in slot.phonemes
            ],
        )
        self._send("video", video_pb2.RenderRequest(frame=drive))

    def _fill(self) -> None:
        """Schedules frames at the write head: idle ones just ahead of playout, speech up to the lookahead."""
        timeline = self.timeline
        while True:
            index = timeline.write_head
            current = timeline.current
            if self.realtime:
                slow = self._slow_video()
                if slow and current is not None and not current.started and not self._ending:
                    if not current.complete or (self._speech_from is None and not self._plan_preroll(index)):
                        # Wait for all of the utterance's audio (the voice is far faster than real time): idle.
                        if index >= self.next_play + IDLE_LEAD:
                            return
                        self._send_drive(timeline.idle_slot())
                        continue
                    if self._speech_from is not None and index < self._speech_from:
                        self._send_drive(timeline.idle_slot())  # idle frames are cheap: the renderer works ahead
                        continue
                has_speech = current is not None and (current.started or current.pending_samples > 0)
                lead = self.config.lookahead_frames if has_speech else IDLE_LEAD
                if slow and (has_speech or index < self._flush_until):
                    # The whole utterance goes to the renderer at once, and the idle frame after it too, so the
                    # renderer knows where it ends and can render its last chunk ahead as well.
                    lead = SLOW_LEAD_FRAMES
                if self._ending or index >= self.next_play + lead:
                    return
                force = index <= self.next_play + MIN_LEAD
            else:
                if index >= self.next_play + self.config.lookahead_frames:
                    return
                if current is None:
                    if self._idle_frames_wanted <= 0:
                        return
                    self._idle_frames_wanted -= 1
                force = False
            slot = timeline.next_slot(force)
            if slot is None:
                return
            if slot.ends_utterance:
                self._flush_until = slot.frame_index + 2
            self._send_drive(slot)

    def _slow_video(self) -> bool:
        pace = self._video_pace
        return pace is not None and needs_preroll(
            pace.frames_per_second, pace.lookahead_frames, self.fps, self.config.lookahead_frames
        )

    def _plan_preroll(self, index: int) -> bool:
        """Decides where the current (complete) utterance's speech starts; tells watchers (RENDERING)."""
        current = self.timeline.current
        pace = self._video_pace
        if current is None or pace is None:
            return False
        frames = -(-current.pending_samples // self.timeline.samples_per_frame)
        wait = preroll_frames(frames, pace.frames_per_second, pace.lookahead_frames, self.fps)
        self._speech_from = max(index, self.next_play + IDLE_LEAD) + wait
        PREROLL_FRAMES.observe(wait)
        self._set_state(
            session_pb2.SESSION_STATE_RENDERING,
            current.utterance_id,
            expected_start_us=frame_start_us(self._speech_from, self.fps),
        )
        return True

    async def _await_frame(self, index: int, deadline: float | None) -> media_pb2.VideoFrame | None:
        while True:
            frame = self._rendered.pop(index, None)
            if frame is not None:
                return frame
            self._frame_arrived.clear()
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return None
            try:
                await asyncio.wait_for(self._frame_arrived.wait(), timeout)
            except TimeoutError:
                return None

    async def _playout(self) -> None:
        token = session_id_var.set(self.session_id)
        frame_s = 1.0 / self.fps
        try:
            while True:
                index = self.next_play
                if self.realtime:
                    if self._ending:
                        return
                    self._fill()
                    deadline = self._t0 + index * frame_s
                    delay = deadline - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    self._fill()
                    frame = await self._await_frame(index, deadline + RENDER_GRACE_S)
                else:
                    self._fill()
                    if index >= self.timeline.write_head:
                        if self._ending and self._idle_frames_wanted <= 0 and self.timeline.current is None:
                            return
                        self._work.clear()
                        await self._work.wait()
                        continue
                    frame = await self._await_frame(index, time.monotonic() + 10.0)
                slot = self.timeline.pop(index)
                if slot is None:  # cannot happen while _fill forces MIN_LEAD frames; be safe
                    slot = FrameSlot(frame_index=index, epoch=self.timeline.epoch)
                self._play(slot, frame)
                self.next_play = index + 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("playout failed")
            self._emit(
                error=session_pb2.SessionError(
                    code=grpc.StatusCode.INTERNAL.value[0], message="the session's playout failed", component="session"
                )
            )
        finally:
            session_id_var.reset(token)

    def _play(self, slot: FrameSlot, frame: media_pb2.VideoFrame | None) -> None:
        index = slot.frame_index
        if frame is None:
            STALLED_FRAMES.inc()
            log.debug("frame late: the last one is repeated", extra={"frame_index": index, "speech": slot.speech})
            frame = self._last_frame
            if frame is None:
                frame = _blank_frame(self.width, self.height)
            frame = media_pb2.VideoFrame(
                frame_index=index,
                pts_us=frame_start_us(index, self.fps),
                width=frame.width,
                height=frame.height,
                pixel_format=frame.pixel_format,
                data=frame.data,
                epoch=slot.epoch,
            )
        self._last_frame = frame
        pcm = slot.pcm or bytes(2 * self.timeline.samples_per_frame)
        try:
            self._links["packager"].send(
                packager_pb2.PublishRequest(
                    frame=packager_pb2.MediaFrame(video=frame, pcm_s16le=pcm, speech=slot.speech)
                )
            )
        except (OutboxFull, PeerRefused):
            log.warning("packager is not taking frames; frame dropped", extra={"frame_index": index})
        utterance = self._recent.get(slot.utterance_id or slot.ends_utterance)
        if utterance is None:
            return
        if slot.first_of_utterance and not utterance.started:
            utterance.started = True
            utterance.first_frame_at = time.monotonic()
            utterance.first_frame_index = index
            LATENCY.labels("first_speech_frame").observe(utterance.first_frame_at - utterance.requested_at)
            self._emit(
                speech_started=session_pb2.SpeechStarted(
                    utterance_id=utterance.utterance_id,
                    source=utterance.source,
                    start_us=frame_start_us(index, self.fps),
                )
            )
            if self.utterance is utterance:
                self._set_state(session_pb2.SESSION_STATE_SPEAKING, utterance.utterance_id)
        for word in slot.words:
            utterance.spoken_words.append(word.text)
            self._emit(
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

    # -- events ------------------------------------------------------------------------------------------------
    def _set_state(self, state: int, utterance_id: str, expected_start_us: int = 0) -> None:
        if state == self.state and utterance_id == self.state_utterance:
            return
        self.state = state
        self.state_utterance = utterance_id
        self.state_expected_start_us = expected_start_us
        self._emit(
            state_changed=session_pb2.StateChanged(
                state=state, utterance_id=utterance_id, expected_start_us=expected_start_us
            )
        )

    def _event(self, **event) -> session_pb2.WatchSessionResponse:
        now = Timestamp()
        now.GetCurrentTime()
        return session_pb2.WatchSessionResponse(
            media_time_us=frame_start_us(self.next_play, self.fps), time=now, **event
        )

    def _emit(self, **event) -> None:
        self.bus.publish(self._event(**event))

    def watch(self) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        first = self._event(
            state_changed=session_pb2.StateChanged(
                state=self.state, utterance_id=self.state_utterance, expected_start_us=self.state_expected_start_us
            )
        )
        return self.bus.watch(first)


def _code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _blank_frame(width: int, height: int) -> media_pb2.VideoFrame:
    luma = bytes([16]) * (width * height)
    chroma = bytes([128]) * (width * height // 2)
    return media_pb2.VideoFrame(
        width=width, height=height, pixel_format=media_pb2.PIXEL_FORMAT_I420, data=luma + chroma
    )
