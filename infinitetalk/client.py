"""A client of a running stack: create a session, speak, follow the words and the playlist like a viewer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc

from avatar.v1 import session_pb2, session_pb2_grpc
from infinitetalk.hls import PlaylistFollower

POLL_INTERVAL_S = 0.05


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
    the session's own control token."""

    def __init__(self, addr: str, api_key: str | None = None) -> None:
        self.channel = grpc.aio.insecure_channel(addr)
        self.stub = session_pb2_grpc.SessionServiceStub(self.channel)
        self._key_metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None

    async def close(self) -> None:
        await self.channel.close()

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
        response = await self.stub.CreateSession(
            session_pb2.CreateSessionRequest(avatar=avatar, voice=voice, options=options, portrait=portrait or b""),
            timeout=30,
            metadata=self._key_metadata,
        )
        return response.session

    async def end(self, session: session_pb2.Session) -> None:
        await self.stub.EndSession(
            session_pb2.EndSessionRequest(session_id=session.session_id), timeout=30, metadata=control_metadata(session)
        )

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
        auth = control_metadata(session)
        watch = self.stub.WatchSession(session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=auth)
        await watch.read()  # the current state: from here on no event is missed
        sent_at = time.monotonic()
        if chat:
            request = session_pb2.ChatRequest(session_id=session.session_id, text=text)
            reply = await self.stub.Chat(request, timeout=10, metadata=auth)
        else:
            request = session_pb2.SayRequest(session_id=session.session_id, text=text)
            reply = await self.stub.Say(request, timeout=10, metadata=auth)
        result = SpeakResult(reply.utterance_id)
        poller = None
        if hls_url is not None:
            follower = follower or PlaylistFollower(hls_url)
            poller = asyncio.create_task(self._follow(session, follower, result, sent_at))
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    event = await watch.read()
                    if event is grpc.aio.EOF:
                        break
                    kind = event.WhichOneof("event")
                    if kind == "error":
                        if event.error.utterance_id in ("", result.utterance_id):
                            result.errors.append(event.error)
                            if on_error is not None:
                                on_error(event.error)
                        continue
                    payload = getattr(event, kind)
                    if getattr(payload, "utterance_id", None) != result.utterance_id:
                        continue
                    if kind == "word_spoken":
                        result.words.append(event.word_spoken)
                        if on_word is not None:
                            on_word(event.word_spoken)
                    elif kind == "speech_started":
                        result.start_us = event.speech_started.start_us
                    elif kind == "latency":
                        result.latency = event.latency
                    elif kind == "speech_finished":
                        result.reason = event.speech_finished.reason
                        result.end_us = event.speech_finished.end_us
                        result.spoken_text = event.speech_finished.spoken_text
                        break
            if poller is not None and result.start_us is not None:
                async with asyncio.timeout(30):
                    await poller
        finally:
            watch.cancel()
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
