"""Client for the InfiniteTalk Live session API, `avatar.v1`: a talking avatar that speaks text into a live HLS stream.

- `connect(address, api_key)` / `Client`, and `AsyncClient` for asyncio: create a session, then `say`, `chat`,
  `interrupt`, `end` and `watch` its events on the handle.
- `model`: the typed events (WordSpoken, SpeechStarted, SpeechFinished, Latency, StateChanged, SessionError,
  Stalled, Heartbeat...) and enums.
- `ApiError`: every refused or failed call, with `.code`, `.message` and the decoded google.rpc `.details`.
- `infinitetalk_live_client.avatar.v1`: the generated messages and stubs themselves (session_pb2,
  session_pb2_grpc), for anything the helper does not cover.
"""

from __future__ import annotations

from .aio import AsyncClient, AsyncSession, AsyncWatch, connect_async
from .client import Client, Session, Watch, connect
from .errors import ApiError
from .model import (
    Event,
    FinishReason,
    Heartbeat,
    Interruption,
    Latency,
    Pacing,
    SessionError,
    SpeechFinished,
    SpeechStarted,
    Stalled,
    State,
    StateChanged,
    UnknownEvent,
    UtteranceSource,
    VoiceDegraded,
    WordSpoken,
)

__version__ = "1.0.0"
API_VERSION = "avatar.v1"

__all__ = [
    "API_VERSION",
    "ApiError",
    "AsyncClient",
    "AsyncSession",
    "AsyncWatch",
    "Client",
    "Event",
    "FinishReason",
    "Heartbeat",
    "Interruption",
    "Latency",
    "Pacing",
    "Session",
    "SessionError",
    "SpeechFinished",
    "SpeechStarted",
    "Stalled",
    "State",
    "StateChanged",
    "UnknownEvent",
    "UtteranceSource",
    "VoiceDegraded",
    "Watch",
    "WordSpoken",
    "connect",
    "connect_async",
]
