"""The OpenAI-compatible provider, driven through the real `openai` SDK against a local server speaking the real
chat-completions wire protocol (tests/fakes/openai_server.py), and through a real in-process LlmServicer."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import grpc
import pytest

from avatar.v1 import llm_pb2, llm_pb2_grpc
from services.common.clauses import ClauseSplitter, split_clauses
from services.common.config import ConfigError
from services.common.server import create_server
from services.llm.config import LlmConfig, build_provider, build_providers
from services.llm.offline import OfflinePersona
from services.llm.openai import DEFAULT_PERSONA, OpenAIChat, retry_after_s, scrub
from services.llm.service import LlmServicer
from tests.fakes.openai_server import FakeOpenAI, Reply, tokens
from tests.test_llm import cancel, clause_texts, open_stream, read, read_until_end, turn

KEY = "sk-test-SECRET123"
ANSWER = (
    "Hello there, my friend. The answer is 3.5 percent, e.g. about 1,000 people. See https://example.com/a.b for more."
)


def code_of(status: grpc.StatusCode) -> int:
    return status.value[0]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(Reply(text=ANSWER)) as server:
        yield server


@pytest.fixture
async def start_llm():
    """Starts an LlmServicer in process; returns (stub, provider)."""
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel, OpenAIChat]] = []

    async def start(server: FakeOpenAI, *, history_chars: int = 8000, default: str = "openai", **options):
        provider = OpenAIChat(
            api_key=options.pop("api_key", KEY),
            base_url=server.base_url,
            model=options.pop("model", "test-model"),
            timeout_s=options.pop("timeout_s", 5.0),
            stall_timeout_s=options.pop("stall_timeout_s", 5.0),
            max_retries=options.pop("max_retries", 3),
            backoff_base_s=0.01,
        )
        offline = OfflinePersona(token_delay_s=0)
        providers = {"openai": provider, "offline": offline}
        servicer = LlmServicer(providers[default], providers=providers, history_chars=history_chars, **options)
        grpc_server, port, _health = await create_server(
            "127.0.0.1:0",
            lambda s: llm_pb2_grpc.add_LlmServiceServicer_to_server(servicer, s),
            ["avatar.v1.LlmService"],
        )
        await grpc_server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((grpc_server, channel, provider))
        return llm_pb2_grpc.LlmServiceStub(channel)

    yield start
    for grpc_server, channel, provider in started:
        await channel.close()
        await grpc_server.stop(0)
        await provider.aclose()


async def error_of(call: grpc.aio.StreamStreamCall, utterance_id: str) -> llm_pb2.GenerateResponse:
    responses = await read_until_end(call, utterance_id)
    assert responses[-1].WhichOneof("response") == "error", responses
    return responses[-1]


async def speaks(call: grpc.aio.StreamStreamCall, utterance_id: str, text: str = "Hi.") -> str:
    await call.write(turn(utterance_id, text))
    responses = await read_until_end(call, utterance_id)
    assert responses[-1].WhichOneof("response") == "done", responses
    return " ".join(clause_texts(responses, utterance_id))


# -- a Chat turn end to end ----------------------------------------------------------------------------------------
async def test_first_clause_arrives_while_the_model_is_still_streaming(fake, start_llm) -> None:
    fake.script(Reply.slow_after_first_sentence(ANSWER, pause_s=0.5))
    stub = await start_llm(fake)
    call = await open_stream(stub, persona="You are Max.")
    await call.write(turn("u1", "Tell me something."))
    first = await read(call)
    assert first.clause.text == "Hello there, my friend."
    assert len(fake.requests) == 1 and not fake.requests[0].completed  # the fake is still streaming
    rest = await read_until_end(call, "u1")
    texts = [first.clause.text, *clause_texts(rest, "u1")]
    assert " ".join(texts) == ANSWER  # the spoken words are exactly the model's
    assert "3.5" in " ".join(texts) and any("https://example.com/a.b" in t for t in texts)
    assert rest[-1].done.clause_count == len(texts)
    body = fake.requests[0].body
    assert body["stream"] is True and body["model"] == "test-model"
    assert body["messages"] == [
        {"role": "system", "content": "You are Max."},
        {"role": "user", "content": "Tell me something."},
    ]
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    call.cancel()


async def test_history_goes_upstream_on_the_next_turn_trimmed_to_the_budget(fake, start_llm) -> None:
    fake.default = Reply(text="Reply number one.")
    stub = await start_llm(fake, history_chars=60)
    call = await open_stream(stub)
    assert await speaks(call, "u1", "First question?") == "Reply number one."
    fake.default = Reply(text="Reply number two.")
    assert await speaks(call, "u2", "Second question?") == "Reply number two."
    assert fake.requests[1].messages == [
        {"role": "system", "content": DEFAULT_PERSONA},
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": "Reply number one."},
        {"role": "user", "content": "Second question?"},
    ]
    await speaks(call, "u3", "A third and much longer question?")  # 17+16+17+33 > 60: the oldest two go
    assert fake.requests[2].messages[1:] == [
        {"role": "assistant", "content": "Reply number two."},
        {"role": "user", "content": "A third and much longer question?"},
    ]
    call.cancel()


# -- interrupts ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["cancel", "new turn", "client gone"])
async def test_interrupt_closes_the_upstream_connection_at_once(fake, start_llm, how) -> None:
    fake.script(Reply.slow_after_first_sentence(ANSWER, pause_s=30))
    stub = await start_llm(fake)
    call = await open_stream(stub)
    await call.write(turn("u1", "Talk for a long time."))
    assert (await read(call)).clause.utterance_id == "u1"
    sent_at = time.monotonic()
    if how == "cancel":
        await call.write(cancel("u1"))
    elif how == "new turn":
        await call.write(turn("u2", "Stop, something else."))
    else:
        call.cancel()
    request = await fake.wait_disconnect(timeout_s=5)
    assert request is fake.requests[0] and not request.completed
    assert request.disconnected_at - sent_at < 0.3
    if how == "new turn":
        assert (await speaks(call, "u3")).startswith("Hello there")
        assert fake.requests[1].messages[-2:] == [
            {"role": "assistant", "content": "Hello there, my friend."},  # only what was sent is remembered
            {"role": "user", "content": "Stop, something else."},
        ]
        call.cancel()


# -- failures ------------------------------------------------------------------------------------------------------
async def test_401_is_a_clear_error_and_the_stream_stays_usable(fake, start_llm) -> None:
    fake.script(Reply.error(401, f"Incorrect API key provided: {KEY}.", code="invalid_api_key"))
    stub = await start_llm(fake)
    call = await open_stream(stub)
    await call.write(turn("u1", "Hello?"))
    error = (await error_of(call, "u1")).error
    assert error.code == code_of(grpc.StatusCode.UNAUTHENTICATED)
    assert error.message == "the LLM provider rejected the API key (401)"
    assert len(fake.requests) == 1  # not retried
    assert (await speaks(call, "u2")).startswith("Hello there")
    call.cancel()


async def test_429_with_retry_after_is_retried_then_spoken(fake, start_llm) -> None:
    fake.script(
        Reply.error(429, "Rate limit reached", "requests", "rate_limit_exceeded", headers={"Retry-After": "0.2"})
    )
    stub = await start_llm(fake)
    call = await open_stream(stub)
    started = time.monotonic()
    assert await speaks(call, "u1") == ANSWER
    assert len(fake.requests) == 2
    assert fake.requests[1].received_at - started >= 0.2  # Retry-After was honoured
    call.cancel()


S = grpc.StatusCode


@pytest.mark.parametrize(
    ("reply", "code", "requests"),
    [
        (Reply.error(500, "The server had an error", "server_error"), S.UNAVAILABLE, 3),
        (Reply.error(429, "Slow down", "requests", headers={"retry-after-ms": "10"}), S.RESOURCE_EXHAUSTED, 3),
        (Reply.error(429, "Out of quota", "insufficient_quota", "insufficient_quota"), S.RESOURCE_EXHAUSTED, 1),
        (Reply.error(403, "Project does not have access", "permission_error"), S.PERMISSION_DENIED, 1),
        (Reply.error(404, "The model `nope` does not exist", code="model_not_found"), S.NOT_FOUND, 1),
        (Reply.error(400, "This model's maximum context length is 8192 tokens"), S.INVALID_ARGUMENT, 1),
    ],
)  # fmt: skip
async def test_http_errors_map_to_codes_after_the_right_number_of_attempts(
    fake, start_llm, reply, code, requests
) -> None:
    fake.script(*[reply] * 5)
    stub = await start_llm(fake, max_retries=2)
    call = await open_stream(stub)
    await call.write(turn("u1", "Hello?"))
    error = (await error_of(call, "u1")).error
    assert error.code == code_of(code)
    assert reply.error_message in error.message  # the provider's own words, for a person to act on
    assert len(fake.requests) == requests
    fake._script.clear()
    assert await speaks(call, "u2") == ANSWER
    call.cancel()


async def test_unreachable_provider_is_unavailable(start_llm) -> None:
    server = FakeOpenAI()
    await server.start()
    await server.stop()  # nothing listens on its port any more
    stub = await start_llm(server, max_retries=1)
    call = await open_stream(stub)
    await call.write(turn("u1", "Hello?"))
    error = (await error_of(call, "u1")).error
    assert error.code == code_of(grpc.StatusCode.UNAVAILABLE) and "could not reach" in error.message
    call.cancel()


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        (Reply(text=ANSWER, malformed_at=8), S.INTERNAL, "the LLM provider sent a malformed stream chunk"),
        (Reply(text=ANSWER, error_event_at=8), S.UNKNOWN, "The server had an error"),
    ],
)  # fmt: skip
async def test_bad_stream_ends_the_turn_and_the_stream_stays_usable(fake, start_llm, reply, code, message) -> None:
    fake.script(reply)
    stub = await start_llm(fake)
    call = await open_stream(stub)
    await call.write(turn("u1", "Hello?"))
    responses = await read_until_end(call, "u1")
    assert clause_texts(responses, "u1") == ["Hello there, my friend."]  # what came before the bad chunk
    assert responses[-1].error.code == code_of(code) and message in responses[-1].error.message
    assert await speaks(call, "u2") == ANSWER
    call.cancel()


async def test_stalled_stream_times_out_within_the_stall_deadline(fake, start_llm) -> None:
    fake.script(Reply(text=ANSWER, stall_at=8))
    stub = await start_llm(fake, timeout_s=2.0, stall_timeout_s=0.3)
    call = await open_stream(stub)
    await call.write(turn("u1", "Hello?"))
    first = await read(call)
    assert first.clause.text == "Hello there, my friend."
    got_first = time.monotonic()
    error = (await error_of(call, "u1")).error
    assert error.code == code_of(grpc.StatusCode.DEADLINE_EXCEEDED) and "0.3 s" in error.message
    assert time.monotonic() - got_first < 0.3 + 0.4
    assert (await fake.wait_disconnect()).disconnected_at is not None  # and the stalled request was dropped
    assert await speaks(call, "u2") == ANSWER
    call.cancel()


async def test_silent_upstream_times_out_within_the_first_byte_deadline(fake, start_llm) -> None:
    fake.script(Reply(text=ANSWER, first_byte_delay_s=30))
    stub = await start_llm(fake, timeout_s=0.4, stall_timeout_s=5.0)
    call = await open_stream(stub)
    started = time.monotonic()
    await call.write(turn("u1", "Hello?"))
    error = (await error_of(call, "u1")).error
    assert error.code == code_of(grpc.StatusCode.DEADLINE_EXCEEDED) and "0.4 s" in error.message
    assert 0.4 <= time.monotonic() - started < 0.4 + 0.5
    assert len(fake.requests) == 1  # a deadline is not retried
    call.cancel()


async def test_the_api_key_appears_in_no_log_record_and_no_error(fake, start_llm, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpcore", "httpx2", "httpcore2", "services", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    fake.script(
        Reply.error(401, f"Incorrect API key provided: {KEY}", code="invalid_api_key"),
        Reply.error(400, f"bad request from key {KEY} with header Authorization: Bearer {KEY}"),
        Reply.error(500, f"upstream saw {KEY}", "server_error"),
        Reply.error(500, f"upstream saw {KEY}", "server_error"),
        Reply(text=ANSWER, malformed_at=3),
    )
    stub = await start_llm(fake, max_retries=1)
    call = await open_stream(stub)
    messages = []
    for index in range(4):
        await call.write(turn(f"u{index}", "Hello?"))
        messages.append((await read_until_end(call, f"u{index}"))[-1].error.message)
    assert await speaks(call, "ok") == ANSWER
    call.cancel()
    assert any("Bearer [redacted]" in message for message in messages), messages
    assert not [message for message in messages if "SECRET123" in message]
    assert any(record.name.startswith(("openai", "httpx", "httpcore")) for record in caplog.records)
    leaks = [
        record
        for record in caplog.records
        if "SECRET123" in record.getMessage() or "SECRET123" in repr(record.__dict__)
    ]
    assert not leaks, leaks


# -- per-session provider and model --------------------------------------------------------------------------------
async def test_a_session_can_choose_the_provider_and_model(fake, start_llm) -> None:
    stub = await start_llm(fake, default="offline")
    call = stub.Generate()
    await call.write(llm_pb2.GenerateRequest(config=llm_pb2.GenerateConfig(provider="openai", model="llama-3.1-8b")))
    assert await speaks(call, "u1") == ANSWER
    assert fake.requests[0].body["model"] == "llama-3.1-8b"
    call.cancel()
    offline = await open_stream(stub)  # empty provider: the service's default (offline here)
    assert "Nova" in await speaks(offline, "u1", "Hello!")
    assert len(fake.requests) == 1
    offline.cancel()


async def test_an_unknown_or_unavailable_provider_is_refused(fake, start_llm) -> None:
    stub = await start_llm(fake)
    call = stub.Generate()
    await call.write(llm_pb2.GenerateRequest(config=llm_pb2.GenerateConfig(provider="gpt-9000")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), 10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.provider" in caught.value.details() and "openai" in caught.value.details()

    servicer = LlmServicer(
        OfflinePersona(token_delay_s=0), unavailable={"openai": "OPENAI_API_KEY is required for the openai provider"}
    )
    server, port, _ = await create_server(
        "127.0.0.1:0", lambda s: llm_pb2_grpc.add_LlmServiceServicer_to_server(servicer, s), ["avatar.v1.LlmService"]
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = llm_pb2_grpc.LlmServiceStub(channel).Generate()
        await call.write(llm_pb2.GenerateRequest(config=llm_pb2.GenerateConfig(provider="openai")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call.read(), 10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "OPENAI_API_KEY" in caught.value.details()
    await server.stop(0)


# -- configuration -------------------------------------------------------------------------------------------------
def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_MODEL", "LLM_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)


async def test_openai_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_env(monkeypatch)
    monkeypatch.setenv("LLM_PROVIDER", "openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        LlmConfig.from_env()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")  # a local server (Ollama) needs no key
    monkeypatch.setenv("LLM_MODEL", "llama3.2")
    provider = build_provider(LlmConfig.from_env())
    assert isinstance(provider, OpenAIChat) and provider.model == "llama3.2"
    assert provider.base_url == "http://127.0.0.1:11434/v1"
    await provider.aclose()
    monkeypatch.setenv("OPENAI_BASE_URL", "not a url")
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        LlmConfig.from_env()
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("LLM_TIMEOUT_S", "0")
    with pytest.raises(ConfigError, match="LLM_TIMEOUT_S"):
        LlmConfig.from_env()
    monkeypatch.setenv("LLM_TIMEOUT_S", "12")
    config = LlmConfig.from_env()
    assert KEY not in repr(config) and config.timeout_s == 12
    provider = build_provider(config)
    assert KEY not in repr(provider) and provider.base_url.startswith("https://api.openai.com")
    await provider.aclose()


async def test_offline_default_offers_openai_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_env(monkeypatch)
    providers, unavailable = build_providers(LlmConfig.from_env())
    assert set(providers) == {"offline"} and "OPENAI_API_KEY" in unavailable["openai"]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    providers, unavailable = build_providers(LlmConfig.from_env())
    assert set(providers) == {"offline", "openai"} and not unavailable
    await providers["openai"].aclose()


# -- pieces --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        ANSWER,
        "Dr. Smith paid $1,299.99 on Jan. 5 at 3:30 p.m. Then he left... quietly — or so it seemed!",
        "Visit www.example.org/path?q=1.5&x=2 or mail me@example.com, okay? No. 7 is next, i.e. the U.S. one.",
        "  Leading spaces, then a list:\n\n1. first\n2. second",
    ],
)
def test_token_deltas_split_like_the_whole_text(text: str) -> None:
    """Model tokens cut words and numbers anywhere and carry leading spaces; clauses must not depend on that."""
    expected = split_clauses(text)
    for pieces in (tokens(text), list(text), _random_cuts(text, seed=len(text))):
        splitter = ClauseSplitter()
        got = [clause for piece in pieces for clause in splitter.feed(piece)] + splitter.flush()
        assert got == expected
    assert " ".join(expected) == " ".join(text.split())


def _random_cuts(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, len(text) // 3)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def test_retry_after_in_seconds_milliseconds_or_a_date() -> None:
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now.timestamp()) == pytest.approx(7)
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_scrub_removes_keys_and_bearer_tokens() -> None:
    text = scrub(f"key {KEY} header Authorization: Bearer abc.def and sk-proj-AbCdEf123456\nnext", KEY)
    assert "SECRET123" not in text and "abc.def" not in text and "AbCdEf123456" not in text
    assert "\n" not in text and "[redacted]" in text
    assert len(scrub("x" * 5000)) <= 300
