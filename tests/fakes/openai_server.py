"""A local HTTP server that speaks OpenAI's chat-completions wire protocol, for tests and benchmarks.

`POST /v1/chat/completions` with `"stream": true` answers `text/event-stream` (`data: {chunk}` lines, then
`data: [DONE]`) exactly as OpenAI does, or an error as OpenAI sends it (`{"error": {"message", "type", "code"}}`).
What each request gets is scripted with `Reply` objects (queued by `script`, then `default`); the server records every
request body and when each client went away, so tests can check what was sent and that an interrupt closed the
connection. Use it through the real SDK by base URL (`server.base_url`).

    async with FakeOpenAI(default=Reply(text="Hello there."), first_byte_delay_s=0.2) as server:
        client = AsyncOpenAI(api_key="sk-test", base_url=server.base_url)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def tokens(text: str) -> list[str]:
    """`text` cut the way model tokens come: at most four characters, leading spaces attached, words split."""
    return re.findall(r"\s*\S{1,4}|\s+", text)


@dataclass
class Reply:
    """What one request gets. Chunk indexes count the content deltas (0 = the first piece of text)."""

    text: str = ""
    deltas: list[str] | None = None  # explicit content deltas; default: tokens(text)
    status: int = 200
    error_message: str = ""
    error_type: str = ""
    error_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, e.g. Retry-After
    first_byte_delay_s: float | None = None  # before the response starts; None: the server's default
    delay_s: float = 0.0  # before every delta
    pauses: dict[int, float] = field(default_factory=dict)  # extra wait before delta i
    stall_at: int | None = None  # before delta i, hang until the client goes away
    malformed_at: int | None = None  # before delta i, send a chunk that is not JSON
    error_event_at: int | None = None  # before delta i, send an in-stream {"error": ...} event
    finish_reason: str = "stop"

    def content_deltas(self) -> list[str]:
        return list(self.deltas) if self.deltas is not None else tokens(self.text)

    @classmethod
    def error(
        cls, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None, **options: Any
    ) -> Reply:
        return cls(status=status, error_message=message, error_type=type_, error_code=code, **options)

    @classmethod
    def slow_after_first_sentence(cls, text: str, pause_s: float) -> Reply:
        """Streams the first sentence and the next token at once (a splitter needs that token to see the sentence
        ended), then waits `pause_s` before the rest."""
        pieces = tokens(text)
        seen = ""
        for index, piece in enumerate(pieces):
            seen += piece
            if re.search(r"[.!?]$", seen.rstrip()) and index + 2 < len(pieces):
                return cls(deltas=pieces, pauses={index + 2: pause_s})
        return cls(deltas=pieces)


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float  # time.monotonic()
    disconnected_at: float | None = None  # when the client closed the connection before the reply ended
    completed: bool = False  # the whole reply was sent

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))


class FakeOpenAI:
    """The server; `start()`/`stop()` or `async with`. Port 0 picks a free port."""

    def __init__(
        self, default: Reply | None = None, *, first_byte_delay_s: float = 0.0, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.default = default or Reply(text="Hello from the fake model.")
        self.first_byte_delay_s = first_byte_delay_s
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self._disconnected = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queues replies for the next requests, in order; after them `default` answers."""
        self._script.extend(replies)

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        # handler_cancellation: a client that goes away cancels its handler, which records when that happened.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def wait_disconnect(self, timeout_s: float = 5.0) -> RecordedRequest:
        """The most recent request whose client went away, waiting for one if needed."""
        deadline = time.monotonic() + timeout_s
        while True:
            for request in reversed(self.requests):
                if request.disconnected_at is not None:
                    return request
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no client disconnected")
            self._disconnected.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), remaining)

    # -- the protocol -------------------------------------------------------------------------------------------------
    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = RecordedRequest(body=body, headers=dict(request.headers), received_at=time.monotonic())
        self.requests.append(record)
        reply = self._script.popleft() if self._script else self.default
        try:
            delay = self.first_byte_delay_s if reply.first_byte_delay_s is None else reply.first_byte_delay_s
            if delay:
                await asyncio.sleep(delay)
            if reply.status != 200:
                error = {"message": reply.error_message, "type": reply.error_type, "param": None}
                error["code"] = reply.error_code
                return web.json_response({"error": error}, status=reply.status, headers=reply.headers)
            if not body.get("stream"):
                return web.json_response(self._completion(body, "".join(reply.content_deltas())))
            return await self._stream(request, body, reply, record)
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected_at = time.monotonic()
            self._disconnected.set()
            raise

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply, record: RecordedRequest
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **reply.headers}
        )
        await response.prepare(request)
        ident = f"chatcmpl-fake{len(self.requests)}"
        model = str(body.get("model", ""))

        async def send(data: str) -> None:
            await response.write(f"data: {data}\n\n".encode())

        await send(json.dumps(self._chunk(ident, model, {"role": "assistant", "content": ""}, None)))
        for index, piece in enumerate(reply.content_deltas()):
            wait = reply.delay_s + reply.pauses.get(index, 0.0)
            if wait:
                await asyncio.sleep(wait)
            if reply.stall_at == index:
                await asyncio.Event().wait()  # until the client goes away (cancels this handler)
            if reply.malformed_at == index:
                await send('{"id": "' + ident + '", "choices": [{"delta": {"content": "oops"')  # cut-off JSON
            if reply.error_event_at == index:
                await send(json.dumps({"error": {"message": "The server had an error", "type": "server_error"}}))
            await send(json.dumps(self._chunk(ident, model, {"content": piece}, None)))
        await send(json.dumps(self._chunk(ident, model, {}, reply.finish_reason)))
        await send("[DONE]")
        await response.write_eof()
        record.completed = True
        return response

    @staticmethod
    def _chunk(ident: str, model: str, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    @staticmethod
    def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "")),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"},
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
