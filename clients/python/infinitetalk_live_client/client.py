"""The blocking client: `connect`, `create_session`, then say / chat / interrupt / end and `watch` on the handle.

    from infinitetalk_live_client import connect

    with connect("127.0.0.1:50051", api_key=KEY) as client, client.create_session() as session:
        with session.watch() as events:
            next(events)                        # the current state: from here on nothing is missed
            utterance = session.say("Hello there.")
            for event in events:
                ...                             # WordSpoken, SpeechFinished... (see model.py)

Every failed call raises `ApiError` (code, message, google.rpc details), whatever gRPC raised underneath.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
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


class Client:
    """A channel to the session service (host:port, or the gateway's gRPC port) and the API key for CreateSession.

    `secure`: TLS with the system's roots; `credentials`: any other channel credentials; `channel_options`: gRPC
    channel options. Close it (or use `with`) when done: the channel holds a connection and threads.
    """

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
            grpc.secure_channel(address, creds, options=channel_options)
            if creds is not None
            else grpc.insecure_channel(address, options=channel_options)
        )
        self.stub = session_pb2_grpc.SessionServiceStub(self.channel)
        self.timeout_s = timeout_s
        self._key = bearer(api_key)

    def create_session(
        self,
        avatar: str = "",
        voice: str = "",
        portrait: bytes | None = None,
        options: session_pb2.SessionOptions | Mapping[str, Any] | None = None,
    ) -> Session:
        """A new session (empty names select the server's defaults). `portrait`: a JPEG, PNG or WebP photo, at most
        8 MiB, to animate instead of a named avatar. `options`: SessionOptions or a mapping of its fields (pacing,
        persona, llm_provider, llm_model)."""
        request = create_request(avatar, voice, portrait, options)
        with _api_errors():
            response = self.stub.CreateSession(request, timeout=self.timeout_s, metadata=self._key)
        return Session(self, response.session)

    def attach(self, session_id: str, control_token: str) -> Session:
        """A handle on a session created elsewhere (e.g. by a backend that passed on its id and control token)."""
        return Session(self, attached(session_id, control_token))

    def catalog(self) -> session_pb2.GetCatalogResponse:
        """The avatars and voices the server offers, and its defaults."""
        with _api_errors():
            return self.stub.GetCatalog(session_pb2.GetCatalogRequest(), timeout=self.timeout_s, metadata=self._key)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    address: str,
    api_key: str | None = None,
    secure: bool = False,
    **kwargs: Any,
) -> Client:
    """A `Client` (the channel connects lazily, on the first call)."""
    return Client(address, api_key, secure=secure, **kwargs)


class Session(SessionFacts):
    """A handle on one session: its facts (see SessionFacts: session_id, control_token, playlist_url...) and the calls
    that steer it, each authorised by its control token. As a context manager it ends the session on exit."""

    def __init__(self, client: Client, info: session_pb2.Session) -> None:
        super().__init__(info)
        self._client = client

    def say(self, text: str, timeout_s: float = CALL_TIMEOUT_S) -> str:
        """Speaks `text` verbatim, cutting any utterance in progress; returns the new utterance's id at once."""
        with _api_errors():
            return self._client.stub.Say(self._say(text), timeout=timeout_s, metadata=self._auth).utterance_id

    def chat(self, text: str, timeout_s: float = CALL_TIMEOUT_S) -> str:
        """Answers `text` through the server's LLM, cutting any utterance in progress; returns the utterance id."""
        with _api_errors():
            return self._client.stub.Chat(self._chat(text), timeout=timeout_s, metadata=self._auth).utterance_id

    def interrupt(self, timeout_s: float = CALL_TIMEOUT_S) -> Interruption:
        """Cuts the utterance in progress; the avatar returns to idle."""
        with _api_errors():
            reply = self._client.stub.Interrupt(self._interrupt(), timeout=timeout_s, metadata=self._auth)
        return Interruption(reply.utterance_id, reply.cut_at_us)

    def end(self, timeout_s: float = CALL_TIMEOUT_S) -> None:
        """Ends the session: its playlist gets EXT-X-ENDLIST, its token dies."""
        with _api_errors():
            self._client.stub.EndSession(self._end(), timeout=timeout_s, metadata=self._auth)

    def watch(self) -> Watch:
        """The session's events from now on, the first being its current state (a StateChanged). Iterate it; close
        it (or use `with`) to stop early. It ends after the session has ended."""
        with _api_errors():
            call = self._client.stub.WatchSession(self._watch(), metadata=self._auth)
        return Watch(call)

    def events(self) -> Watch:
        """The same as `watch()` (the name the Node client uses)."""
        return self.watch()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Ends the session; one that has already ended (or expired) is fine."""
        with contextlib.suppress(ApiError):
            self.end()


class Watch(Iterator[Event]):
    """An open WatchSession stream yielding typed events (model.py)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._closed = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        try:
            response = next(self._call)
        except grpc.RpcError as error:
            if self._closed and _code(error) == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise ApiError.from_rpc_error(error) from error
        return event_from_proto(response)

    def close(self) -> None:
        """Stops the stream (the server drops this watcher)."""
        self._closed = True
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as error:
        raise ApiError.from_rpc_error(error) from error
