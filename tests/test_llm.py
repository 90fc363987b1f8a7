"""The llm service: the offline persona on its own, then Generate through a real in-process gRPC server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import grpc
import pytest

from avatar.v1 import llm_pb2, llm_pb2_grpc
from infinitetalk_live_client.avatar.v1 import media_pb2
from services.common.config import ConfigError
from services.common.server import create_server
from services.llm.config import LlmConfig, build_provider
from services.llm.offline import OfflinePersona
from services.llm.openai import OpenAIChat
from services.llm.provider import ROLE_ASSISTANT, ROLE_USER, ChatProvider, ProviderError
from services.llm.service import MAX_PERSONA_CHARS, MAX_TURN_CHARS, UNEXPECTED_FAILURE, History, LlmServicer
from tests.fakes.openai_server import FakeOpenAI, Reply

TIMEOUT_S = 10.0
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


# -- providers for tests -------------------------------------------------------------------------------------------
class GatedProvider(ChatProvider):
    """Writes "Hello there, my friend. This ..." and then waits for `release` before writing the rest."""

    name = "gated"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.histories: list[list[tuple[str, str]]] = []
        self.closed: list[str] = []  # the user text of each reply whose iterator was closed or finished
        self.finished: list[str] = []

    async def stream_reply(self, history: Sequence[tuple[str, str]], persona: str) -> AsyncIterator[str]:
        self.histories.append(list(history))
        try:
            for delta in ["Hello there, ", "my friend. ", "This "]:
                yield delta
            await self.release.wait()
            for delta in ["is ", "the ", "rest."]:
                yield delta
            self.finished.append(history[-1][1])
        finally:
            self.closed.append(history[-1][1])


class FailingProvider(ChatProvider):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def stream_reply(self, history: Sequence[tuple[str, str]], persona: str) -> AsyncIterator[str]:
        yield "Let me think about that. "
        yield "Well "
        raise self.error


class EndlessProvider(ChatProvider):
    async def stream_reply(self, history: Sequence[tuple[str, str]], persona: str) -> AsyncIterator[str]:
        while True:
            yield "and on "
            await asyncio.sleep(0)


# -- helpers -------------------------------------------------------------------------------------------------------
@pytest.fixture
async def start_llm():
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel]] = []

    async def start(provider: ChatProvider, **options) -> llm_pb2_grpc.LlmServiceStub:
        servicer = LlmServicer(provider, **options)
        server, port, _health = await create_server(
            "127.0.0.1:0",
            lambda s: llm_pb2_grpc.add_LlmServiceServicer_to_server(servicer, s),
            ["avatar.v1.LlmService"],
        )
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return llm_pb2_grpc.LlmServiceStub(channel)

    yield start
    for server, channel in started:
        await channel.close()
        await server.stop(0)


def config(persona: str = "") -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(config=llm_pb2.GenerateConfig(session_id="s-test", persona=persona))


def turn(utterance_id: str, text: str) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(turn=llm_pb2.UserTurn(utterance_id=utterance_id, text=text))


def cancel(utterance_id: str) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(cancel=media_pb2.CancelUtterance(utterance_id=utterance_id))


async def open_stream(stub: llm_pb2_grpc.LlmServiceStub, persona: str = "") -> grpc.aio.StreamStreamCall:
    call = stub.Generate(metadata=(("x-session-id", "s-test"),))
    await call.write(config(persona))
    return call


async def read(call: grpc.aio.StreamStreamCall) -> llm_pb2.GenerateResponse:
    response = await asyncio.wait_for(call.read(), TIMEOUT_S)
    assert response is not grpc.aio.EOF, "stream ended unexpectedly"
    return response


async def read_until_end(call: grpc.aio.StreamStreamCall, utterance_id: str) -> list[llm_pb2.GenerateResponse]:
    """Responses up to and including the TurnDone or UtteranceError of `utterance_id`."""
    out = []
    while True:
        response = await read(call)
        out.append(response)
        kind = response.WhichOneof("response")
        if kind in ("done", "error") and getattr(response, kind).utterance_id == utterance_id:
            return out


def clause_texts(responses: list[llm_pb2.GenerateResponse], utterance_id: str) -> list[str]:
    return [
        r.clause.text
        for r in responses
        if r.WhichOneof("response") == "clause" and r.clause.utterance_id == utterance_id
    ]


def utterance_of(response: llm_pb2.GenerateResponse) -> str:
    return getattr(response, response.WhichOneof("response")).utterance_id


async def wait_for(condition, what: str) -> None:
    for _ in range(int(TIMEOUT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# -- the offline persona -------------------------------------------------------------------------------------------
def test_persona_is_deterministic_and_varies_with_the_conversation() -> None:
    persona = OfflinePersona(token_delay_s=0)
    history = [(ROLE_USER, "The weather was nice yesterday")]
    assert persona.reply(history, "") == persona.reply(list(history), "")
    replies = {persona.reply([(ROLE_USER, f"I like topic number {i}")], "") for i in range(12)}
    assert len(replies) > 1


def test_persona_remembers_the_users_name() -> None:
    persona = OfflinePersona(token_delay_s=0)
    assert "haven't told me your name" in persona.reply([(ROLE_USER, "what is my name?")], "")
    history = [
        (ROLE_USER, "Hi, my name is Ada."),
        (ROLE_ASSISTANT, "Nice to meet you."),
        (ROLE_USER, "What's my name?"),
    ]
    assert "Ada" in persona.reply(history, "")
    assert "Ada" in persona.reply([*history[:2], (ROLE_USER, "goodbye!")], "")


def test_persona_is_honest_about_what_it_is_and_takes_its_name_from_the_persona() -> None:
    persona = OfflinePersona(token_delay_s=0)
    reply = persona.reply([(ROLE_USER, "Who are you?")], "")
    assert "not a real language model" in reply
    assert "I'm Max" in persona.reply([(ROLE_USER, "who are you")], "You are Max, a cheerful pirate.")


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("Hello!", "Hello"),
        ("How are you?", "doing well"),
        ("Thank you so much", "welcome"),
        ("Bye for now", "Goodbye"),
        ("I feel sad about my job", "sad about your job"),
        ("I want to see my family", "to see your family"),
        ("You are silly", "I am silly"),
        ("I think you don't like me", "I don't like you"),
    ],
)
def test_persona_patterns(said: str, expected: str) -> None:
    reply = OfflinePersona(token_delay_s=0).reply([(ROLE_USER, said)], "")
    assert expected.lower() in reply.lower()
    assert len(reply.split()) >= 5


def test_persona_tells_time_and_date_from_its_clock() -> None:
    clock = lambda: datetime(2024, 3, 5, 14, 7, tzinfo=UTC)  # noqa: E731
    persona = OfflinePersona(token_delay_s=0, clock=clock)
    assert "2:07 PM" in persona.reply([(ROLE_USER, "What time is it?")], "")
    assert "Tuesday, March 5, 2024" in persona.reply([(ROLE_USER, "What's the date today?")], "")


async def test_persona_streams_word_by_word() -> None:
    persona = OfflinePersona(token_delay_s=0)
    history = [(ROLE_USER, "I feel tired today")]
    deltas = [delta async for delta in persona.stream_reply(history, "")]
    assert len(deltas) == len(persona.reply(history, "").split()) > 3
    assert "".join(deltas).strip() == persona.reply(history, "")


def test_history_keeps_to_its_budget_dropping_the_oldest() -> None:
    history = History(budget_chars=20)
    for text in ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"]:
        history.add(ROLE_USER, text)
    assert [text for _, text in history.snapshot()] == ["bbbbbbbbbb", "cccccccccc"]
    history.add(ROLE_USER, "x" * 50)  # the newest entry always stays, even over budget
    assert history.snapshot() == [(ROLE_USER, "x" * 50)]


def test_unknown_provider_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDER", "gpt-9000")
    with pytest.raises(ConfigError, match="LLM_PROVIDER"):
        LlmConfig.from_env()
    monkeypatch.setenv("LLM_PROVIDER", "offline")
    monkeypatch.setenv("LLM_OFFLINE_TOKEN_DELAY_MS", "3")
    provider = build_provider(LlmConfig.from_env())
    assert isinstance(provider, OfflinePersona) and provider.token_delay_s == pytest.approx(0.003)


# -- Generate over gRPC --------------------------------------------------------------------------------------------
async def test_turn_streams_clauses_then_done(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0.001))
    call = await open_stream(stub)
    await call.write(turn("u1", "Hello!"))
    responses = await read_until_end(call, "u1")
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"clause"} and len(kinds) >= 3
    assert [r.clause.clause_index for r in responses[:-1]] == list(range(len(responses) - 1))
    assert responses[-1].done.clause_count == len(responses) - 1
    expected = OfflinePersona(token_delay_s=0).reply([(ROLE_USER, "Hello!")], "")
    assert " ".join(clause_texts(responses, "u1")) == expected
    call.cancel()


async def test_first_clause_arrives_while_the_reply_is_still_being_written(start_llm) -> None:
    provider = GatedProvider()
    stub = await start_llm(provider)
    call = await open_stream(stub)
    await call.write(turn("u1", "Say something"))
    first = await read(call)  # the provider is blocked mid-reply until we release it
    assert first.clause.text == "Hello there, my friend." and first.clause.clause_index == 0
    assert provider.finished == []
    provider.release.set()
    rest = await read_until_end(call, "u1")
    assert clause_texts(rest, "u1") == ["This is the rest."]
    assert rest[-1].done.clause_count == 2
    call.cancel()


async def test_cancel_stops_the_turn_and_remembers_what_was_sent(start_llm) -> None:
    provider = GatedProvider()
    stub = await start_llm(provider)
    call = await open_stream(stub)
    await call.write(turn("u1", "first question"))
    assert (await read(call)).clause.utterance_id == "u1"
    await call.write(cancel("u1"))
    await wait_for(lambda: provider.closed == ["first question"], "the provider's reply to be closed")
    provider.release.set()  # had the turn not been stopped, this would let its rest out
    await call.write(turn("u2", "second question"))
    after = await read_until_end(call, "u2")
    assert {utterance_of(r) for r in after} == {"u2"}
    assert provider.finished == ["second question"]
    assert provider.histories[-1] == [
        (ROLE_USER, "first question"),
        (ROLE_ASSISTANT, "Hello there, my friend."),
        (ROLE_USER, "second question"),
    ]
    call.cancel()


async def test_new_turn_cancels_the_previous_one(start_llm) -> None:
    provider = GatedProvider()
    stub = await start_llm(provider)
    call = await open_stream(stub)
    await call.write(turn("u1", "first"))
    assert (await read(call)).clause.utterance_id == "u1"
    await call.write(turn("u2", "second"))
    await wait_for(lambda: "first" in provider.closed, "the first reply to be closed")
    assert (await read(call)).clause.utterance_id == "u2"
    provider.release.set()
    rest = await read_until_end(call, "u2")
    assert {utterance_of(r) for r in rest} == {"u2"}
    assert provider.finished == ["second"]  # the first reply never finished
    call.cancel()


async def test_cancel_of_unknown_utterance_is_harmless(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0))
    call = await open_stream(stub)
    await call.write(cancel("nope"))
    await call.write(turn("u1", "hello"))
    responses = await read_until_end(call, "u1")
    assert responses[-1].WhichOneof("response") == "done"
    call.cancel()


async def test_history_shapes_the_reply(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0.001))
    call = await open_stream(stub)
    await call.write(turn("u1", "Hi, my name is Ada."))
    first = clause_texts(await read_until_end(call, "u1"), "u1")
    assert "Ada" in " ".join(first)
    await call.write(turn("u2", "What is my name?"))
    second = " ".join(clause_texts(await read_until_end(call, "u2"), "u2"))
    assert "Your name is Ada" in second
    # another stream (another session) has its own memory
    other = await open_stream(stub)
    await other.write(turn("v1", "What is my name?"))
    assert "Ada" not in " ".join(clause_texts(await read_until_end(other, "v1"), "v1"))
    call.cancel()
    other.cancel()


async def test_persona_from_config_is_used(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0))
    call = await open_stream(stub, persona="You are Max, a cheerful pirate.")
    await call.write(turn("u1", "Who are you?"))
    assert "I'm Max" in " ".join(clause_texts(await read_until_end(call, "u1"), "u1"))
    call.cancel()


async def test_first_message_must_be_config(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0))
    call = stub.Generate()
    await call.write(turn("u1", "hello"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config" in caught.value.details()


async def test_overlong_persona_is_rejected(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0))
    call = await open_stream(stub, persona="x" * (MAX_PERSONA_CHARS + 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_PERSONA_CHARS) in caught.value.details()


async def test_bad_turns_get_utterance_errors_and_the_stream_survives(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0))
    call = await open_stream(stub)
    await call.write(turn("empty", "   \n "))
    error = (await read(call)).error
    assert (error.utterance_id, error.code) == ("empty", INVALID_ARGUMENT) and "empty" in error.message
    await call.write(turn("long", "word " * (MAX_TURN_CHARS // 4)))
    error = (await read(call)).error
    assert (error.utterance_id, error.code) == ("long", INVALID_ARGUMENT) and str(MAX_TURN_CHARS) in error.message
    await call.write(turn("", "no id"))
    assert (await read(call)).error.code == INVALID_ARGUMENT
    await call.write(config())
    assert "config" in (await read(call)).error.message
    await call.write(llm_pb2.GenerateRequest())
    assert (await read(call)).error.code == INVALID_ARGUMENT
    await call.write(turn("ok", "Hello!"))
    responses = await read_until_end(call, "ok")
    assert responses[-1].WhichOneof("response") == "done" and responses[-1].done.clause_count >= 1
    call.cancel()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
        (ProviderError(grpc.StatusCode.UNAVAILABLE, "backend unreachable"), grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_provider_failure_ends_the_turn_not_the_stream(start_llm, error, code) -> None:
    stub = await start_llm(FailingProvider(error))
    call = await open_stream(stub)
    for utterance_id in ("u1", "u2"):
        await call.write(turn(utterance_id, "hello"))
        responses = await read_until_end(call, utterance_id)
        assert clause_texts(responses, utterance_id) == ["Let me think about that."]
        last = responses[-1]
        assert last.WhichOneof("response") == "error" and last.error.code == code.value[0]
    call.cancel()


async def test_endless_reply_is_cut_at_the_limit(start_llm) -> None:
    stub = await start_llm(EndlessProvider(), max_reply_chars=300)
    call = await open_stream(stub)
    await call.write(turn("u1", "go on"))
    responses = await read_until_end(call, "u1")
    assert responses[-1].WhichOneof("response") == "done"
    assert 250 <= len(" ".join(clause_texts(responses, "u1"))) <= 300
    call.cancel()


async def test_stalled_provider_times_out(start_llm) -> None:
    provider = GatedProvider()  # never released
    stub = await start_llm(provider, turn_timeout_s=0.3)
    call = await open_stream(stub)
    await call.write(turn("u1", "hello"))
    responses = await read_until_end(call, "u1")
    assert responses[-1].error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert provider.closed == ["hello"]
    call.cancel()


async def test_half_close_lets_the_turn_finish(start_llm) -> None:
    stub = await start_llm(OfflinePersona(token_delay_s=0.001))
    call = await open_stream(stub)
    await call.write(turn("u1", "How are you?"))
    await call.done_writing()
    responses = [r async for r in call]
    assert responses[-1].WhichOneof("response") == "done"
    assert await call.code() == grpc.StatusCode.OK


async def test_client_cancel_closes_the_provider(start_llm) -> None:
    provider = GatedProvider()
    stub = await start_llm(provider)
    call = await open_stream(stub)
    await call.write(turn("u1", "hello"))
    await read(call)
    call.cancel()
    await wait_for(lambda: provider.closed == ["hello"], "the provider's reply to be closed")


# -- what a failed turn tells the client (services.common.scrub) ---------------------------------------------------
LEAKY_KEY = "sk-live-abcdef1234567890"


def all_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records)


async def test_an_unexpected_failure_reaches_the_client_as_a_fixed_sentence(start_llm, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    error = RuntimeError(f"pool to 10.0.0.7:5432 failed (Authorization: Bearer {LEAKY_KEY})")
    stub = await start_llm(FailingProvider(error))
    call = await open_stream(stub)
    await call.write(turn("u1", "hello"))
    last = (await read_until_end(call, "u1"))[-1]
    call.cancel()
    assert last.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert last.error.message == UNEXPECTED_FAILURE  # neither the exception's text nor its type
    logged = [record for record in caplog.records if record.getMessage() == "provider failed"]
    assert logged and "10.0.0.7:5432" in logged[0].error and "RuntimeError" in logged[0].error  # the detail: logs
    assert LEAKY_KEY not in all_logged(caplog)


async def test_a_providers_own_message_loses_addresses_and_keys(start_llm) -> None:
    said = f"backend http://10.0.0.8:9000/v1 unreachable (key {LEAKY_KEY}); try again"
    stub = await start_llm(FailingProvider(ProviderError(grpc.StatusCode.UNAVAILABLE, said)))
    call = await open_stream(stub)
    await call.write(turn("u1", "hello"))
    error = (await read_until_end(call, "u1"))[-1].error
    call.cancel()
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert error.message == "backend [address] unreachable (key [redacted]); try again"


async def first_error(start_llm, base_url: str):
    """The error of one turn, through the real SDK pointed at `base_url` with a key that must not leak."""
    provider = OpenAIChat(api_key=LEAKY_KEY, base_url=base_url, model="m", max_retries=0)
    try:
        stub = await start_llm(provider)
        call = await open_stream(stub)
        await call.write(turn("u1", "hello"))
        error = (await read_until_end(call, "u1"))[-1].error
        call.cancel()
    finally:
        await provider.aclose()
    return error


async def test_an_openai_error_reaches_the_client_scrubbed(start_llm, caplog) -> None:
    """Through the real SDK against a local server: what the provider says keeps its words, not its addresses or
    keys; the operator's log has the address, never the key."""
    caplog.set_level(logging.DEBUG)
    said = f"upstream http://10.2.3.4:8001/generate refused key {LEAKY_KEY} (Authorization: Bearer {LEAKY_KEY})"
    async with FakeOpenAI(Reply.error(500, said, "server_error")) as server:
        error = await first_error(start_llm, server.base_url)
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "the LLM provider failed (500)" in error.message and "refused key" in error.message
    assert not [part for part in ("10.2.3.4", "8001", "abcdef1234567890", "127.0.0.1") if part in error.message]
    logged = all_logged(caplog)
    assert "10.2.3.4:8001" in logged and LEAKY_KEY not in logged and "abcdef1234567890" not in logged


async def test_an_unreachable_provider_does_not_say_where_it_is(start_llm, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server = FakeOpenAI()
    await server.start()
    await server.stop()  # nothing listens on its port any more
    error = await first_error(start_llm, server.base_url)
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0] and error.message == "could not reach the LLM provider"
    assert server.base_url.rstrip("/") in all_logged(caplog)  # where it tried: for the operator
