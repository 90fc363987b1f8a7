"""infinitetalk_live.client.SessionClient (the CLI's, the tests' and the benchmarks' client) on the client package's
asyncio helper, against an in-process SessionService: no stack. What it adds is checked here: one utterance's words,
errors, latency and finish gathered into a SpeakResult, the watch opened before the request, the API key only on
CreateSession, and a refusal raised as the grpc error (what the CLI prints)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from infinitetalk_live.client import SessionClient
from infinitetalk_live_client import AsyncClient
from infinitetalk_live_client.avatar.v1 import session_pb2, session_pb2_grpc

KEY = "k" * 32


class _Sessions(session_pb2_grpc.SessionServiceServicer):
    """One session; Say speaks `text` word by word to the watchers, with an error of another utterance between."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.watchers: list[asyncio.Queue[session_pb2.WatchSessionResponse | None]] = []

    def _note(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.calls.append((method, dict(context.invocation_metadata()).get("authorization", "")))

    async def CreateSession(self, request, context):
        self._note("CreateSession", context)
        if request.avatar == "nobody":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no avatar named nobody")
        assert request.options.pacing == session_pb2.PACING_OFFLINE and request.portrait == b"photo"
        return session_pb2.CreateSessionResponse(
            session=session_pb2.Session(session_id="s1", control_token="t1", playlist_url="http://x/hls/s1.m3u8")
        )

    async def WatchSession(self, request, context) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        self._note("WatchSession", context)
        queue: asyncio.Queue[session_pb2.WatchSessionResponse | None] = asyncio.Queue()
        self.watchers.append(queue)
        yield session_pb2.WatchSessionResponse(
            state_changed=session_pb2.StateChanged(state=session_pb2.SESSION_STATE_IDLE)
        )
        while (event := await queue.get()) is not None:
            yield event

    async def Say(self, request, context):
        self._note("Say", context)
        events = [
            session_pb2.WatchSessionResponse(speech_started=session_pb2.SpeechStarted(utterance_id="u2", start_us=40)),
            session_pb2.WatchSessionResponse(error=session_pb2.SessionError(utterance_id="u1", message="old")),
            session_pb2.WatchSessionResponse(error=session_pb2.SessionError(message="llm down", component="llm")),
        ]
        for index, word in enumerate(request.text.split()):
            spoken = session_pb2.WordSpoken(utterance_id="u2", word=word, word_index=index, start_us=index, end_us=9)
            events.append(session_pb2.WatchSessionResponse(word_spoken=spoken))
        events.append(
            session_pb2.WatchSessionResponse(latency=session_pb2.UtteranceLatency(utterance_id="u2", first_audio_us=7))
        )
        finished = session_pb2.SpeechFinished(
            utterance_id="u2", reason=session_pb2.FINISH_REASON_COMPLETED, end_us=90, spoken_text=request.text
        )
        events.append(session_pb2.WatchSessionResponse(speech_finished=finished))
        for queue in self.watchers:
            for event in events:
                queue.put_nowait(event)
        return session_pb2.SayResponse(utterance_id="u2")

    async def EndSession(self, request, context):
        self._note("EndSession", context)
        for queue in self.watchers:
            queue.put_nowait(None)
        return session_pb2.EndSessionResponse()


@pytest.fixture
async def served() -> AsyncIterator[tuple[_Sessions, str]]:
    sessions = _Sessions()
    server = grpc.aio.server()
    session_pb2_grpc.add_SessionServiceServicer_to_server(sessions, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield sessions, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_session_client_speaks_through_the_helper(served) -> None:
    sessions, address = served
    client = SessionClient(address, api_key=KEY)
    assert isinstance(client.api, AsyncClient) and client.stub is client.api.stub
    try:
        session = await client.create(pacing=session_pb2.PACING_OFFLINE, portrait=b"photo")
        assert isinstance(session, session_pb2.Session) and session.playlist_url.endswith("/s1.m3u8")
        words: list[str] = []
        errors: list[str] = []
        result = await client.speak(
            session,
            "Hello there friend",
            on_word=lambda word: words.append(word.word),
            on_error=lambda error: errors.append(f"{error.component}: {error.message}"),
            timeout_s=10,
        )
        await client.end(session)
    finally:
        await client.close()
    assert words == ["Hello", "there", "friend"] and [w.word for w in result.words] == words
    assert isinstance(result.words[0], session_pb2.WordSpoken)
    assert errors == ["llm: llm down"] and result.errors[0].component == "llm"
    assert result.utterance_id == "u2" and result.reason == session_pb2.FINISH_REASON_COMPLETED
    assert (result.start_us, result.end_us, result.spoken_text) == (40, 90, "Hello there friend")
    assert result.latency is not None and result.latency.first_audio_us == 7
    assert sessions.calls == [
        ("CreateSession", f"Bearer {KEY}"),
        ("WatchSession", "Bearer t1"),
        ("Say", "Bearer t1"),
        ("EndSession", "Bearer t1"),
    ]


async def test_session_client_raises_the_grpc_error(served) -> None:
    """The CLI prints `CODE: sentence` from it, and tests check its `code()`."""
    _, address = served
    client = SessionClient(address)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create(avatar="nobody")
    finally:
        await client.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "no avatar named nobody"
