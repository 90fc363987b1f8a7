"""services/common/stream.py, the one bidi-stream skeleton: a test service on a real grpc.aio server (127.0.0.1, a
free port, the services' interceptor) speaking the llm's messages, and the outbox on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from avatar.v1 import llm_pb2
from infinitetalk_live_client.avatar.v1 import media_pb2
from services.common.errors import invalid_argument_reason
from services.common.logs import session_id_var
from services.common.server import create_server
from services.common.stream import ClientNotReading, Duplex, End, InvalidRequest, Outbox, Send, Stop, bidi_stream

TIMEOUT_S = 10.0
SERVICE = "test.Skeleton"

Request = llm_pb2.GenerateRequest
Response = llm_pb2.GenerateResponse


def clause(text: str, utterance_id: str = "") -> Response:
    return Response(clause=media_pb2.TextClause(utterance_id=utterance_id, text=text))


class _Echo(Duplex[Request, Response]):
    """Answers each turn with a clause of its text, from the reader or a task of its own; `refuse` is refused, `flood`
    sends more than the client may leave unread, `dropped` is sent and then not admitted."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(Outbox(room=2, max_unread=3))
        self.events = events

    async def start(self) -> None:
        self.spawn(self._idle(), name="idle")

    async def _idle(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.events.append("task cancelled")
            raise

    async def receive(self, request: Request) -> None:
        if request.WhichOneof("request") != "turn":
            raise InvalidRequest("request", "send turns only")
        text = request.turn.text
        if text == "refuse":
            raise InvalidRequest("turn.text", "say something else", reason="refused")
        if text == "flood":
            for n in range(10):
                if not self.outbox.send_nowait(clause(f"flood {n}")):
                    return
            return
        if text == "later":
            self.spawn(self.outbox.send(clause(text)), name="later")
            return
        await self.outbox.send(clause(text), tag=request.turn.utterance_id)

    def admit(self, tag: object, response: Response) -> bool:
        return tag != "dropped"


class Skeleton:
    def __init__(self) -> None:
        self.events: list[str] = []

    @bidi_stream("Sequential")
    async def Sequential(
        self, config: llm_pb2.GenerateConfig, requests: AsyncIterator[Request], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Response]:
        if config.persona == "refuse":
            raise InvalidRequest("config.persona", "pick another persona")
        try:
            yield clause(f"session {session_id_var.get()}")
            async for request in requests:
                if request.turn.text == "refuse":
                    raise InvalidRequest("turn.text", "say something else", reason="refused")
                yield clause(request.turn.text)
        finally:
            self.events.append("body closed")

    @bidi_stream("Lenient", hint=" (a persona)", empty_ok=True)
    async def Lenient(
        self, config: llm_pb2.GenerateConfig, requests: AsyncIterator[Request], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Response]:
        yield clause("configured")

    @bidi_stream("Duplexed")
    async def Duplexed(
        self, config: llm_pb2.GenerateConfig, requests: AsyncIterator[Request], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Response]:
        async for response in _Echo(self.events).responses(requests):
            yield response


@pytest.fixture
async def skeleton() -> AsyncIterator[tuple[Skeleton, grpc.aio.Channel]]:
    servicer = Skeleton()
    methods = ("Sequential", "Lenient", "Duplexed")

    def register(server: grpc.aio.Server) -> None:
        handlers = {
            name: grpc.stream_stream_rpc_method_handler(
                getattr(servicer, name),
                request_deserializer=Request.FromString,
                response_serializer=Response.SerializeToString,
            )
            for name in methods
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    server, port, _health = await create_server("127.0.0.1:0", register, [SERVICE])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, channel
    await channel.close()
    await server.stop(0)


def open_call(channel: grpc.aio.Channel, method: str, metadata=(), raw: bool = False) -> grpc.aio.StreamStreamCall:
    serializer = (lambda data: data) if raw else Request.SerializeToString
    return channel.stream_stream(
        f"/{SERVICE}/{method}", request_serializer=serializer, response_deserializer=Response.FromString
    )(metadata=metadata)


def config(session_id: str = "s-config", persona: str = "") -> Request:
    return Request(config=llm_pb2.GenerateConfig(session_id=session_id, persona=persona))


def turn(text: str, utterance_id: str = "u1") -> Request:
    return Request(turn=llm_pb2.UserTurn(utterance_id=utterance_id, text=text))


async def outcome(call: grpc.aio.StreamStreamCall) -> tuple[list[str], grpc.StatusCode, str]:
    """The clause texts the call received, its status code and details."""
    texts = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async for response in call:
                texts.append(response.clause.text)
    except grpc.aio.AioRpcError:
        pass
    return texts, await call.code(), await call.details()


async def run(channel: grpc.aio.Channel, method: str, requests: list, **options) -> tuple[list[str], grpc.StatusCode]:
    call = open_call(channel, method, **options)
    for request in requests:
        await call.write(request)
    await call.done_writing()
    texts, code, _ = await outcome(call)
    return texts, code


# -- the first message ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "words"),
    [
        (turn("hello"), "the first message of a Sequential stream must be config, not turn"),
        (Request(), "the first message of a Sequential stream must be config, not an empty message"),
        (None, "the first message of a Sequential stream must be config, but the stream ended without one"),
    ],
    ids=["turn", "empty-message", "no-message"],
)
async def test_the_first_message_must_be_config(skeleton, first: Request | None, words: str) -> None:
    servicer, channel = skeleton
    call = open_call(channel, "Sequential")
    if first is not None:
        await call.write(first)
    await call.done_writing()
    texts, code, details = await outcome(call)
    assert (texts, code, details) == ([], grpc.StatusCode.INVALID_ARGUMENT, words)
    error = await _error_of(call)
    assert invalid_argument_reason(error) == ("config", "")
    assert servicer.events == []  # the body never ran


async def _error_of(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    try:
        await call.read()
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call did not fail")


async def test_a_stream_closed_before_its_config_may_end_ok(skeleton) -> None:
    _, channel = skeleton
    assert await run(channel, "Lenient", []) == ([], grpc.StatusCode.OK)
    call = open_call(channel, "Lenient")
    await call.write(turn("hello"))
    _, code, details = await outcome(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "the first message of a Lenient stream must be config (a persona), not turn"


async def test_an_unparseable_first_message_is_invalid_argument(skeleton) -> None:
    _, channel = skeleton
    call = open_call(channel, "Sequential", raw=True)
    await call.write(b"\x80")  # a varint that never ends
    _, code, details = await outcome(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "could not be parsed" in details


# -- the session id ------------------------------------------------------------------------------------------------


async def test_the_configs_session_id_is_bound_unless_the_metadata_has_one(skeleton) -> None:
    _, channel = skeleton
    assert await run(channel, "Sequential", [config("s-config")]) == (["session s-config"], grpc.StatusCode.OK)
    texts, _ = await run(channel, "Sequential", [config("s-config")], metadata=(("x-session-id", "s-meta"),))
    assert texts == ["session s-meta"]
    texts, _ = await run(channel, "Sequential", [config("x" * 100)])
    assert texts == ["session " + "x" * 64]


# -- refusals in a sequential handler ------------------------------------------------------------------------------


async def test_a_refused_config_is_invalid_argument_naming_the_field(skeleton) -> None:
    _, channel = skeleton
    call = open_call(channel, "Sequential")
    await call.write(config(persona="refuse"))
    texts, code, details = await outcome(call)
    assert (texts, code, details) == ([], grpc.StatusCode.INVALID_ARGUMENT, "pick another persona")
    assert invalid_argument_reason(await _error_of(call)) == ("config.persona", "")


async def test_a_refusal_mid_stream_ends_it_after_what_was_sent_and_after_cleanup(skeleton) -> None:
    servicer, channel = skeleton
    call = open_call(channel, "Sequential")
    for request in (config(), turn("one"), turn("refuse"), turn("never read")):
        await call.write(request)
    texts, code, details = await outcome(call)
    assert (texts, code, details) == (
        ["session s-config", "one"],
        grpc.StatusCode.INVALID_ARGUMENT,
        "say something else",
    )
    assert invalid_argument_reason(await _error_of(call)) == ("turn.text", "refused")
    assert servicer.events == ["body closed"]  # the body's cleanup ran before the status went out


async def test_a_sequential_stream_ends_ok_when_the_client_half_closes(skeleton) -> None:
    servicer, channel = skeleton
    texts, code = await run(channel, "Sequential", [config(), turn("one"), turn("two")])
    assert (texts, code) == (["session s-config", "one", "two"], grpc.StatusCode.OK)
    assert servicer.events == ["body closed"]


async def test_a_cancelled_call_closes_the_body(skeleton) -> None:
    servicer, channel = skeleton
    call = open_call(channel, "Sequential")
    await call.write(config())
    assert (await call.read()).clause.text == "session s-config"
    call.cancel()
    async with asyncio.timeout(TIMEOUT_S):
        while servicer.events != ["body closed"]:
            await asyncio.sleep(0.01)


# -- a Duplex: reader task, outbox, tasks ----------------------------------------------------------------------------


async def test_a_duplex_answers_in_order_and_ends_ok_at_half_close(skeleton) -> None:
    servicer, channel = skeleton
    texts, code = await run(channel, "Duplexed", [config(), turn("one"), turn("gone", "dropped"), turn("two")])
    assert (texts, code) == (["one", "two"], grpc.StatusCode.OK)  # "gone" was not admitted
    assert servicer.events == ["task cancelled"]


async def test_a_refusal_read_by_the_duplex_ends_the_stream_with_invalid_argument(skeleton) -> None:
    servicer, channel = skeleton
    call = open_call(channel, "Duplexed")
    for request in (config(), turn("one"), turn("refuse")):
        await call.write(request)
    texts, code, details = await outcome(call)
    assert (texts, code, details) == (["one"], grpc.StatusCode.INVALID_ARGUMENT, "say something else")
    assert invalid_argument_reason(await _error_of(call)) == ("turn.text", "refused")
    assert servicer.events == ["task cancelled"]


async def test_a_client_that_does_not_read_is_resource_exhausted(skeleton) -> None:
    _, channel = skeleton
    call = open_call(channel, "Duplexed")
    for request in (config(), turn("flood")):
        await call.write(request)
    texts, code, details = await outcome(call)
    assert texts == ["flood 0", "flood 1", "flood 2", "flood 3"]  # then more than 3 waited unread
    assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "the client is not reading responses")


async def test_an_unparseable_request_read_by_the_duplex_is_invalid_argument(skeleton) -> None:
    servicer, channel = skeleton
    call = open_call(channel, "Duplexed", raw=True)
    await call.write(config().SerializeToString())
    await call.write(turn("one").SerializeToString())
    await call.write(b"\x80")
    texts, code, details = await outcome(call)
    assert texts == ["one"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "could not be parsed" in details
    assert servicer.events == ["task cancelled"]


async def test_a_cancelled_call_cancels_the_duplexs_tasks(skeleton) -> None:
    servicer, channel = skeleton
    call = open_call(channel, "Duplexed")
    await call.write(config())
    await call.write(turn("later"))
    assert (await asyncio.wait_for(call.read(), TIMEOUT_S)).clause.text == "later"
    call.cancel()
    async with asyncio.timeout(TIMEOUT_S):
        while servicer.events != ["task cancelled"]:
            await asyncio.sleep(0.01)


# -- the outbox ------------------------------------------------------------------------------------------------------


async def test_send_waits_for_room_and_send_nowait_never_waits() -> None:
    outbox: Outbox[str] = Outbox(room=2, max_unread=3)
    await outbox.send("a")
    await outbox.send("b", tag="b's")
    third = asyncio.create_task(outbox.send("c"))
    await asyncio.sleep(0.01)
    assert not third.done()  # two unread: the sender waits
    assert outbox.send_nowait("urgent")
    assert await outbox.take() == Send("a", None, bounded=True)
    await asyncio.wait_for(third, TIMEOUT_S)  # a place was freed
    assert outbox.send_nowait("fits")  # 3 waiting: not more than max_unread
    assert not outbox.send_nowait("too many")  # 4 waiting: the client is not reading
    taken = [await outbox.take() for _ in range(5)]
    assert taken[:4] == [Send("b", "b's", True), Send("urgent"), Send("c", None, True), Send("fits")]
    assert isinstance(taken[4], Stop) and isinstance(taken[4].error, ClientNotReading)


async def test_end_and_stop_never_wait_and_keep_their_place() -> None:
    outbox: Outbox[str] = Outbox(room=1)
    await outbox.send("a")
    outbox.stop(InvalidRequest("field", "message"))
    outbox.end()
    first, stop, end = [await outbox.take() for _ in range(3)]
    assert first == Send("a", None, True) and isinstance(stop, Stop) and end == End()
    assert isinstance(stop.error, InvalidRequest) and stop.error.field == "field"
