"""One live session: its four peer streams, its timeline, its clock and its events. It carries no pixels.

The session is the clock and the control plane. Text goes to the llm (Chat) or straight to the tts (Say); the
voice's audio and marks land on the timeline (services.session.timeline); the clock (services.session.playout)
places frames, drives the video worker for the chunks around speech and commits every chunk to the packager with
the audio under it. The video worker renders and encodes those chunks and hands them straight to the packager; idle
chunks are the avatar's shared idle loop. Interrupts cut the timeline a couple of frames after the clock and cancel
the utterance in the llm and tts; events (speech started, words, finished, latency, stalls) go to the watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge, Histogram

from avatar.v1 import llm_pb2, llm_pb2_grpc, packager_pb2, tts_pb2_grpc
from infinitetalk_live_client.avatar.v1 import media_pb2, session_pb2, tts_pb2, video_pb2
from services.common.clauses import split_clauses
from services.common.logs import session_id_var
from services.common.lru import Lru
from services.common.media import FPS, SAMPLE_RATE_HZ, frame_start_us
from services.common.viewer_urls import signed_component
from services.session.chunks import ChunkPlan, CommitPlan, IdleLoopInfo
from services.session.config import SessionConfig
from services.session.events import EventBus
from services.session.narration import Narrator
from services.session.peers import REFUSALS, OutboxFull, PeerLink, PeerRefused
from services.session.placement import Packager, Packagers, VideoWorker, VideoWorkers
from services.session.playout import OFFLINE_TAIL_FRAMES, Playout
from services.session.timeline import FrameSlot, Timeline
from services.session.utterances import Utterance

log = logging.getLogger(__name__)

RECENT_UTTERANCES = 16
READY_TIMEOUT_S = 30.0  # the video worker prepares the avatar's idle loop (seconds for a new one) and hands it over
PHASE_OFFSETS = 1000  # idle-loop phase offsets drawn per session, in chunks (reduced modulo the loop)

UTTERANCES = Counter("session_utterances_total", "Utterances by source and finish reason", ["source", "reason"])
STALLED_FRAMES = Counter("session_stalled_frames_total", "Frames whose rendered pictures were late: the loop showed")
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
        stream_id: str = "",
        control_token: str = "",
    ) -> None:
        """`video_worker` and `packager`: where the session was placed (it releases them when it ends); the video
        stream moves to another worker if its worker's stream breaks. `portrait`: uploaded image bytes to animate
        (then `avatar` is its prepared name), in the video link's config, which is sent first on every
        (re)connection so any video worker can serve the stream; dropped with the session. `stream_id`: the
        playlist's id (view-only; default: the session id); `control_token`: the secret that steers the session
        (checked by the service, never logged)."""
        self.session_id = session_id
        self.stream_id = stream_id or session_id
        self.control_token = control_token
        self.created_at = time.monotonic()
        self.expires_at = int(time.time() + config.max_lifetime_s)  # Unix seconds: when it ends at the latest
        self.stubs = stubs
        self.video_worker = video_worker
        self.packager = packager
        self._placement_released = False
        self.avatar = avatar
        self.voice = voice
        self.realtime = options.pacing != session_pb2.PACING_OFFLINE
        self.config = config
        self._on_ended = on_ended
        self.fps = FPS
        self.width, self.height = config.video_width, config.video_height
        self.timeline = Timeline(self.fps, SAMPLE_RATE_HZ)
        chunk_frames = config.part_duration_ms * self.fps // 1000  # a chunk is a Low-Latency HLS part
        phase_offset = chunk_frames * secrets.randbelow(PHASE_OFFSETS)
        self.plan = ChunkPlan(chunk_frames, phase_offset, self.timeline.samples_per_frame)
        self.playout = Playout(
            self.timeline,
            self.plan,
            self.realtime,
            config.lookahead_frames,
            on_drive=self._send_drive,
            on_commit=self._commit,
            on_frame=self._play,
            on_preroll=self._announce_preroll,
        )
        self.narrator = Narrator(
            config.max_watchers_per_session, lambda: frame_start_us(self.playout.next_play, self.fps)
        )
        self.utterance: Utterance | None = None
        self._recent: Lru[str, Utterance] = Lru(RECENT_UTTERANCES)  # the newest, by when they began
        self._publish_token = secrets.token_urlsafe(24)
        self._video_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._video_connected = False
        self._ending = False
        self.ended = asyncio.Event()
        self._playlist_ended = asyncio.Event()
        self.last_activity = time.monotonic()
        self.media_epoch = time.time()
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
                        persona=options.persona,
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
                    config=tts_pb2.SynthesizeConfig(session_id=session_id, voice=voice, sample_rate_hz=SAMPLE_RATE_HZ)
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
                        sample_rate_hz=SAMPLE_RATE_HZ,
                        chunk_frames=chunk_frames,
                        packager_address=packager.addr,
                        publish_token=self._publish_token,
                        idle_phase_offset=phase_offset,
                        stream_id=self.stream_id,
                    )
                ),
                session_id,
                self._on_video,
                self._on_video_down,
                before_reconnect=self._place_video_again,
            ),
            "packager": PeerLink(
                "packager",
                packager.stub.Publish,
                packager_pb2.PublishRequest(config=self._publish_config("")),
                self.stream_id,
                self._on_packager,
                self._on_packager_down,
                reconnect=False,  # a playlist cannot be resumed mid-stream: losing it ends the session
            ),
        }
        for link in self._links.values():
            link.max_bytes = config.outbox_bytes  # whatever a peer does, a session holds at most this for it

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def playlist_path(self) -> str:
        """View-only: the stream id, signed with its expiry when HLS_SIGNING_KEY is set."""
        key = self.config.hls_signing_key
        component = signed_component(key, self.stream_id, self.expires_at) if key else self.stream_id
        return self.stubs.packagers.playlist_path(self.packager, component)

    @property
    def speaking(self) -> bool:
        """An utterance is in progress (it holds one of its worker's speaking places)."""
        return self.utterance is not None and not self.utterance.finished

    async def _place_video_again(self) -> None:
        """The video stream broke (its worker died, restarted or refused): reserve room on the best worker now
        (NoCapacity: the link waits and asks again; the idle loop shows meanwhile)."""
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

    def _publish_config(self, loop_id: str) -> packager_pb2.PublishConfig:
        return packager_pb2.PublishConfig(
            stream_id=self.stream_id,
            width=self.width,
            height=self.height,
            fps=self.fps,
            sample_rate_hz=SAMPLE_RATE_HZ,
            segment_duration_ms=self.config.segment_duration_ms,
            media_epoch=self.media_epoch_timestamp(),
            chunk_frames=self.plan.chunk_frames,
            publish_token=self._publish_token,
            idle_loop_id=loop_id,
            offline=not self.realtime,
        )

    async def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        """Opens the peer streams; once the video worker has put the avatar's idle loop on the packager, starts the
        clock and the playlist (media time 0 is then)."""
        LIVE_SESSIONS.inc()
        for name in ("llm", "tts", "video"):
            self._links[name].start()
        try:
            await asyncio.wait_for(asyncio.shield(self._video_ready), ready_timeout_s)
        except (TimeoutError, SessionStartError) as error:
            await self._close_links()
            LIVE_SESSIONS.dec()
            if isinstance(error, SessionStartError):
                raise
            raise SessionStartError(
                f"the video service did not prepare the avatar within {ready_timeout_s:g} s; try again later"
            ) from None
        assert self.plan.loop is not None
        self.playout.t0 = time.monotonic()
        self.media_epoch = time.time()
        self._send_clock()
        packager = self._links["packager"]
        packager.config = packager_pb2.PublishRequest(config=self._publish_config(self.plan.loop.loop_id))
        packager.start()
        try:
            refusal = await asyncio.wait_for(self._packager_accepted, ready_timeout_s)
        except TimeoutError:
            refusal = f"no answer within {ready_timeout_s:g} s"
        if refusal is not None:
            await self._close_links()
            LIVE_SESSIONS.dec()
            raise SessionStartError(f"the packager did not open the stream's playlist: {refusal}")
        self._playout_task = asyncio.create_task(self._run_playout(), name=f"playout-{self.session_id[:6]}")

    async def end(self) -> None:
        """Ends the session: cuts speech (live) or plays a short idle tail (offline), closes the playlist."""
        if self._ending:
            await self.ended.wait()
            return
        self._ending = True
        try:
            if self.realtime:
                self._cut(session_pb2.FINISH_REASON_INTERRUPTED)
                self.playout.ending = True
            else:
                self.playout.idle_frames_wanted = OFFLINE_TAIL_FRAMES
                self.playout.ending = True
            self.playout.work.set()
            if self._playout_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._playout_task, 10.0)
                if self.realtime and self._links["packager"].refusal is None:
                    self.playout.finish_live()
            if self._packager_accepted.done():  # a playlist exists (a session ended mid-start has none)
                self._send("packager", packager_pb2.PublishRequest(end=packager_pb2.EndOfStream()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._playlist_ended.wait(), 5.0)
        finally:
            await self._close_links()
            self.narrator.set_state(session_pb2.SESSION_STATE_ENDED, "")
            self.narrator.close()
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

    async def _run_playout(self) -> None:
        token = session_id_var.set(self.session_id)
        try:
            await (self.playout.run_realtime() if self.realtime else self.playout.run_offline())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("playout failed")
            self.narrator.emit(
                error=session_pb2.SessionError(
                    code=grpc.StatusCode.INTERNAL.value[0], message="the session's playout failed", component="session"
                )
            )
        finally:
            session_id_var.reset(token)

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
        self._recent.put(utterance.utterance_id, utterance)
        self.timeline.begin(utterance.utterance_id)
        self.playout.speech_from = None
        self.narrator.set_state(session_pb2.SESSION_STATE_THINKING, utterance.utterance_id)
        self.playout.work.set()
        return utterance

    def _send(self, component: str, message, utterance: Utterance | None = None) -> None:
        try:
            self._links[component].send(message)
        except OutboxFull as error:
            if utterance is not None:
                self._fail(utterance, component, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            elif component == "packager" and not self._ending:
                self._lose_playlist("the packager is not keeping up with the stream")
        except PeerRefused as error:
            if utterance is not None:
                self._fail(utterance, component, grpc.StatusCode.FAILED_PRECONDITION, str(error))

    def _cut(self, reason: int) -> tuple[str, int]:
        """Stops the utterance in progress CUT_MARGIN frames after the clock."""
        utterance = self.utterance
        if utterance is None or utterance.finished:
            return "", 0
        cut_frame = self.playout.cut_frame()
        self.playout.speech_from = None
        epoch_before = self.timeline.epoch
        self.timeline.cut(cut_frame)
        self.plan.cut(cut_frame, self.timeline.slots)
        if self.timeline.epoch != epoch_before and self._video_connected:
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
        if still_queued and max(s.frame_index for s in still_queued) >= self.playout.next_play:
            max(still_queued, key=lambda s: s.frame_index).ends_utterance = utterance.utterance_id
        else:
            self._finish(utterance, frame_start_us(cut_frame, self.fps))
        self.playout.work.set()
        return utterance.utterance_id, frame_start_us(cut_frame, self.fps)

    def _fail(self, utterance: Utterance, component: str, code: grpc.StatusCode, message: str) -> None:
        self.narrator.emit(
            error=session_pb2.SessionError(
                utterance_id=utterance.utterance_id, code=code.value[0], message=message, component=component
            )
        )
        if utterance.finished or utterance.failed:
            return
        utterance.failed = True
        utterance.finish_reason = session_pb2.FINISH_REASON_FAILED
        cancel = media_pb2.CancelUtterance(utterance_id=utterance.utterance_id)
        self._send("llm", llm_pb2.GenerateRequest(cancel=cancel))
        self._send("tts", tts_pb2.SynthesizeRequest(cancel=cancel))
        self.timeline.finish_audio(utterance.utterance_id)  # what was already synthesised still plays
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
            utterance = self._current(response.audio.utterance_id)
            if utterance is None:
                return
            if utterance.first_audio_at is None:
                utterance.first_audio_at = time.monotonic()
                LATENCY.labels("first_audio").observe(utterance.first_audio_at - utterance.requested_at)
            marks = utterance.take_audio(response.audio, SAMPLE_RATE_HZ)
            self.timeline.add_audio(utterance.utterance_id, response.audio.pcm_s16le, marks)
            self.playout.fill()
            self.playout.work.set()
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
            self.narrator.emit(
                voice_degraded=session_pb2.VoiceDegraded(
                    utterance_id=degraded.utterance_id,
                    message=degraded.message,
                    fallback_engine=degraded.fallback_engine,
                )
            )

    def _maybe_complete(self, utterance: Utterance) -> None:
        if utterance.synthesized:
            self.timeline.finish_audio(utterance.utterance_id)
            self.playout.work.set()

    def _on_video(self, response: video_pb2.RenderResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "status":
            self.playout.pace = response.status
        elif kind == "ready":
            ready = response.ready
            self.plan.loop = IdleLoopInfo(
                ready.idle_loop_id, ready.idle_loop_frames, ready.settle_frames, ready.render_every_chunk
            )
            self._video_connected = True
            if not self._video_ready.done():
                self._video_ready.set_result(None)
                return
            # A new worker knows nothing: the clock, and every frame of the chunks it must render.
            self._send_clock()
            for slot in self.plan.reconnected(self.timeline.slots):
                self._drive(slot)

    def _on_video_down(self, error: Exception) -> None:
        self._video_connected = False
        self._links["video"].clear_outbox()
        if not self._video_ready.done() and isinstance(error, grpc.aio.AioRpcError) and error.code() in REFUSALS:
            self._video_ready.set_exception(SessionStartError(f"the video service refused: {error.details()}"))
            return
        self._down_handler("video")(error)

    def _send_clock(self) -> None:
        self._send(
            "video", video_pb2.RenderRequest(clock=video_pb2.PlayoutClock(media_epoch=self.media_epoch_timestamp()))
        )

    def _on_packager(self, response: packager_pb2.PublishResponse) -> None:
        kind = response.WhichOneof("response")
        if kind in ("part", "segment"):  # a part is on the playlist before its segment: the first counts
            segment = response.part if kind == "part" else response.segment
            end = segment.start_frame_index + segment.frame_count
            self.playout.published_until = max(self.playout.published_until, end)
            self.playout.work.set()
            for utterance in self._recent.values():
                first = utterance.first_frame_index
                if utterance.latency_reported or first is None or not (segment.start_frame_index <= first < end):
                    continue
                utterance.latency_reported = True
                self._report_latency(utterance, time.monotonic())
        elif kind == "stall":
            stall = response.stall
            STALLED_FRAMES.inc(stall.frame_count)
            start_us = frame_start_us(stall.start_frame_index, self.fps)
            end_us = frame_start_us(stall.start_frame_index + stall.frame_count, self.fps)
            log.warning(
                "stream stalled: the idle loop showed instead of rendered frames",
                extra={"frame_index": stall.start_frame_index, "frames": stall.frame_count, "reason": stall.reason},
            )
            self.narrator.emit(stalled=session_pb2.StreamStalled(start_us=start_us, end_us=end_us, reason=stall.reason))
        elif kind == "ready":
            if not self._packager_accepted.done():
                self._packager_accepted.set_result(None)
        elif kind == "ended":
            self._playlist_ended.set()

    def _report_latency(self, utterance: Utterance, segment_at: float) -> None:
        def since(t: float | None) -> int:
            return 0 if t is None else int((t - utterance.requested_at) * 1e6)

        LATENCY.labels("first_speech_segment").observe(segment_at - utterance.requested_at)
        self.narrator.emit(
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
        self._lose_playlist("the stream's playlist was lost with the packager")

    def _lose_playlist(self, why: str) -> None:
        if self._ending:
            return
        self.narrator.emit(
            error=session_pb2.SessionError(
                code=grpc.StatusCode.UNAVAILABLE.value[0],
                message=f"{why}; the session ends, create a new one",
                component="session",
            )
        )
        self._playlist_ended.set()
        self._fatal = asyncio.create_task(self.end())

    def _down_handler(self, component: str) -> Callable[[Exception], None]:
        def on_down(error: Exception) -> None:
            detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
            code = error.code() if isinstance(error, grpc.aio.AioRpcError) else grpc.StatusCode.UNAVAILABLE
            if code in REFUSALS:  # our own service's sentence
                message = f"the {component} service refused this session: {detail}"
            else:  # a transport's detail names internal addresses: logs only
                log.warning("peer down", extra={"component": component, "code": code.name, "detail": detail})
                message = f"the {component} service is unavailable" + (
                    "" if component == "packager" else "; reconnecting"
                )
            utterance = self.utterance
            if utterance is not None and not utterance.finished and self._waits_on(utterance, component):
                self._fail(utterance, component, code, message)
            else:
                self.narrator.emit(
                    error=session_pb2.SessionError(code=code.value[0], message=message, component=component)
                )

        return on_down

    @staticmethod
    def _waits_on(utterance: Utterance, component: str) -> bool:
        """Whether the utterance still needs output from `component` (a peer that has done its part can fail)."""
        if component == "llm":
            return not utterance.text_done
        if component == "tts":
            return not utterance.text_done or not utterance.synthesized
        return False

    # -- the clock's callbacks ---------------------------------------------------------------------------------
    def _send_drive(self, slot: FrameSlot) -> None:
        if self._video_connected:  # otherwise the next worker gets it when it is ready
            self._drive(slot)
        else:
            self.plan.sent.discard(slot.frame_index)

    def _drive(self, slot: FrameSlot) -> None:
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

    def _commit(self, plan: CommitPlan) -> None:
        commit = packager_pb2.ChunkCommit(
            start_frame_index=plan.start_frame_index,
            pcm_s16le=plan.pcm_s16le,
            speech=plan.speech,
            idle_loop_id=plan.idle_loop_id,
            idle_chunk_index=plan.idle_chunk_index,
            rendered=plan.rendered,
            epoch=plan.epoch,
        )
        self._send("packager", packager_pb2.PublishRequest(chunk=commit))

    def _announce_preroll(self, utterance_id: str, start_frame: int) -> None:
        self.narrator.set_state(
            session_pb2.SESSION_STATE_RENDERING, utterance_id, expected_start_us=frame_start_us(start_frame, self.fps)
        )

    def _play(self, slot: FrameSlot) -> None:
        """A frame's time came: its utterance starts, its words are spoken, or its utterance ends."""
        utterance = self._recent.peek(slot.utterance_id or slot.ends_utterance)
        if utterance is None:
            return
        index = slot.frame_index
        if slot.first_of_utterance and not utterance.started:
            utterance.started = True
            utterance.first_frame_at = time.monotonic()
            utterance.first_frame_index = index
            LATENCY.labels("first_speech_frame").observe(utterance.first_frame_at - utterance.requested_at)
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

    # -- events ------------------------------------------------------------------------------------------------
    @property
    def bus(self) -> EventBus:
        return self.narrator.bus

    def watch(self) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        return self.narrator.watch()


def _code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
