"""The one skeleton of every bidi stream (LLM Generate, TTS Synthesize, video Render, packager Publish and
PublishVideo), so that a service writes only what is its own and in-stream errors work the same everywhere.

Why: each service used to carry its own copy (first-config check, reader task, an outbox of private sentinels, three
names for a refused request); changing how a stream fails meant learning four protocols. Modelled on grpc's Python
examples (plain `async def` handlers that `async for` requests and `yield` responses) and livekit/agents' streams (the
base owns the loop and its errors, each service implements its part). Two layers, use one or both:

- `@bidi_stream(rpc)` turns `async def Rpc(self, config, requests, context)` into the gRPC handler: it reads the
  first message (INVALID_ARGUMENT naming `config` when it is not one), binds the config's session id to the log
  contextvar, and maps the one in-stream refusal, `InvalidRequest`, raised anywhere in the body (or by a `Duplex`) to
  INVALID_ARGUMENT with google.rpc details (services.common.errors).
- `Duplex` for streams whose requests must be read while responses are being made (a cancel is seen at once): a
  reader task hands each request to `receive`, the service's own tasks `send` into a bounded, typed `Outbox`, and
  `responses()` yields what they sent, in order, until the stream ends; its tasks are always cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import grpc

from services.common.errors import abort_invalid_argument, abort_resource_exhausted
from services.common.logs import session_id_var

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Servicer = TypeVar("Servicer")


class InvalidRequest(Exception):
    """The in-stream refusal: the stream ends with INVALID_ARGUMENT naming `field`; `message` tells the caller what to
    change, `reason` is an optional stable code for programs (the FieldViolation's `reason`)."""

    def __init__(self, field: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.reason = reason


class ClientNotReading(Exception):
    """Too many responses wait unread: the stream ends with RESOURCE_EXHAUSTED."""


# -- the outbox: what a stream's tasks hand its response loop ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send(Generic[Resp]):
    """A response to send; `tag` is the sender's own note for `Duplex.admit` (e.g. the turn it belongs to)."""

    response: Resp
    tag: object = None
    bounded: bool = False  # holds a place of the outbox's room until the response loop takes it


@dataclass(frozen=True, slots=True)
class Stop:
    """Ends the stream with `error`: InvalidRequest and ClientNotReading become statuses, anything else goes up."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class End:
    """Ends the stream normally (status OK) once everything before it went out."""


Event: TypeAlias = Send[Resp] | Stop | End  # what `Outbox.take` gives the response loop


class Outbox(Generic[Resp]):
    """Responses waiting for the client, in order. `send` waits while `room` responses sent that way are unread (the
    sender slows down to the client's pace); `send_nowait` never waits (for a reader that must keep reading), but
    more than `max_unread` waiting responses mean the client has stopped reading, and the stream ends."""

    def __init__(self, room: int, max_unread: int = 1024) -> None:
        self._events: asyncio.Queue[Event[Resp]] = asyncio.Queue()
        self._room = asyncio.Semaphore(room)
        self.max_unread = max_unread

    async def send(self, response: Resp, tag: object = None) -> None:
        await self._room.acquire()
        self._events.put_nowait(Send(response, tag, bounded=True))

    def send_nowait(self, response: Resp, tag: object = None) -> bool:
        """False (and the stream ends with RESOURCE_EXHAUSTED) when the client has stopped reading."""
        if self._events.qsize() > self.max_unread:
            self.stop(ClientNotReading("the client is not reading responses"))
            return False
        self._events.put_nowait(Send(response, tag))
        return True

    def stop(self, error: BaseException) -> None:
        self._events.put_nowait(Stop(error))

    def end(self) -> None:
        self._events.put_nowait(End())

    async def take(self) -> Event[Resp]:
        event = await self._events.get()
        if isinstance(event, Send) and event.bounded:
            self._room.release()
        return event


# -- a stream with its own reader ----------------------------------------------------------------------------------


class Duplex(ABC, Generic[Req, Resp]):
    """One stream's reader, tasks and outbox. A service implements `receive` (one request; may raise InvalidRequest),
    and where needed `start` (spawn its workers), `half_closed` (the client sent its last request; by default the
    stream ends) and `admit` (a last look at each response: False drops it)."""

    def __init__(self, outbox: Outbox[Resp]) -> None:
        self.outbox = outbox
        self._tasks: set[asyncio.Task[Any]] = set()

    @abstractmethod
    async def receive(self, request: Req) -> None: ...

    async def start(self) -> None:
        return None

    async def half_closed(self) -> None:
        self.outbox.end()

    def admit(self, tag: object, response: Resp) -> bool:
        return True

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task of this stream: cancelled and awaited when the stream ends, however it ends."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read(self, requests: AsyncIterator[Req]) -> None:
        try:
            async for request in requests:
                await self.receive(request)
            await self.half_closed()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a refusal, or an unparseable message (the interceptor's INVALID_ARGUMENT)
            self.outbox.stop(error)

    async def responses(self, requests: AsyncIterator[Req]) -> AsyncIterator[Resp]:
        """What the stream's tasks sent, until one of them ends or stops the stream."""
        try:
            await self.start()
            self.spawn(self._read(requests), name="stream-reader")
            while True:
                event = await self.outbox.take()
                if isinstance(event, End):
                    return
                if isinstance(event, Stop):
                    raise event.error
                if self.admit(event.tag, event.response):
                    yield event.response
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


# -- the handler ---------------------------------------------------------------------------------------------------

Body = Callable[[Servicer, Any, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncGenerator[Resp, None]]
Handler = Callable[[Servicer, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncIterator[Resp]]


def bidi_stream(
    rpc: str, *, hint: str = "", empty_ok: bool = False, session_field: str = "session_id"
) -> Callable[[Body[Servicer, Req, Resp]], Handler[Servicer, Req, Resp]]:
    """Makes `async def Rpc(self, config, requests, context)` the handler of a stream whose requests have a oneof
    `request` with `config` first. `hint` says what the config carries, e.g. " (voice, sample rate)"; `empty_ok`: a
    stream closed before any message ends with OK (else INVALID_ARGUMENT); `session_field`: the config's field named
    in logs as `session_id` when the caller's metadata gave none."""

    def decorate(body: Body[Servicer, Req, Resp]) -> Handler[Servicer, Req, Resp]:
        @functools.wraps(body)
        async def handler(
            self: Servicer, request_iterator: AsyncIterator[Req], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Resp]:
            requests = aiter(request_iterator)
            first = await anext(requests, None)
            if first is None and empty_ok:
                return
            kind = first.WhichOneof("request") if first is not None else None  # type: ignore[attr-defined]
            if kind != "config":
                got = "but the stream ended without one" if first is None else f"not {kind or 'an empty message'}"
                await abort_invalid_argument(
                    context, "config", f"the first message of a {rpc} stream must be config{hint}, {got}"
                )
            config = first.config  # type: ignore[union-attr]
            session_id = getattr(config, session_field, "")
            if session_id and not session_id_var.get():
                session_id_var.set(session_id[:64])
            try:
                async with contextlib.aclosing(body(self, config, requests, context)) as responses:
                    async for response in responses:
                        yield response
            except InvalidRequest as refusal:
                await abort_invalid_argument(context, refusal.field, refusal.message, refusal.reason)
            except ClientNotReading as error:
                await abort_resource_exhausted(context, "responses", str(error))

        return handler

    return decorate
