"""Where a session's streams go when there are several video workers and packagers.

Video workers: `VIDEO_ADDR` is a comma-separated list of `host:port`, or `dns:///name:port`, meaning every address
the name resolves to (a Kubernetes headless Service: one per pod), re-resolved as pods come and go. A new session
goes to the reachable worker with the most free capacity (each worker reports its capacity and streams in
progress; streams placed here but not yet open count too). A worker at capacity refuses a stream with
RESOURCE_EXHAUSTED anyway (several session replicas, races), and the session then places itself again. A session
stays on its worker for its whole life unless that worker's stream breaks (the worker died or restarted): then it
is placed again, possibly on the same worker, as soon as any has room; meanwhile its stream idles on the last frame.

Packagers: `PACKAGER_ADDR` is a comma-separated list; packager i holds the playlists of the sessions placed on it
(fewest first) and the gateway routes `/hls/p<i>/...` to it. With one packager, paths stay `/hls/<stream_id>/...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from avatar.v1 import packager_pb2_grpc, video_pb2_grpc
from infinitetalk_live_client.avatar.v1 import video_pb2

log = logging.getLogger(__name__)

DNS_PREFIX = "dns:///"
RESOLVE_EVERY_S = 5.0
STATUS_TIMEOUT_S = 1.0
STATUS_TTL_S = 2.0


class NoCapacity(Exception):
    """No video worker can take another session now."""


def _unavailable(message: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), message)


def parse_addresses(spec: str, name: str) -> list[str]:
    """`host:port[,host:port...]` -> addresses; a ValueError names the variable."""
    addresses = [part.strip() for part in spec.split(",") if part.strip()]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{name}: {address!r} is not host:port")
    if not addresses:
        raise ValueError(f"{name} is empty")
    return addresses


def parse_video_spec(spec: str) -> tuple[str, int] | list[str]:
    """VIDEO_ADDR -> (dns name, port) for `dns:///name:port`, else the address list (ValueError when malformed)."""
    if spec.startswith(DNS_PREFIX):
        host, _, port = spec.removeprefix(DNS_PREFIX).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"VIDEO_ADDR: {spec!r} is not dns:///name:port")
        return host, int(port)
    return parse_addresses(spec, "VIDEO_ADDR")


@dataclass
class VideoWorker:
    addr: str
    channel: grpc.aio.Channel
    stub: video_pb2_grpc.VideoServiceStub
    placed: int = 0  # sessions this service placed here (open or opening)
    status: video_pb2.GetWorkerStatusResponse | None = None  # the last answer to GetWorkerStatus
    status_at: float = 0.0


class VideoWorkers:
    """The video workers and the sessions placed on them."""

    def __init__(self, spec: str, open_channel: Callable[[str], grpc.aio.Channel]) -> None:
        self.spec = spec
        self._open_channel = open_channel
        parsed = parse_video_spec(spec)
        self._dns: tuple[str, int] | None = parsed if isinstance(parsed, tuple) else None
        addresses: list[str] = parsed if isinstance(parsed, list) else []
        self.workers: dict[str, VideoWorker] = {}
        self._resolved_at = 0.0
        self._lock = asyncio.Lock()
        self._next = 0
        self._set(addresses)

    def _set(self, addresses: list[str]) -> None:
        for address in addresses:
            if address not in self.workers:
                channel = self._open_channel(address)
                self.workers[address] = VideoWorker(address, channel, video_pb2_grpc.VideoServiceStub(channel))
        # Workers that left DNS are kept while sessions still use them (their streams will break and re-place).
        for address in [a for a, w in self.workers.items() if a not in addresses and w.placed == 0]:
            if self._dns is not None:
                worker = self.workers.pop(address)
                asyncio.get_running_loop().create_task(worker.channel.close())

    async def refresh(self) -> None:
        """Re-resolves a dns:/// spec (at most every RESOLVE_EVERY_S)."""
        if self._dns is None or time.monotonic() - self._resolved_at < RESOLVE_EVERY_S:
            return
        host, port = self._dns
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            log.warning("video workers not resolved", extra={"name": host, "error": str(error)})
            return
        self._resolved_at = time.monotonic()
        addresses = sorted({f"[{i[4][0]}]:{port}" if ":" in i[4][0] else f"{i[4][0]}:{port}" for i in infos})
        self._set(addresses)

    async def list_avatars(self, timeout_s: float = 10.0) -> video_pb2.ListAvatarsResponse:
        """The avatars on offer, from the first worker that answers (every worker offers the same ones): a dead
        worker in the list must not make the catalog, and so CreateSession, fail."""
        await self.refresh()
        workers = list(self.workers.values())
        if not workers:
            raise _unavailable("no video worker is known yet")
        self._next = (self._next + 1) % len(workers)
        last: grpc.aio.AioRpcError | None = None
        for worker in workers[self._next :] + workers[: self._next]:
            try:
                return await worker.stub.ListAvatars(video_pb2.ListAvatarsRequest(), timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                last = error
        assert last is not None
        raise last

    async def _status(self, worker: VideoWorker) -> video_pb2.GetWorkerStatusResponse | None:
        try:
            status = await worker.stub.GetWorkerStatus(video_pb2.GetWorkerStatusRequest(), timeout=STATUS_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return None
        worker.status, worker.status_at = status, time.monotonic()
        return status

    async def recent_status(self, worker: VideoWorker) -> video_pb2.GetWorkerStatusResponse | None:
        """The worker's status, asked again when the last answer is older than STATUS_TTL_S (None: unreachable)."""
        if worker.status is not None and time.monotonic() - worker.status_at < STATUS_TTL_S:
            return worker.status
        return await self._status(worker)

    async def place(self, avoid: str | None = None) -> VideoWorker:
        """Reserves room for one session on the worker with the most free capacity (NoCapacity if none has any).
        `avoid` loses ties (the worker a session just lost its stream on)."""
        await self.refresh()
        async with self._lock:
            workers = list(self.workers.values())
            statuses = await asyncio.gather(*(self._status(w) for w in workers))
            best: tuple[tuple[int, int, int], VideoWorker] | None = None
            reachable = 0
            for worker, status in zip(workers, statuses, strict=True):
                if status is None:
                    continue
                reachable += 1
                free = status.capacity - max(status.active_streams, worker.placed)
                if free <= 0:
                    continue
                rank = (free, 0 if worker.addr == avoid else 1, -worker.placed)
                if best is None or rank > best[0]:
                    best = (rank, worker)
            if best is None:
                if reachable == 0:
                    raise NoCapacity(f"no video worker is reachable ({len(workers)} known)")
                capacity = sorted({s.capacity for s in statuses if s is not None})
                raise NoCapacity(
                    f"all {reachable} video workers are at capacity "
                    f"({'/'.join(map(str, capacity))} sessions each); try again later"
                )
            worker = best[1]
            worker.placed += 1
            return worker

    def release(self, worker: VideoWorker) -> None:
        worker.placed = max(0, worker.placed - 1)

    async def close(self) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                await worker.channel.close()


@dataclass
class Packager:
    slot: int
    addr: str
    stub: packager_pb2_grpc.PackagerServiceStub
    placed: int = 0


class Packagers:
    """The packagers; each session's playlist lives on one of them for its whole life."""

    def __init__(self, spec: str, open_channel: Callable[[str], grpc.aio.Channel]) -> None:
        self.channels = []
        self.packagers = []
        for slot, address in enumerate(parse_addresses(spec, "PACKAGER_ADDR")):
            channel = open_channel(address)
            self.channels.append(channel)
            self.packagers.append(Packager(slot, address, packager_pb2_grpc.PackagerServiceStub(channel)))

    def place(self) -> Packager:
        packager = min(self.packagers, key=lambda p: (p.placed, p.slot))
        packager.placed += 1
        return packager

    def release(self, packager: Packager) -> None:
        packager.placed = max(0, packager.placed - 1)

    def playlist_path(self, packager: Packager, stream_id: str) -> str:
        """What the gateway serves the session's playlist at (`/hls/p<i>/...` routes to packager i)."""
        if len(self.packagers) == 1:
            return f"/hls/{stream_id}/index.m3u8"
        return f"/hls/p{packager.slot}/{stream_id}/index.m3u8"

    async def close(self) -> None:
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close()
