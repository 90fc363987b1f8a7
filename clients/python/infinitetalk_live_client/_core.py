"""What the sync and the asyncio clients share: credentials as metadata, request building, the session's facts.

Two credentials, never mixed up: the API key goes only on CreateSession (and GetCatalog); every call on a session
carries that session's own control token. A backend keeps the key and may hand a browser the token and the
playlist URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import grpc

from .avatar.v1 import session_pb2

Metadata = tuple[tuple[str, str], ...]

DEFAULT_TIMEOUT_S = 30.0  # CreateSession prepares a portrait and starts a pipeline: seconds, not milliseconds
CALL_TIMEOUT_S = 10.0


def bearer(secret: str | None) -> Metadata | None:
    return (("authorization", f"Bearer {secret}"),) if secret else None


def channel_credentials(secure: bool, credentials: grpc.ChannelCredentials | None) -> grpc.ChannelCredentials | None:
    """TLS with the system's roots when `secure`, or the caller's own credentials; None for a plaintext channel."""
    if credentials is not None:
        return credentials
    return grpc.ssl_channel_credentials() if secure else None


def session_options(options: session_pb2.SessionOptions | Mapping[str, Any] | None) -> session_pb2.SessionOptions:
    """A SessionOptions message from itself, from a mapping of its fields (`{"pacing": Pacing.OFFLINE}`), or None."""
    if options is None:
        return session_pb2.SessionOptions()
    if isinstance(options, session_pb2.SessionOptions):
        return options
    return session_pb2.SessionOptions(**{k: int(v) if k == "pacing" else v for k, v in options.items()})


def create_request(
    avatar: str,
    voice: str,
    portrait: bytes | None,
    options: session_pb2.SessionOptions | Mapping[str, Any] | None,
) -> session_pb2.CreateSessionRequest:
    return session_pb2.CreateSessionRequest(
        avatar=avatar, voice=voice, portrait=portrait or b"", options=session_options(options)
    )


def _time(stamp: Any, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


class SessionFacts:
    """What CreateSession said about a session (or, for one attached by id and token, just those two)."""

    def __init__(self, info: session_pb2.Session) -> None:
        if not info.session_id or not info.control_token:
            raise ValueError("a session handle needs the session id and its control token")
        self.info = info
        self._auth: Metadata = (("authorization", f"Bearer {info.control_token}"),)

    @property
    def session_id(self) -> str:
        return self.info.session_id

    @property
    def control_token(self) -> str:
        """The session's secret: steers and watches this session only. Hand it to the browser, never the API key."""
        return self.info.control_token

    @property
    def playlist_url(self) -> str:
        """The view-only HLS URL ("" when the server does not know its public address: use `playlist_path`)."""
        return self.info.playlist_url

    @property
    def playlist_path(self) -> str:
        return self.info.playlist_path

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    @property
    def avatar(self) -> str:
        return self.info.avatar

    @property
    def voice(self) -> str:
        return self.info.voice

    @property
    def media_epoch(self) -> datetime | None:
        """Wall-clock time of media time 0: add an event's `start_us` to place it on the playlist's timeline."""
        return _time(self.info.media_epoch, self.info.HasField("media_epoch"))

    @property
    def expire_time(self) -> datetime | None:
        """When the server ends the session at the latest, whatever its use."""
        return _time(self.info.expire_time, self.info.HasField("expire_time"))

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}(session_id={self.session_id!r}, playlist_url={self.playlist_url!r})"

    def _say(self, text: str) -> session_pb2.SayRequest:
        return session_pb2.SayRequest(session_id=self.session_id, text=text)

    def _chat(self, text: str) -> session_pb2.ChatRequest:
        return session_pb2.ChatRequest(session_id=self.session_id, text=text)

    def _interrupt(self) -> session_pb2.InterruptRequest:
        return session_pb2.InterruptRequest(session_id=self.session_id)

    def _end(self) -> session_pb2.EndSessionRequest:
        return session_pb2.EndSessionRequest(session_id=self.session_id)

    def _watch(self) -> session_pb2.WatchSessionRequest:
        return session_pb2.WatchSessionRequest(session_id=self.session_id)


def attached(session_id: str, control_token: str) -> session_pb2.Session:
    """The facts of a session someone else created: its id and control token are all a handle needs to steer it."""
    return session_pb2.Session(session_id=session_id, control_token=control_token)
