"""SessionService: the public API. Validates every request, owns the registry of live sessions."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import grpc

from avatar.v1 import session_pb2, session_pb2_grpc, tts_pb2, video_pb2
from services.common.errors import (
    abort_failed_precondition,
    abort_invalid_argument,
    abort_not_found,
    abort_resource_exhausted,
    invalid_argument_reason,
)
from services.common.logs import session_id_var
from services.common.media import MAX_PORTRAIT_BYTES
from services.session.config import SessionConfig
from services.session.events import WatcherTooSlow
from services.session.limits import TokenBucket
from services.session.live import LiveSession, PeerStubs, SessionStartError, new_id
from services.session.placement import NoCapacity, VideoWorker

log = logging.getLogger(__name__)

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
NAME_LIMIT = 64
PERSONA_LIMIT = 4000
LLM_PROVIDERS = {"", "offline", "openai"}
ENDED_MEMORY = 4096
CATALOGUE_TTL_S = 30.0
# MAX_PORTRAIT_BYTES (shared with the video service) is checked here too, so an oversized upload is refused before
# it travels on. Memory: a live session keeps its portrait's bytes (for its Render stream's config, resent on every
# reconnection) and drops them when it ends: at most max_sessions x 8 MiB.
PREPARE_TIMEOUT_S = 30.0


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, config: SessionConfig, stubs: PeerStubs) -> None:
        self.config = config
        self.stubs = stubs
        self.sessions: dict[str, LiveSession] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._catalogue_cache: tuple[float, session_pb2.GetCatalogResponse] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._expiring: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._janitor = asyncio.create_task(self._expire_idle_sessions(), name="session-janitor")

    async def shutdown(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        await asyncio.gather(*(s.end() for s in list(self.sessions.values())), return_exceptions=True)

    async def _expire_idle_sessions(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.config.idle_timeout_s / 2))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.bus.watcher_count == 0 and now - session.last_activity > self.config.idle_timeout_s:
                    log.info("ending idle session", extra={"session_id": session.session_id})
                    self._expiring.add(asyncio.create_task(session.end()))
                    self._expiring = {t for t in self._expiring if not t.done()}

    def _forget(self, session: LiveSession) -> None:
        self.sessions.pop(session.session_id, None)
        self._buckets.pop(session.session_id, None)
        self._ended[session.session_id] = None
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    # -- helpers -----------------------------------------------------------------------------------------------
    async def _session(self, session_id: str, context: grpc.aio.ServicerContext) -> LiveSession:
        if not session_id:
            await abort_invalid_argument(context, "session_id", "session_id is required")
        if not SESSION_ID_PATTERN.match(session_id):
            await abort_invalid_argument(
                context, "session_id", "session_id is malformed: expected the 22-character id CreateSession returned"
            )
        session_id_var.set(session_id)
        session = self.sessions.get(session_id)
        if session is None:
            if session_id in self._ended:
                await abort_not_found(context, "session", session_id, "session has ended; create a new one")
            await abort_not_found(context, "session", session_id, "no such session (it may have expired)")
        session.touch()
        return session

    async def _check_rate(self, session: LiveSession, context: grpc.aio.ServicerContext) -> None:
        bucket = self._buckets.setdefault(
            session.session_id, TokenBucket(self.config.requests_per_second, self.config.request_burst)
        )
        if not bucket.take():
            await abort_resource_exhausted(
                context,
                f"session:{session.session_id}",
                f"too many requests: at most {self.config.requests_per_second:g} per second per session",
            )

    async def _check_text(self, text: str, context: grpc.aio.ServicerContext) -> str:
        cleaned = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text).strip()
        if not cleaned:
            await abort_invalid_argument(context, "text", "text is empty: say something")
        if len(text) > self.config.max_text_chars:
            await abort_invalid_argument(
                context,
                "text",
                f"text is {len(text)} characters long; the limit is {self.config.max_text_chars} characters",
            )
        return cleaned

    async def _catalogue(self) -> session_pb2.GetCatalogResponse:
        """Avatars and voices from the video and tts services, cached for CATALOGUE_TTL_S."""
        cached = self._catalogue_cache
        if cached is not None and time.monotonic() - cached[0] < CATALOGUE_TTL_S:
            return cached[1]
        avatars = await self.stubs.video.list_avatars()
        voices = await self.stubs.tts.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
        catalogue = session_pb2.GetCatalogResponse(
            avatars=avatars.avatars,
            default_avatar=avatars.default_avatar,
            voices=voices.voices,
            default_voice=voices.default_voice,
        )
        self._catalogue_cache = (time.monotonic(), catalogue)
        return catalogue

    async def _catalogue_or_abort(self, context: grpc.aio.ServicerContext) -> session_pb2.GetCatalogResponse:
        try:
            return await self._catalogue()
        except grpc.aio.AioRpcError as error:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the avatar or voice service is unavailable ({error.details()})"
            )
            raise

    async def _prepare_portrait(self, portrait: bytes, worker: VideoWorker, context: grpc.aio.ServicerContext) -> str:
        """The prepared portrait's avatar name; the video service's reason for refusing a file reaches the caller
        verbatim (not an image, no face, too many pixels, ...)."""
        try:
            response = await worker.stub.PrepareAvatar(
                video_pb2.PrepareAvatarRequest(image=portrait), timeout=PREPARE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                _, reason = invalid_argument_reason(error)
                await abort_invalid_argument(context, "portrait", error.details() or "invalid portrait", reason=reason)
            if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
                await abort_failed_precondition(
                    context, "portrait", f"this server cannot animate portraits ({error.details()})"
                )
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                await abort_resource_exhausted(context, "portraits", error.details() or "too many portraits at once")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the avatar service is unavailable ({error.details()}); try again"
            )
            raise
        log.info("portrait prepared", extra={"avatar": response.avatar.name, "bytes": len(portrait)})
        return response.avatar.name

    # -- RPCs --------------------------------------------------------------------------------------------------
    async def CreateSession(self, request, context):
        if len(self.sessions) >= self.config.max_sessions:
            await abort_resource_exhausted(
                context, "sessions", f"the server is full: at most {self.config.max_sessions} sessions at once"
            )
        if len(request.avatar) > NAME_LIMIT or len(request.voice) > NAME_LIMIT:
            await abort_invalid_argument(
                context, "avatar", f"avatar and voice names are at most {NAME_LIMIT} characters"
            )
        if request.options.llm_provider not in LLM_PROVIDERS:
            await abort_invalid_argument(
                context,
                "options.llm_provider",
                f"unknown LLM provider {request.options.llm_provider!r}; choose one of {sorted(LLM_PROVIDERS - {''})}",
            )
        if len(request.options.llm_model) > NAME_LIMIT * 2:
            await abort_invalid_argument(
                context, "options.llm_model", f"llm_model is at most {NAME_LIMIT * 2} characters"
            )
        if len(request.options.persona) > PERSONA_LIMIT:
            await abort_invalid_argument(context, "options.persona", f"persona is at most {PERSONA_LIMIT} characters")
        portrait = request.portrait
        if portrait and request.avatar:
            await abort_invalid_argument(
                context, "portrait", "set either avatar or portrait, not both: the portrait becomes the avatar"
            )
        if len(portrait) > MAX_PORTRAIT_BYTES:
            await abort_invalid_argument(
                context,
                "portrait",
                f"the portrait is {len(portrait) / 2**20:.1f} MiB; the limit is {MAX_PORTRAIT_BYTES / 2**20:.0f} MiB",
                reason="too_large",
            )
        catalogue = await self._catalogue_or_abort(context)
        avatars = [a.name for a in catalogue.avatars]
        voices = [v.name for v in catalogue.voices]
        voice = request.voice or catalogue.default_voice
        if not portrait:
            avatar = request.avatar or catalogue.default_avatar
            if avatar not in avatars:
                await abort_invalid_argument(context, "avatar", f"unknown avatar {avatar!r}; choose one of {avatars}")
        if voice not in voices:
            await abort_invalid_argument(context, "voice", f"unknown voice {voice!r}; choose one of {voices}")
        try:
            worker = await self.stubs.video.place()
        except NoCapacity as error:
            await abort_resource_exhausted(context, "video.workers", f"no room for another session: {error}")
        packager = self.stubs.packagers.place()
        session: LiveSession | None = None
        try:
            if portrait:  # prepared on the worker that will render it
                avatar = await self._prepare_portrait(portrait, worker, context)
            session_id = new_id()
            session_id_var.set(session_id)
            session = LiveSession(
                session_id,
                avatar,
                voice,
                request.options,
                self.stubs,
                self.config,
                self._forget,
                video_worker=worker,
                packager=packager,
                portrait=portrait,
            )
            self.sessions[session_id] = session
            try:
                await session.start()
            except SessionStartError as error:
                self.sessions.pop(session_id, None)
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        finally:
            if session is None:  # refused before the session existed: give the reserved room back
                self.stubs.video.release(worker)
                self.stubs.packagers.release(packager)
        log.info("session created", extra={"avatar": avatar, "voice": voice, "realtime": session.realtime})
        playlist_url = f"{self.config.public_hls_url}{session.playlist_path}" if self.config.public_hls_url else ""
        return session_pb2.CreateSessionResponse(
            session=session_pb2.Session(
                session_id=session_id,
                playlist_path=session.playlist_path,
                playlist_url=playlist_url,
                avatar=avatar,
                voice=voice,
                width=session.width,
                height=session.height,
                fps=session.fps,
                media_epoch=session.media_epoch_timestamp(),
            )
        )

    async def _check_speaking_room(self, session: LiveSession, context: grpc.aio.ServicerContext) -> None:
        """Refuses an utterance that would make the session's video worker render more speech at once than its
        measured CPU allows (the others would stall). A session that is speaking already keeps its place."""
        if session.speaking:
            return
        worker = session.video_worker
        status = await self.stubs.video.recent_status(worker)
        if status is None:
            return  # unknown now: the stream itself reports trouble
        speaking = sum(1 for s in self.sessions.values() if s.video_worker is worker and s.speaking)
        if speaking >= status.speaking_capacity:
            await abort_resource_exhausted(
                context,
                "video.speaking",
                f"the avatar server is already speaking for {speaking} sessions, as many as it can render at once "
                f"(its measured limit: {status.speaking_capacity}, at {status.speaking_stream_cores:.2f} of "
                f"{status.cpu_budget_cores:.1f} CPU cores each); try again when one finishes",
            )

    async def Say(self, request, context):
        session = await self._session(request.session_id, context)
        text = await self._check_text(request.text, context)
        await self._check_rate(session, context)
        await self._check_speaking_room(session, context)
        return session_pb2.SayResponse(utterance_id=session.say(text))

    async def Chat(self, request, context):
        session = await self._session(request.session_id, context)
        text = await self._check_text(request.text, context)
        await self._check_rate(session, context)
        await self._check_speaking_room(session, context)
        return session_pb2.ChatResponse(utterance_id=session.chat(text))

    async def Interrupt(self, request, context):
        session = await self._session(request.session_id, context)
        await self._check_rate(session, context)
        utterance_id, cut_at_us = session.interrupt()
        return session_pb2.InterruptResponse(utterance_id=utterance_id, cut_at_us=cut_at_us)

    async def EndSession(self, request, context):
        session = await self._session(request.session_id, context)
        await session.end()
        return session_pb2.EndSessionResponse()

    async def GetCatalog(self, request, context):
        return await self._catalogue_or_abort(context)

    async def WatchSession(self, request, context) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        session = await self._session(request.session_id, context)
        if session.bus.full():
            await abort_resource_exhausted(
                context,
                f"session:{session.session_id}",
                f"too many watchers: at most {self.config.max_watchers_per_session} per session",
            )
        try:
            async for event in session.watch():
                session.touch()
                yield event
        except WatcherTooSlow:
            await abort_resource_exhausted(context, "watcher", "this watcher fell too far behind; watch again")
        finally:
            session.touch()
