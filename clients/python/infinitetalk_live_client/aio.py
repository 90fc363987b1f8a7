"""The asyncio client: the same shape as the blocking one (client.py), with `await` and `async for`.

    from infinitetalk_live_client import AsyncClient

    async with AsyncClient("127.0.0.1:50051", api_key=KEY) as client:
        session = await client.create_session()
        async with session.watch() as events:
            await anext(events)                 # the current state: from here on nothing is missed
            await session.say("Hello there.")
            async for event in events:
                ...

Create the client inside the event loop that uses it (a grpc.aio channel belongs to one loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import grpc

from ._core import (
    CALL_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    SessionFacts,
    attached,
    bearer,
    channel_credentials,
    create_request,
)
from .avatar.v1 import session_pb2, session_pb2_grpc
from .errors import ApiError
from .model import Event, Interruption, event_from_proto


class AsyncClient:
    """A grpc.aio channel to the session service and the API key for CreateSession (see client.Client)."""

    def __init__(
        self,
        address: str,
        api_key: str | None = None,
        *,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: list[tuple[str, Any]] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        creds = channel_credentials(secure, credentials)
        self.channel = (
            grpc.aio.secure_channel(address, creds, options=channel_options)
            if creds is not None
            else grpc.aio.insecure_channel(address, options=channel_options)
        )
        self.stub = session_pb2_grpc.SessionServiceStub(self.channel)
        self.timeout_s = timeout_s
        self._key = bearer(api_key)

    async def create_session(
        self,
        avatar: str = "",
        voice: str = "",
        portrait: bytes | None = None,
        options: session_pb2.SessionOptions | Mapping[str, Any] | None = None,
    ) -> AsyncSession:
        """A new session; see client.Client.create_session."""
        request = create_request(avatar, voice, portrait, options)
        with _api_errors():
            response = await self.stub.CreateSession(request, timeout=self.timeout_s, metadata=self._key)
        return AsyncSession(self, response.session)

    def attach(self, session_id: str, control_token: str) -> AsyncSession:
        """A handle on a session created elsewhere, from its id and control token."""
        return AsyncSession(self, attached(session_id, control_token))

    async def catalog(self) -> session_pb2.GetCatalogResponse:
        with _api_errors():
            return await self.stub.GetCatalog(
                session_pb2.GetCatalogRequest(), timeout=self.timeout_s, metadata=self._key
            )

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def connect_async(address: str, api_key: str | None = None, secure: bool = False, **kwargs: Any) -> AsyncClient:
    """An `AsyncClient`; call it from inside the event loop that will use it."""
    return AsyncClient(address, api_key, secure=secure, **kwargs)


class AsyncSession(SessionFacts):
    """A handle on one session (see client.Session); `async with` ends it on exit."""

    def __init__(self, client: AsyncClient, info: session_pb2.Session) -> None:
        super().__init__(info)
        self._client = client

    async def say(self, text: str, timeout_s: float = CALL_TIMEOUT_S) -> str:
        """Speaks `text` verbatim, cutting any utterance in progress; returns the utterance id at once."""
        with _api_errors():
            reply = await self._client.stub.Say(self._say(text), timeout=timeout_s, metadata=self._auth)
        return reply.utterance_id

    async def chat(self, text: str, timeout_s: float = CALL_TIMEOUT_S) -> str:
        """Answers `text` through the server's LLM; returns the utterance id at once."""
        with _api_errors():
            reply = await self._client.stub.Chat(self._chat(text), timeout=timeout_s, metadata=self._auth)
        return reply.utterance_id

    async def interrupt(self, timeout_s: float = CALL_TIMEOUT_S) -> Interruption:
        with _api_errors():
            reply = await self._client.stub.Interrupt(self._interrupt(), timeout=timeout_s, metadata=self._auth)
        return Interruption(reply.utterance_id, reply.cut_at_us)

    async def end(self, timeout_s: float = CALL_TIMEOUT_S) -> None:
        with _api_errors():
            await self._client.stub.EndSession(self._end(), timeout=timeout_s, metadata=self._auth)

    def watch(self) -> AsyncWatch:
        """The session's events from now on, the first being its current state; `async for` over it."""
        return AsyncWatch(self._client.stub.WatchSession(self._watch(), metadata=self._auth))

    def events(self) -> AsyncWatch:
        """The same as `watch()` (the name the Node client uses)."""
        return self.watch()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(ApiError):
            await self.end()


class AsyncWatch(AsyncIterator[Event]):
    """An open WatchSession stream yielding typed events; `aclose()` (or `async with`) stops it."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as error:
            if self._closed and error.code() == grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise ApiError.from_rpc_error(error) from error
        except grpc.aio.UsageError:  # read after the call was cancelled or finished
            raise StopAsyncIteration from None
        if response is grpc.aio.EOF or self._closed:
            raise StopAsyncIteration
        return event_from_proto(response)

    async def aclose(self) -> None:
        self._closed = True
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as error:
        raise ApiError.from_rpc_error(error) from error
