"""What both fake speech providers share: an aiohttp server on 127.0.0.1 (port 0), scripted failures, a fixed
first-byte delay, a record of the requests, and real speech audio from the project's espeak-ng engine."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from services.tts.resample import resample


@dataclass
class Failure:
    """One scripted misbehaviour, used by the next request that reaches the server.

    `status`: answer with this HTTP error (and `body`, `headers`, e.g. Retry-After) instead of audio.
    `drop_after_s`: send this much audio, then drop the connection. `stall_after_s`: send this much audio, then
    send nothing more (until the client gives up). `malformed`: send one line that is not valid JSON first."""

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_after_s: float | None = None
    stall_after_s: float | None = None
    malformed: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class Speech:
    """Espeak-ng audio of a text at a chosen rate, with each written word's span in seconds."""

    pcm: np.ndarray
    rate: int
    words: list[tuple[str, float, float]]

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.rate


async def speak(text: str, rate: int) -> Speech:
    """Real speech for `text` (espeak-ng, US English), resampled to `rate`, sentences joined."""
    from services.tts.espeak import EspeakEngine

    engine = EspeakEngine()
    pieces: list[np.ndarray] = []
    words: list[tuple[str, float, float]] = []
    offset = 0.0
    async for chunk in engine.synthesize(text, "espeak-en-us"):
        pcm = resample(chunk.pcm, chunk.sample_rate_hz, rate)
        pieces.append(pcm)
        words.extend((w, offset + s, offset + e) for w, s, e in chunk.words)
        offset += len(pcm) / rate
    pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    return Speech(pcm, rate, words)


class FakeProvider:
    """Base of the fake servers: `async with Fake(...) as server:` or `await server.start()` / `await server.stop()`.

    `api_key`: the key the server accepts (None: any); `first_byte_delay_s`: fixed wait before any response byte
    (the provider's own latency, for benchmarks); `chunk_s`: audio per streamed piece; `chunk_delay_s`: pause
    between pieces. `fail(...)` queues scripted failures; `requests` records every request."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        first_byte_delay_s: float = 0.0,
        chunk_s: float = 0.25,
        chunk_delay_s: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.first_byte_delay_s = first_byte_delay_s
        self.chunk_s = chunk_s
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[Recorded] = []
        self.failures: deque[Failure] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL to give the SDK (ELEVENLABS_BASE_URL / OPENAI_BASE_URL)."""
        raise NotImplementedError

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def fail(self, *failures: Failure) -> None:
        self.failures.extend(failures)

    async def start(self) -> FakeProvider:
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _record(self, request: web.Request) -> Any:
        try:
            body = await request.json()
        except Exception:
            body = None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers), body))
        return body

    def _next_failure(self) -> Failure | None:
        return self.failures.popleft() if self.failures else None

    async def _delay(self) -> None:
        if self.first_byte_delay_s:
            await asyncio.sleep(self.first_byte_delay_s)

    @staticmethod
    def drop(request: web.Request) -> None:
        """Ends the connection abruptly, mid-response (the client sees an incomplete chunked body)."""
        transport = request.transport
        if transport is not None:
            transport.abort()
