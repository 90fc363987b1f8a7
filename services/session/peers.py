"""A session's long-lived bidirectional stream to one peer service, kept open across utterances.

If the peer goes away (crash, restart), the link reports it, reconnects with backoff, sends its config message
again, and carries on; messages sent while it is down wait in an outbox bounded in messages and in bytes, so a
stalled peer cannot grow the session's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from services.common.interceptors import SESSION_ID_METADATA_KEY

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 4096
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 2.0
# Codes that mean "not this stream", not "not now".
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class OutboxFull(Exception):
    """The peer is not keeping up (or is down for long): the message was not queued."""


class PeerRefused(Exception):
    """The peer refused this session's stream for good (e.g. its configuration): nothing more can be sent."""


class PeerLink:
    def __init__(
        self,
        component: str,
        open_call: Callable[..., grpc.aio.StreamStreamCall],
        config_message: Message,
        session_id: str,
        on_response: Callable[[Any], Awaitable[None] | None],
        on_down: Callable[[grpc.aio.AioRpcError | Exception], None],
        on_up: Callable[[bool], None] | None = None,
        reconnect: bool = True,
        before_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`open_call` is called for every (re)connection, so it may pick a different peer each time;
        `before_reconnect` runs before each reconnection (e.g. to place the stream elsewhere) and may raise to wait
        a backoff step and try again."""
        self.component = component
        self._open_call = open_call
        self.config = config_message  # sent first on every (re)connection
        self._session_id = session_id
        self._on_response = on_response
        self._on_down = on_down
        self._on_up = on_up
        self._reconnect = reconnect
        self._before_reconnect = before_reconnect
        self._outbox: asyncio.Queue[tuple[Message, int]] = asyncio.Queue()
        self.max_bytes: int | None = None  # bound on the bytes waiting in the outbox (None: count only)
        self.queued_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self.connected = asyncio.Event()
        self.refusal: str | None = None
        self._closing = False
        self._finished = False  # the stream's `end` message went out

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"peer-{self.component}")

    def send(self, message: Message) -> None:
        if self.refusal is not None:
            raise PeerRefused(f"the {self.component} service refused this session: {self.refusal}")
        size = message.ByteSize()
        if self._outbox.qsize() >= OUTBOX_LIMIT or (
            self.max_bytes is not None and self.queued_bytes + size > self.max_bytes
        ):
            raise OutboxFull(f"{self.component} is not keeping up")
        self._outbox.put_nowait((message, size))
        self.queued_bytes += size

    def clear_outbox(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()
        self.queued_bytes = 0

    async def close(self, end_message: Message | None = None, grace_s: float = 0.0) -> None:
        """Sends `end_message` (if any), waits up to grace_s for the peer to finish, then cancels the stream."""
        self._closing = True
        if end_message is not None:
            self._outbox.put_nowait((end_message, 0))
        if self._task is not None:
            if grace_s > 0:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        backoff = BACKOFF_START_S
        first = True
        while not self._closing:
            call = self._open_call(metadata=((SESSION_ID_METADATA_KEY, self._session_id),), wait_for_ready=True)
            self._call = call
            writer = asyncio.create_task(self._write(call), name=f"peer-{self.component}-writer")
            try:
                async for response in call:
                    if not self.connected.is_set():
                        self.connected.set()
                        backoff = BACKOFF_START_S
                        if self._on_up is not None:
                            self._on_up(first)
                        first = False
                    result = self._on_response(response)
                    if result is not None:
                        await result
                if self._closing or self._finished:
                    return  # closed by us, or ended by the peer after our `end`: nothing lost
                error: Exception = RuntimeError(f"{self.component} closed the stream")
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as rpc_error:
                error = rpc_error
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
            self.connected.clear()
            if self._closing:
                return
            log.warning("peer stream lost", extra={"component": self.component, "error": str(error)[:300]})
            self._on_down(error)
            if isinstance(error, grpc.aio.AioRpcError) and error.code() in REFUSALS:
                self.refusal = error.details() or error.code().name
                return  # asking again would be refused again
            if not self._reconnect:
                return
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)
            while self._before_reconnect is not None and not self._closing:
                try:
                    await self._before_reconnect()
                    break
                except Exception as wait_reason:  # e.g. no worker has room yet: the stream idles meanwhile
                    log.info("peer stream waits", extra={"component": self.component, "reason": str(wait_reason)})
                    await asyncio.sleep(backoff)
                    backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        await call.write(self.config)
        while True:
            message, size = await self._outbox.get()
            self.queued_bytes -= size
            await call.write(message)
            if message.WhichOneof("request") == "end":
                self._finished = True
                await call.done_writing()
                return
