"""Where uploaded portraits are prepared: a thread pool of their own, a few at a time, a permit per decode.

Why a pool of its own: decoding a large photo and finding its face holds a core (and ~100 MB) for up to seconds. In
the default executor, which `asyncio.to_thread` and so frame rendering use, a burst of uploads would queue ahead of
frames that are due. Here they wait for each other only.

Why a permit lasts as long as the decode, not as long as the request: a thread cannot be stopped, so a request that
is cancelled (its client went away, its deadline passed) leaves its decode running. If its permit were returned at
the cancellation, a client that uploads and cancels in a loop would have unboundedly many decodes running at once.
So the permit is returned when the thread's work ends, whoever still waits for it; the pool never holds more threads
than permits, so nothing queues inside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

THREAD_NAME_PREFIX = "portrait"


class PortraitPool:
    """Runs blocking portrait work in at most `max_concurrent` threads of its own (see the module docstring)."""

    def __init__(self, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        self.max_concurrent = max_concurrent
        self._executor = concurrent.futures.ThreadPoolExecutor(max_concurrent, thread_name_prefix=THREAD_NAME_PREFIX)
        self._permits = asyncio.Semaphore(max_concurrent)
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        """Decodes holding a permit now, including those whose request has been cancelled."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests waiting for a permit."""
        return self._waiting

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` in the pool once a permit is free; its result or exception. Cancelling the caller stops the
        wait, not the work: the permit returns when the work ends."""
        self._waiting += 1
        try:
            await self._permits.acquire()
        finally:
            self._waiting -= 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        except BaseException:
            self._permits.release()
            raise
        self._running += 1
        future.add_done_callback(self._finished)
        return await asyncio.shield(future)

    def _finished(self, future: asyncio.Future) -> None:
        self._running -= 1
        self._permits.release()
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled caller's failure is not reported as "never retrieved"

    def shutdown(self) -> None:
        """Stops taking work; running decodes finish in their threads (the process is stopping)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
