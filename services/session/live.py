"""One live session: its four peer streams, its timeline, its clock and its events. It carries no pixels.

The session is the clock and the control plane. Text goes to the llm (Chat) or straight to the tts (Say); the
voice's audio and marks land on the timeline (services.session.timeline); the clock (services.session.playout)
places frames, drives the video worker for the chunks around speech and commits every chunk to the packager with
the audio under it. The video worker renders and encodes those chunks and hands them straight to the packager; idle
chunks are the avatar's shared idle loop. Interrupts cut the timeline a couple of frames after the clock and cancel
the utterance in the llm and tts; events (speech started, words, finished, latency, stalls) go to the watchers.

LiveSession is the coordinator: it builds the parts below, wires them together and owns the session's lifecycle
(start, end, a lost playlist). Each part has one job: the peer streams (services.session.links) and what goes on them
(services.session.messages); the utterances and their events (services.session.speech); the peers' answers
(services.session.replies); broken streams (services.session.outages); what the clock sends out
(services.session.outputs); the latency report (services.session.latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Gauge

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.logs import session_id_var
from services.common.media import FPS, SAMPLE_RATE_HZ, frame_start_us
from services.common.viewer_urls import signed_component
from services.session import messages
from services.session.chunks import ChunkPlan
from services.session.config import SessionConfig
from services.session.events import EventBus
from services.session.links import PeerStubs, SessionLinks, SessionStartError
from services.session.narration import Narrator
from services.session.outages import Outages
from services.session.outputs import ClockOutputs
from services.session.placement import Packager, VideoWorker
from services.session.playout import OFFLINE_TAIL_FRAMES, Playout
from services.session.replies import Replies
from services.session.speech import Speech, new_id
from services.session.timeline import Timeline

__all__ = ["LiveSession", "PeerStubs", "SessionStartError", "new_id"]

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0  # the video worker prepares the avatar's idle loop (seconds for a new one) and hands it over
PHASE_OFFSETS = 1000  # idle-loop phase offsets drawn per session, in chunks (reduced modulo the loop)

LIVE_SESSIONS = Gauge("session_live_sessions", "Sessions open")


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
        self.narrator = Narrator(
            config.max_watchers_per_session, lambda: frame_start_us(self.playout.next_play, self.fps)
        )
        self._ending = False
        self.ended = asyncio.Event()
        self.last_activity = time.monotonic()
        self.media_epoch = time.time()
        self._playout_task: asyncio.Task[None] | None = None
        self._fatal: asyncio.Task[None] | None = None
        self.shape = messages.StreamShape(
            session_id,
            self.stream_id,
            self.width,
            self.height,
            self.fps,
            chunk_frames,
            phase_offset,
            secrets.token_urlsafe(24),
            config.segment_duration_ms,
            self.realtime,
        )
        configs = {
            "llm": messages.generate_config(session_id, options),
            "tts": messages.synthesize_config(session_id, voice),
            "video": messages.render_config(self.shape, avatar, portrait, packager.addr),
            "packager": messages.publish_config(self.shape, self.media_epoch_timestamp(), ""),
        }
        self.links = SessionLinks(
            stubs,
            configs,
            session_id=session_id,
            stream_id=self.stream_id,
            video_worker=video_worker,
            packager=packager,
            outbox_bytes=config.outbox_bytes,
            # Answered by the parts below: what the peers say, and what a broken stream means.
            on_response=lambda component, response: self.replies.handle(component, response),
            on_down=lambda component, error: self.outages.handle(component, error),
        )
        self.outputs = ClockOutputs(
            self.links, self.timeline, self.plan, self.narrator, self.media_epoch_timestamp, self._lose_playlist
        )
        self.playout = Playout(
            self.timeline,
            self.plan,
            self.realtime,
            config.lookahead_frames,
            on_drive=self.outputs.drive,
            on_commit=self.outputs.commit,
            on_frame=lambda slot: self.speech.play(slot),
            on_preroll=self.outputs.announce_preroll,
        )
        self.speech = Speech(self.links, self.timeline, self.plan, self.playout, self.narrator)
        ready = self.links.ready
        self.replies = Replies(
            self.speech, self.timeline, self.plan, self.playout, self.narrator, ready, self.outputs.video_back
        )
        self.outages = Outages(self.speech, self.narrator, ready, self._lose_playlist)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def playlist_path(self) -> str:
        """View-only: the stream id, signed with its expiry when HLS_SIGNING_KEY is set."""
        key = self.config.hls_signing_key
        component = signed_component(key, self.stream_id, self.expires_at) if key else self.stream_id
        return self.stubs.packagers.playlist_path(self.packager, component)

    @property
    def video_worker(self) -> VideoWorker:
        return self.links.video_worker

    @property
    def packager(self) -> Packager:
        return self.links.packager

    @property
    def speaking(self) -> bool:
        """An utterance is in progress (it holds one of its worker's speaking places)."""
        return self.speech.speaking

    def media_epoch_timestamp(self) -> Timestamp:
        return messages.timestamp(self.media_epoch)

    async def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        """Opens the peer streams; once the video worker has put the avatar's idle loop on the packager, starts the
        clock and the playlist (media time 0 is then)."""
        LIVE_SESSIONS.inc()
        self.links.start("llm", "tts", "video")
        try:
            await asyncio.wait_for(asyncio.shield(self.links.ready.video_ready), ready_timeout_s)
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
        self.outputs.send_clock()
        packager = self.links["packager"]
        packager.config = messages.publish_config(self.shape, self.media_epoch_timestamp(), self.plan.loop.loop_id)
        packager.start()
        try:
            refusal = await asyncio.wait_for(self.links.ready.packager_accepted, ready_timeout_s)
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
                self.speech.cut(session_pb2.FINISH_REASON_INTERRUPTED)
                self.playout.ending = True
            else:
                self.playout.idle_frames_wanted = OFFLINE_TAIL_FRAMES
                self.playout.ending = True
            self.playout.work.set()
            if self._playout_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._playout_task, 10.0)
                if self.realtime and self.links["packager"].refusal is None:
                    self.playout.finish_live()
            if self.links.ready.packager_accepted.done():  # a playlist exists (a session ended mid-start has none)
                self.links.send("packager", messages.end_of_stream())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.links.ready.playlist_ended.wait(), 5.0)
        finally:
            await self._close_links()
            self.narrator.set_state(session_pb2.SESSION_STATE_ENDED, "")
            self.narrator.close()
            LIVE_SESSIONS.dec()
            self.ended.set()
            self._on_ended(self)

    async def _close_links(self) -> None:
        await self.links.close()
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
        self.links.ready.playlist_ended.set()
        self._fatal = asyncio.create_task(self.end())

    # -- requests ----------------------------------------------------------------------------------------------
    def say(self, text: str) -> str:
        return self.speech.say(text)

    def chat(self, text: str) -> str:
        return self.speech.chat(text)

    def interrupt(self) -> tuple[str, int]:
        return self.speech.cut(session_pb2.FINISH_REASON_INTERRUPTED)

    # -- events ------------------------------------------------------------------------------------------------
    @property
    def bus(self) -> EventBus:
        return self.narrator.bus

    def watch(self) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        return self.narrator.watch()
