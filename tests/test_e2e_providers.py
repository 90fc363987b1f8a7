"""Real providers through the whole stack, against local servers that speak their wire protocols (real SDKs)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from infinitetalk_live.client import SessionClient, control_metadata, playlist_url
from infinitetalk_live.hls import PlaylistFollower
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2
from tests.fakes._base import Failure
from tests.fakes.elevenlabs_server import ElevenLabsServer
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.openai_tts_server import OpenAITtsServer
from tests.hls_analysis import decode, lip_sync, loud_span

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OPENAI_KEY = "sk-test-SECRET123-never-logged"
ELEVENLABS_KEY = "xi-test-SECRET456-never-logged"
ELEVENLABS_VOICE = "elevenlabs:JBFqnCBsd6RMkjVDRZzb"
OPENAI_VOICE = "openai:alloy"
HELLO = "Hello there. This is a cloud voice speaking."
ANSWER = "Sure, here is the answer. It has two sentences, and the second one comes later."


class Providers:
    def __init__(
        self, supervisor: Supervisor, openai: FakeOpenAI, elevenlabs: ElevenLabsServer, openai_tts: OpenAITtsServer
    ) -> None:
        self.supervisor = supervisor
        self.openai = openai
        self.elevenlabs = elevenlabs
        self.openai_tts = openai_tts


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def providers() -> AsyncIterator[Providers]:
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-providers-"))
    openai = await FakeOpenAI(default=Reply(text=ANSWER)).start()
    elevenlabs = await ElevenLabsServer(api_key=ELEVENLABS_KEY).start()
    openai_tts = await OpenAITtsServer(api_key=OPENAI_KEY).start()
    env = {
        "ELEVENLABS_API_KEY": ELEVENLABS_KEY,
        "ELEVENLABS_BASE_URL": elevenlabs.url,
        "OPENAI_TTS_BASE_URL": openai_tts.url,
        "OPENAI_BASE_URL": openai.base_url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "LLM_MODEL": "fake-model",
        "LLM_TIMEOUT_S": "2",
        "LLM_STALL_TIMEOUT_S": "1.5",
        "LLM_MAX_RETRIES": "2",
        "LLM_HISTORY_CHARS": "1000",
        "LOG_LEVEL": "DEBUG",
    }
    supervisor = Supervisor(StackPorts.free(), log_dir=logs, extra_env=env, report=False, gateway=False)
    try:
        async with supervisor.running():
            yield Providers(supervisor, openai, elevenlabs, openai_tts)
    finally:
        for server in (openai, elevenlabs, openai_tts):
            await server.stop()
    for name, text in await asyncio.to_thread(read_logs, logs):
        assert OPENAI_KEY not in text and ELEVENLABS_KEY not in text, f"an API key leaked into {name}"


def read_logs(logs: Path) -> list[tuple[str, str]]:
    return [(log.name, log.read_text(errors="replace")) for log in sorted(logs.glob("*.log"))]


async def openai_session(client: SessionClient) -> session_pb2.Session:
    return await client.create(persona="You are Max, a concise assistant.", llm_provider="openai")


async def test_chat_streams_clauses_early_speaks_the_model_text_and_sends_trimmed_history(providers):
    fake = providers.openai
    client = SessionClient(providers.supervisor.ports.addr("session"))
    try:
        session = await openai_session(client)
        fake.script(Reply.slow_after_first_sentence(ANSWER, pause_s=1.0))  # under the 1.5 s stall limit
        started_while_streaming: list[bool] = []

        def on_word(word: session_pb2.WordSpoken) -> None:
            if not started_while_streaming:
                started_while_streaming.append(not fake.requests[-1].completed)

        first = await client.speak(session, "Tell me something.", chat=True, on_word=on_word)
        assert first.reason == session_pb2.FINISH_REASON_COMPLETED, first.errors
        assert started_while_streaming == [True], "the first clause was spoken before the LLM stream ended"
        assert first.spoken_text == ANSWER
        request = fake.requests[-1]
        assert request.body["model"] == "fake-model" and request.body["stream"] is True
        assert request.messages[0] == {"role": "system", "content": "You are Max, a concise assistant."}

        # 18 + 78 characters of history so far; with this question the budget (1000) holds until the next turn.
        long_question = ("Please remember this: " + "the quick brown fox jumps. " * 40)[:898]
        fake.script(Reply(text="Noted."), Reply(text="Fine."))
        second = await client.speak(session, long_question, chat=True)
        assert second.spoken_text == "Noted."
        sent = [m["content"] for m in fake.requests[-1].messages]
        assert "Tell me something." in sent and ANSWER in sent, "the previous exchange is sent"
        third = await client.speak(session, "And now?", chat=True)
        assert third.spoken_text == "Fine."
        sent = [m["content"] for m in fake.requests[-1].messages]
        assert "Tell me something." not in sent, "history is trimmed to the budget (1000 characters)"
        assert sum(len(c) for c in sent[1:]) <= 1000 + len("And now?")
        await client.end(session)
    finally:
        await client.close()


async def test_interrupt_closes_the_upstream_stream_at_once(providers):
    fake = providers.openai
    client = SessionClient(providers.supervisor.ports.addr("session"))
    try:
        session = await openai_session(client)
        fake.script(Reply(text="One moment. " + "Thinking hard about this. " * 40, delay_s=0.15))
        watch = client.stub.WatchSession(
            session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        await watch.read()
        await client.stub.Chat(
            session_pb2.ChatRequest(session_id=session.session_id, text="Think."), metadata=control_metadata(session)
        )
        while True:
            event = await watch.read()
            if event.WhichOneof("event") == "speech_started":
                break
        interrupted_at = time.monotonic()
        await client.stub.Interrupt(
            session_pb2.InterruptRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        request = await fake.wait_disconnect(timeout_s=5)
        assert request.disconnected_at - interrupted_at < 0.3
        assert not request.completed
        watch.cancel()
        await client.end(session)
    finally:
        await client.close()


async def chat_expecting_error(client, session, text: str) -> list[session_pb2.SessionError]:
    result = await client.speak(session, text, chat=True, timeout_s=30)
    assert result.reason == session_pb2.FINISH_REASON_FAILED
    return result.errors


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (Reply.error(401, "Incorrect API key provided: sk-test-***", "invalid_request_error", "invalid_api_key"),
         grpc.StatusCode.UNAUTHENTICATED, "401"),
        (Reply(text="Broken. Never mind.", malformed_at=1), grpc.StatusCode.INTERNAL, "malformed"),
        (Reply(text="Hanging. Forever.", stall_at=1), grpc.StatusCode.DEADLINE_EXCEEDED, "1.5"),
    ],
    ids=["401", "malformed-chunk", "stalled"],
)  # fmt: skip
async def test_provider_failures_are_clear_errors_and_the_session_lives_on(providers, reply, code, words):
    fake = providers.openai
    client = SessionClient(providers.supervisor.ports.addr("session"))
    try:
        session = await openai_session(client)
        fake.script(reply)
        started = time.monotonic()
        errors = await chat_expecting_error(client, session, "Hello?")
        assert time.monotonic() - started < 10
        assert errors and errors[0].component == "llm" and errors[0].code == code.value[0], errors
        assert words in errors[0].message and OPENAI_KEY not in errors[0].message
        fake.script(Reply(text="I am back."))
        after = await client.speak(session, "Again?", chat=True)
        assert after.reason == session_pb2.FINISH_REASON_COMPLETED and after.spoken_text == "I am back."
        await client.end(session)
    finally:
        await client.close()


async def test_rate_limited_then_ok_is_retried_and_spoken(providers):
    fake = providers.openai
    client = SessionClient(providers.supervisor.ports.addr("session"))
    try:
        session = await openai_session(client)
        before = len(fake.requests)
        fake.script(
            Reply.error(429, "Rate limit reached", "requests", "rate_limit_exceeded", headers={"Retry-After": "0.2"}),
            Reply(text="Worth the wait."),
        )
        result = await client.speak(session, "Hi.", chat=True)
        assert result.reason == session_pb2.FINISH_REASON_COMPLETED and result.spoken_text == "Worth the wait."
        assert len(fake.requests) - before == 2
        await client.end(session)
    finally:
        await client.close()


async def test_unknown_llm_provider_is_refused_at_create(providers):
    client = SessionClient(providers.supervisor.ports.addr("session"))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.create(llm_provider="skynet")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "skynet" in caught.value.details()
    finally:
        await client.close()


@pytest.mark.parametrize("voice", [ELEVENLABS_VOICE, OPENAI_VOICE])
async def test_cloud_voices_speak_in_the_stream_with_the_mouth_in_time(providers, voice):
    client = SessionClient(providers.supervisor.ports.addr("session"))
    try:
        session = await client.create(voice=voice)
        assert session.voice == voice
        url = playlist_url(session, None)
        follower = PlaylistFollower(url)
        await asyncio.sleep(1.0)
        result = await client.speak(session, HELLO, hls_url=url, follower=follower)
        assert result.reason == session_pb2.FINISH_REASON_COMPLETED, result.errors
        assert [w.word for w in result.words] == HELLO.split()
        await client.end(session)
    finally:
        await client.close()
    media = decode(follower.fmp4_bytes(), rgb=True)
    span = loud_span(media.audio, media.sample_rate)
    assert span is not None and span[1] - span[0] > 1.0, "speech in the stream"
    onset_s = span[0] + media.audio_start_s
    sync = lip_sync(media, (onset_s, span[1] + media.audio_start_s))
    assert sync.mouth_onset_s is not None and abs(sync.mouth_onset_s - onset_s) <= 0.08, sync
    assert sync.envelope_correlation > 0.3, sync
    provider = providers.elevenlabs if voice == ELEVENLABS_VOICE else providers.openai_tts
    assert provider.requests, "the provider's server was asked"


async def test_a_provider_failing_mid_utterance_degrades_to_the_offline_voice(providers):
    client = SessionClient(providers.supervisor.ports.addr("session"))
    try:
        session = await client.create(voice=ELEVENLABS_VOICE)
        providers.elevenlabs.fail(Failure(drop_after_s=0.5))
        watch = client.stub.WatchSession(
            session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        await watch.read()
        text = "This sentence starts in the cloud and ends on the local voice. The next one is local too."
        reply = await client.stub.Say(
            session_pb2.SayRequest(session_id=session.session_id, text=text), metadata=control_metadata(session)
        )
        degraded, finished = None, None
        async with asyncio.timeout(60):
            while finished is None:
                event = await watch.read()
                kind = event.WhichOneof("event")
                if kind == "voice_degraded":
                    degraded = event.voice_degraded
                elif kind == "speech_finished" and event.speech_finished.utterance_id == reply.utterance_id:
                    finished = event.speech_finished
        watch.cancel()
        assert degraded is not None and degraded.utterance_id == reply.utterance_id
        assert degraded.fallback_engine and ELEVENLABS_KEY not in degraded.message
        assert finished.reason == session_pb2.FINISH_REASON_COMPLETED
        assert finished.spoken_text == text, "every word was spoken, the rest by the fallback voice"
        await client.end(session)
    finally:
        await client.close()
