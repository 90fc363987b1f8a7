"""Fan-out of a session's WatchSession events to its watchers, each with a bounded queue; a watcher that hears
nothing for HEARTBEAT_S gets a heartbeat, so that proxies keep the stream and a vanished watcher is found out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from infinitetalk_live_client.avatar.v1 import session_pb2

WATCHER_QUEUE_LIMIT = 1024
HEARTBEAT_S = 15.0


class WatcherTooSlow(Exception):
    """A watcher fell more than WATCHER_QUEUE_LIMIT events behind."""


class EventBus:
    def __init__(self, max_watchers: int) -> None:
        self.max_watchers = max_watchers
        self._queues: set[asyncio.Queue[session_pb2.WatchSessionResponse | Exception | None]] = set()
        self._closed = False

    @property
    def watcher_count(self) -> int:
        return len(self._queues)

    def publish(self, event: session_pb2.WatchSessionResponse) -> None:
        for queue in list(self._queues):
            if queue.qsize() >= WATCHER_QUEUE_LIMIT:
                self._queues.discard(queue)
                queue.put_nowait(WatcherTooSlow())
            else:
                queue.put_nowait(event)

    def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)
        self._queues.clear()

    def full(self) -> bool:
        return len(self._queues) >= self.max_watchers

    async def watch(
        self,
        first: session_pb2.WatchSessionResponse,
        heartbeat: Callable[[], session_pb2.WatchSessionResponse] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        """Yields `first`, then every event published until the bus closes (`heartbeat()` after each quiet
        `heartbeat_s`)."""
        queue: asyncio.Queue[session_pb2.WatchSessionResponse | Exception | None] = asyncio.Queue()
        if self._closed:
            yield first
            return
        self._queues.add(queue)
        try:
            yield first
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), heartbeat_s if heartbeat is not None else None)
                except TimeoutError:
                    assert heartbeat is not None
                    yield heartbeat()
                    continue
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self._queues.discard(queue)
