"""A client of a running stack: create a session, speak, follow the words and the playlist like a viewer.

The calls go through the client package's asyncio helper (`infinitetalk_live_client.AsyncClient`, the same code
other backends use); what is here is only what the CLI, the tests and the benchmarks need on top: following the HLS
playlist (`first_speech_ms`, what `--record` saves), and a `SpeakResult` holding the messages of one utterance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc

from infinitetalk_live.hls import PlaylistFollower
from infinitetalk_live_client import (
    ApiError,
    AsyncClient,
    AsyncSession,
    Event,
    Latency,
    SessionError,
    SpeechFinished,
    SpeechStarted,
    WordSpoken,
)
from infinitetalk_live_client.avatar.v1 import session_pb2

POLL_INTERVAL_S = 0.05
# CreateSession and EndSession: a portrait to prepare, a pipeline to start or drain (Say and Chat: the helper's 10 s).
TIMEOUT_S = 30.0


@dataclass
class SpeakResult:
    utterance_id: str
    reason: int = session_pb2.FINISH_REASON_UNSPECIFIED
    start_us: int | None = None
    end_us: int | None = None
    words: list[session_pb2.WordSpoken] = field(default_factory=list)
    spoken_text: str = ""
    errors: list[session_pb2.SessionError] = field(default_factory=list)
    latency: session_pb2.UtteranceLatency | None = None
    # Client-side: from sending the request to the first speech segment appearing on the playlist.
    first_speech_ms: float | None = None


def playlist_url(session: session_pb2.Session, hls_base: str | None) -> str:
    if hls_base:
        return hls_base.rstrip("/") + session.playlist_path
    if session.playlist_url:
        return session.playlist_url
    raise ValueError("the server did not give a playlist URL: pass the HLS base URL (--hls)")


def control_metadata(session: session_pb2.Session) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata that steers or watches `session`: its control token as a bearer credential."""
    return (("authorization", f"Bearer {session.control_token}"),)


def media_time(session: session_pb2.Session, us: int) -> datetime:
    return session.media_epoch.ToDatetime(tzinfo=UTC) + timedelta(microseconds=us)


class SessionClient:
    """`api_key`: sent with CreateSession when the server requires keys (SESSION_API_KEYS); every other call carries
    the session's own control token. `api` is the client package's AsyncClient doing the calls; `stub` and `channel`
    are its own, for a test that needs a raw call.

    Failed calls raise `grpc.aio.AioRpcError`, as a stub call does (the CLI prints its code and sentence; tests check
    its code), not the helper's ApiError that wraps it."""

    def __init__(self, addr: str, api_key: str | None = None) -> None:
        self.api = AsyncClient(addr, api_key=api_key, timeout_s=TIMEOUT_S)
        self.channel = self.api.channel
        self.stub = self.api.stub

    async def close(self) -> None:
        await self.api.close()

    async def create(
        self,
        avatar: str = "",
        voice: str = "",
        pacing: int = session_pb2.PACING_REALTIME,
        persona: str = "",
        llm_provider: str = "",
        llm_model: str = "",
        portrait: bytes | None = None,
    ) -> session_pb2.Session:
        """`portrait`: a JPEG, PNG or WebP photo (at most 8 MiB) to animate instead of a named avatar."""
        options = session_pb2.SessionOptions(
            pacing=pacing, persona=persona, llm_provider=llm_provider, llm_model=llm_model
        )
        with _rpc_errors():
            handle = await self.api.create_session(avatar=avatar, voice=voice, portrait=portrait, options=options)
        return handle.info

    def handle(self, session: session_pb2.Session) -> AsyncSession:
        """The helper's handle on `session` (its id and control token)."""
        return self.api.attach(session.session_id, session.control_token)

    async def end(self, session: session_pb2.Session) -> None:
        with _rpc_errors():
            await self.handle(session).end(timeout_s=TIMEOUT_S)

    async def speak(
        self,
        session: session_pb2.Session,
        text: str,
        *,
        chat: bool = False,
        hls_url: str | None = None,
        on_word: Callable[[session_pb2.WordSpoken], None] | None = None,
        on_error: Callable[[session_pb2.SessionError], None] | None = None,
        follower: PlaylistFollower | None = None,
        timeout_s: float = 120.0,
    ) -> SpeakResult:
        """Sends `text` and returns once it has been spoken (and, with hls_url, once its speech is on the playlist)."""
        handle = self.handle(session)
        events = handle.watch()
        poller = None
        try:
            with _rpc_errors():
                await anext(events, None)  # the current state: from here on no event is missed
                sent_at = time.monotonic()
                utterance_id = await (handle.chat(text) if chat else handle.say(text))
            result = SpeakResult(utterance_id)
            if hls_url is not None:
                follower = follower or PlaylistFollower(hls_url)
                poller = asyncio.create_task(self._follow(session, follower, result, sent_at))
            async with asyncio.timeout(timeout_s):
                with _rpc_errors():
                    async for event in events:
                        if _record(event, result, on_word, on_error):
                            break
            if poller is not None and result.start_us is not None:
                async with asyncio.timeout(30):
                    await poller
        finally:
            await events.aclose()
            if poller is not None and not poller.done():
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
        return result

    async def _follow(
        self, session: session_pb2.Session, follower: PlaylistFollower, result: SpeakResult, sent_at: float
    ) -> None:
        """Polls the playlist until the speech's first part or segment (what a low-latency player can play) is on it,
        and, once it is finished, until the segment holding its end is complete (what the follower records)."""
        while True:
            playlist = await asyncio.to_thread(follower.poll)
            now = time.monotonic()
            if playlist is not None and (playlist.segments or playlist.parts):
                playable_until = playlist.covered_until()
                started = result.start_us is not None and playable_until is not None
                if started and result.first_speech_ms is None and playable_until > media_time(session, result.start_us):
                    result.first_speech_ms = (now - sent_at) * 1000
                last = playlist.segments[-1] if playlist.segments else None
                recorded_until = (
                    last.program_date_time + timedelta(seconds=last.duration_s)
                    if last is not None and last.program_date_time
                    else None
                )
                finished = result.end_us is not None and recorded_until is not None
                if playlist.ended or (finished and recorded_until >= media_time(session, result.end_us)):
                    return
            await asyncio.sleep(POLL_INTERVAL_S)


def _record(
    event: Event,
    result: SpeakResult,
    on_word: Callable[[session_pb2.WordSpoken], None] | None,
    on_error: Callable[[session_pb2.SessionError], None] | None,
) -> bool:
    """Adds one watched event to `result` (the utterance's own events, and errors of the session or of it); True once
    the utterance has finished."""
    raw = event.raw or session_pb2.WatchSessionResponse()  # the helper always sets it: the message watched
    if isinstance(event, SessionError):
        if event.utterance_id in ("", result.utterance_id):
            result.errors.append(raw.error)
            if on_error is not None:
                on_error(raw.error)
        return False
    if getattr(event, "utterance_id", None) != result.utterance_id:
        return False
    if isinstance(event, WordSpoken):
        result.words.append(raw.word_spoken)
        if on_word is not None:
            on_word(raw.word_spoken)
    elif isinstance(event, SpeechStarted):
        result.start_us = event.start_us
    elif isinstance(event, Latency):
        result.latency = raw.latency
    elif isinstance(event, SpeechFinished):
        result.reason = raw.speech_finished.reason  # the number itself, also one newer than this client
        result.end_us = event.end_us
        result.spoken_text = event.spoken_text
        return True
    return False


@contextlib.contextmanager
def _rpc_errors() -> Iterator[None]:
    """The helper's ApiError re-raised as the grpc error it wraps (see SessionClient)."""
    try:
        yield
    except ApiError as error:
        if isinstance(error.__cause__, grpc.RpcError):
            raise error.__cause__ from None
        raise
