"""SessionService: the public API. Validates every request, owns the registry of live sessions."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from infinitetalk_live_client.avatar.v1 import session_pb2, session_pb2_grpc, tts_pb2, video_pb2
from services.common.errors import (
    abort_failed_precondition,
    abort_invalid_argument,
    abort_not_found,
    abort_resource_exhausted,
    invalid_argument_reason,
)
from services.common.logs import session_id_var
from services.common.lru import Lru
from services.session.access import Caller, Refusal, bearer, matches_digest, new_token, same_secret, token_digest
from services.session.config import SessionConfig
from services.session.events import WatcherTooSlow
from services.session.limits import TokenBucket
from services.session.live import LiveSession, PeerStubs, SessionStartError, new_id
from services.session.placement import NoCapacity, VideoWorker
from services.session.requests import InvalidField, check_choices, check_sizes

log = logging.getLogger(__name__)

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
ENDED_MEMORY = 4096
CREATE_BUCKETS = 10_000  # callers whose CreateSession rate is remembered (LRU)
CATALOG_TTL_S = 30.0
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
        self._create_buckets: Lru[str, TokenBucket] = Lru(CREATE_BUCKETS)
        self._ended: Lru[str, bytes] = Lru(ENDED_MEMORY)  # session id -> its control token's SHA-256
        self._starting = 0  # CreateSession calls holding a slot before their session is registered
        self._catalog_cache: tuple[float, session_pb2.GetCatalogResponse] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()  # sessions ended in the background (kept from the GC)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._janitor = asyncio.create_task(self._expire_idle_sessions(), name="session-janitor")

    async def shutdown(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        await asyncio.gather(*(s.end() for s in list(self.sessions.values())), return_exceptions=True)

    async def _expire_idle_sessions(self) -> None:
        """Ends a session nobody has steered for SESSION_IDLE_TIMEOUT_S (being watched does not count: a forgotten
        tab or a script that only watches must not hold a place for good), and any session older than
        SESSION_MAX_LIFETIME_S."""
        while True:
            await asyncio.sleep(min(5.0, self.config.idle_timeout_s / 2, self.config.max_lifetime_s / 2))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.created_at > self.config.max_lifetime_s:
                    why = "ending a session at its maximum lifetime"
                elif not session.speaking and now - session.last_activity > self.config.idle_timeout_s:
                    why = "ending idle session"
                else:
                    continue
                log.info(why, extra={"session_id": session.session_id, "watchers": session.bus.watcher_count})
                self._end_later(session)

    def _end_later(self, session: LiveSession) -> None:
        task = asyncio.create_task(session.end())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def _forget(self, session: LiveSession) -> None:
        self.sessions.pop(session.session_id, None)
        self._buckets.pop(session.session_id, None)
        self._ended.put(session.session_id, token_digest(session.control_token))

    # -- helpers -----------------------------------------------------------------------------------------------
    async def _session(self, session_id: str, context: grpc.aio.ServicerContext, steer: bool = True) -> LiveSession:
        """The session `session_id` names, if the call carries its control token. A wrong token gets the same
        answer whether or not the session exists; only the token's holder learns that it has ended."""
        if not session_id:
            await abort_invalid_argument(context, "session_id", "session_id is required")
        if not SESSION_ID_PATTERN.match(session_id):
            await abort_invalid_argument(
                context, "session_id", "session_id is malformed: expected the 22-character id CreateSession returned"
            )
        session_id_var.set(session_id)
        token = bearer(context.invocation_metadata())
        if token is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this call needs the session's control token: send gRPC metadata 'authorization: Bearer "
                "<control_token>' (CreateSession returned it on the Session)",
            )
        session = self.sessions.get(session_id)
        if session is None or not same_secret(token, session.control_token):
            ended = self._ended.peek(session_id)  # a caller's guesses keep nothing alive
            if session is None and ended is not None and matches_digest(token, ended):
                await abort_not_found(context, "session", session_id, "session has ended; create a new one")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "the control token does not grant this session: use the token CreateSession returned with it",
            )
        if steer:  # watching is not use: a session only watched still ends when idle
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

    async def _catalog(self) -> session_pb2.GetCatalogResponse:
        """Avatars and voices from the video and tts services, cached for CATALOG_TTL_S."""
        cached = self._catalog_cache
        if cached is not None and time.monotonic() - cached[0] < CATALOG_TTL_S:
            return cached[1]
        avatars = await self.stubs.video.list_avatars()
        voices = await self.stubs.tts.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
        catalog = session_pb2.GetCatalogResponse(
            avatars=avatars.avatars,
            default_avatar=avatars.default_avatar,
            voices=voices.voices,
            default_voice=voices.default_voice,
        )
        self._catalog_cache = (time.monotonic(), catalog)
        return catalog

    async def _catalog_or_abort(self, context: grpc.aio.ServicerContext) -> session_pb2.GetCatalogResponse:
        try:
            return await self._catalog()
        except grpc.aio.AioRpcError as error:  # the transport's detail names internal addresses: logs only
            log.warning("catalog unavailable", extra={"code": error.code().name, "detail": error.details()})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the avatar or voice service is unavailable; try again")
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
            log.warning("portrait preparation failed", extra={"code": code.name, "detail": error.details()})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the avatar service is unavailable; try again")
            raise
        log.info("portrait prepared", extra={"avatar": response.avatar.name, "bytes": len(portrait)})
        return response.avatar.name

    # -- RPCs --------------------------------------------------------------------------------------------------
    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Caller:
        """The API key's caller (anonymous without keys), within its CreateSession rate."""
        try:
            caller = self.config.api_keys.authenticate(context.invocation_metadata())
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)
        # Without keys each client address has its own rate (behind the gateway: Envoy's, whose own limits are
        # per client); with keys, each key.
        who = caller.key_id if self.config.api_keys.enabled else (context.peer() or "").rsplit(":", 1)[0]
        bucket = self._create_buckets.get(who)
        if bucket is None:
            bucket = TokenBucket(self.config.creates_per_minute / 60, self.config.create_burst)
            self._create_buckets.put(who, bucket)
        if not bucket.take():
            await abort_resource_exhausted(
                context,
                f"key:{caller.key_id}",
                f"too many new sessions: at most {self.config.creates_per_minute:g} per minute for this "
                f"{'API key' if self.config.api_keys.enabled else 'client'}; try again shortly",
            )
        return caller

    async def CreateSession(self, request, context):
        caller = await self._authenticate(context)
        if len(self.sessions) + self._starting >= self.config.max_sessions:
            await abort_resource_exhausted(
                context, "sessions", f"the server is full: at most {self.config.max_sessions} sessions at once"
            )
        self._starting += 1  # the slot is held from here (no await before) until the session is registered or not
        try:
            return await self._create_session(request, context, caller)
        finally:
            self._starting -= 1

    async def _create_session(self, request, context: grpc.aio.ServicerContext, caller: Caller):
        try:
            check_sizes(request)
            avatar, voice = check_choices(request, caller, await self._catalog_or_abort(context))
        except InvalidField as invalid:
            await abort_invalid_argument(context, invalid.field, invalid.message, reason=invalid.reason)
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)
        portrait = request.portrait
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
                stream_id=new_id(),
                control_token=new_token(),
            )
            self.sessions[session_id] = session
            try:
                await session.start()
            except SessionStartError as error:
                self.sessions.pop(session_id, None)
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
            except BaseException:  # cancelled (the caller went away) mid-start: nobody will ever steer it
                self._end_later(session)
                raise
        finally:
            if session is None:  # refused before the session existed: give the reserved room back
                self.stubs.video.release(worker)
                self.stubs.packagers.release(packager)
        context.add_done_callback(lambda done: self._end_if_abandoned(done, session))
        log.info(
            "session created",
            extra={"avatar": avatar, "voice": voice, "realtime": session.realtime, "key_id": caller.key_id},
        )
        playlist_url = f"{self.config.public_hls_url}{session.playlist_path}" if self.config.public_hls_url else ""
        expire = Timestamp(seconds=session.expires_at)
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
                control_token=session.control_token,
                stream_id=session.stream_id,
                expire_time=expire,
            )
        )

    def _end_if_abandoned(self, context: grpc.aio.ServicerContext, session: LiveSession) -> None:
        """The caller went away before it got the session (and its token): nobody could ever steer it."""
        if context.cancelled():
            log.info("CreateSession cancelled by its caller: ending the new session")
            self._end_later(session)

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
        return await self._catalog_or_abort(context)

    async def WatchSession(self, request, context) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        session = await self._session(request.session_id, context, steer=False)
        if session.bus.full():
            await abort_resource_exhausted(
                context,
                f"session:{session.session_id}",
                f"too many watchers: at most {self.config.max_watchers_per_session} per session",
            )
        try:
            async for event in session.watch():
                yield event
        except WatcherTooSlow:
            await abort_resource_exhausted(context, "watcher", "this watcher fell too far behind; watch again")
