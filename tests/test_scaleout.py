"""Scale-out with real processes: three video workers of capacity 2 and two packagers behind one session service
and Envoy. Sessions are placed 2/2/2, a seventh is refused, a killed worker's sessions idle on and are placed again
when a new worker joins, and every session's HLS reaches the packager that holds it through the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import grpc
import pytest

from avatar.v1 import video_pb2_grpc
from infinitetalk_live.client import SessionClient, control_metadata
from infinitetalk_live.hls import fetch_playlist
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2, video_pb2

pytestmark = pytest.mark.e2e

CAPACITY = 2
WORKERS = ("video-0", "video-1", "video-2")
JOINER = "video-3"  # listed to the session service from the start, but started later: a pod that joins


@pytest.fixture
async def cluster():
    ports = StackPorts.free(video_workers=4, packagers=2)
    supervisor = Supervisor(
        ports,
        log_dir=Path(tempfile.mkdtemp(prefix="infinitetalk-scaleout-")),
        extra_env={
            "VIDEO_MAX_STREAMS": str(CAPACITY),
            "VIDEO_PHOTO_AVATARS": "0",  # the drawn face: six live sessions on a 2-core test machine
            "LOG_LEVEL": "INFO",
        },
        report=False,
        standby=(JOINER,),
    )
    async with supervisor.running():
        yield supervisor


async def worker_status(ports: StackPorts, name: str) -> video_pb2.GetWorkerStatusResponse | None:
    async with grpc.aio.insecure_channel(ports.addr(name)) as channel:
        try:
            return await video_pb2_grpc.VideoServiceStub(channel).GetWorkerStatus(
                video_pb2.GetWorkerStatusRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None


async def active(ports: StackPorts, name: str) -> int | None:
    status = await worker_status(ports, name)
    return None if status is None else status.active_streams


async def last_sequence(url: str) -> int:
    playlist = await asyncio.to_thread(fetch_playlist, url)
    assert playlist is not None and playlist.segments, url
    return playlist.segments[-1].sequence


async def wait_for(predicate, timeout_s: float, what: str) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.2)
    assert await predicate(), what


async def test_sessions_spread_over_workers_and_follow_a_lost_worker(cluster: Supervisor) -> None:
    ports = cluster.ports
    client = SessionClient(ports.addr("session"))
    sessions: list[session_pb2.Session] = []
    watchers: list[asyncio.Task] = []
    video_errors: dict[str, int] = {}
    try:
        for _ in range(3 * CAPACITY):
            sessions.append(await client.create())
        assert [await active(ports, name) for name in WORKERS] == [CAPACITY] * 3, "placed 2/2/2"
        assert await worker_status(ports, JOINER) is None

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "all 3 video workers are at capacity (2 sessions each)" in refused.value.details()

        # Each playlist is on one packager and reaches it through the gateway: /hls/p<i>/ for packager i.
        slots = [s.playlist_path.split("/")[2] for s in sessions]
        assert sorted(slots) == ["p0"] * 3 + ["p1"] * 3, slots
        await asyncio.sleep(1.5)  # the newest session's first segment
        for session, slot in zip(sessions, slots, strict=True):
            via_gateway = await asyncio.to_thread(fetch_playlist, ports.gateway_url + session.playlist_path)
            assert via_gateway is not None and via_gateway.segments
            holder = ports.packager_http[f"packager-{slot[1:]}"]
            other = ports.packager_http[f"packager-{1 - int(slot[1:])}"]
            direct = f"/hls/{session.stream_id}/index.m3u8"
            assert await asyncio.to_thread(fetch_playlist, f"http://127.0.0.1:{holder}{direct}") is not None
            assert await asyncio.to_thread(fetch_playlist, f"http://127.0.0.1:{other}{direct}") is None

        async def watch(session: session_pb2.Session) -> None:
            call = client.stub.WatchSession(
                session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
            )
            async for event in call:
                if event.WhichOneof("event") == "error" and event.error.component == "video":
                    video_errors[session.session_id] = video_errors.get(session.session_id, 0) + 1

        watchers = [asyncio.create_task(watch(s)) for s in sessions]
        urls = [ports.gateway_url + s.playlist_path for s in sessions]
        before = [await last_sequence(url) for url in urls]

        # A worker is lost: its two sessions lose their video stream; the others are not disturbed.
        await cluster.kill("video-0")
        await wait_for(lambda: _count(video_errors, 2), 10, "the lost worker's two sessions report it")
        assert len(video_errors) == 2
        lost = [s for s in sessions if s.session_id in video_errors]
        await asyncio.sleep(2.0)
        assert [await active(ports, name) for name in WORKERS[1:]] == [CAPACITY] * 2, "no room elsewhere yet"

        # Capacity is raised: a new worker joins and takes them.
        await cluster.launch(JOINER)
        await wait_for(lambda: _active_is(ports, JOINER, CAPACITY), 30, "the joiner renders the two sessions")
        for session in lost:
            result = await client.speak(session, "I moved to another worker.")
            assert result.reason == session_pb2.FINISH_REASON_COMPLETED, result.errors
        assert len(video_errors) == 2, "the other sessions were never disturbed"

        # Every playlist kept growing throughout.
        after = [await last_sequence(url) for url in urls]
        assert all(b > a + 5 for a, b in zip(before, after, strict=True)), (before, after)
    finally:
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for session in sessions:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await client.end(session)
        await client.close()


async def _count(errors: dict[str, int], sessions: int) -> bool:
    return len(errors) >= sessions


async def _active_is(ports: StackPorts, name: str, value: int) -> bool:
    return await active(ports, name) == value
