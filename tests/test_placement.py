"""Placement of sessions on video workers and packagers (real video servicers in-process; the whole flow with
processes is tests/test_scaleout.py)."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from avatar.v1 import video_pb2_grpc
from infinitetalk_live_client.avatar.v1 import video_pb2
from services.common.config import ConfigError
from services.common.server import create_server
from services.session import placement
from services.session.config import SessionConfig
from services.session.placement import NoCapacity, Packagers, VideoWorkers
from services.video.capacity import CapacityMeter
from services.video.service import VideoServicer


async def start_worker(capacity: int):
    # The capacity is the meter's ceiling: a budget far beyond what the measurements could ask for.
    meter = CapacityMeter(budget_cores=1000.0, fps=25, speaking_share=0.25, max_streams=capacity, frame_cpu_s=0.004)
    servicer = VideoServicer(meter=meter)

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    server, port, _ = await create_server("127.0.0.1:0", register, ["avatar.v1.VideoService"])
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_worker_reports_its_capacity() -> None:
    server, addr = await start_worker(3)
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            status = await video_pb2_grpc.VideoServiceStub(channel).GetWorkerStatus(video_pb2.GetWorkerStatusRequest())
        assert (status.capacity, status.active_streams, status.speaking_capacity) == (3, 0, 3) and status.worker_id
    finally:
        await server.stop(0)


async def test_recent_status_is_cached_for_the_ttl_then_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    server, addr = await start_worker(2)
    workers = VideoWorkers(addr, grpc.aio.insecure_channel)
    now = [1000.0]
    monkeypatch.setattr(placement, "time", SimpleNamespace(monotonic=lambda: now[0]))  # placement's clock only
    try:
        worker = workers.workers[addr]
        asked = 0
        ask = worker.stub.GetWorkerStatus

        async def counting(request, **kwargs):
            nonlocal asked
            asked += 1
            return await ask(request, **kwargs)

        worker.stub.GetWorkerStatus = counting
        first = await workers.recent_status(worker)
        assert first is not None and first.capacity == 2 and asked == 1
        now[0] += placement.STATUS_TTL_S - 0.01
        assert await workers.recent_status(worker) is first and asked == 1, "cached within the TTL"
        now[0] += 0.02
        fresh = await workers.recent_status(worker)
        assert asked == 2 and fresh is not first and fresh.worker_id == first.worker_id, "asked again after it"
        assert await workers.recent_status(worker) is fresh and asked == 2
    finally:
        await workers.close()
        await server.stop(0)


async def test_places_on_the_most_free_worker_and_refuses_when_all_are_full() -> None:
    small, small_addr = await start_worker(1)
    big, big_addr = await start_worker(2)
    workers = VideoWorkers(f"{small_addr},{big_addr},127.0.0.1:1", grpc.aio.insecure_channel)  # one never answers
    try:
        first = await workers.place()
        assert first.addr == big_addr, "2 free beats 1 free"
        second = await workers.place()
        assert {second.addr} <= {small_addr, big_addr}
        third = await workers.place()
        assert sorted([first.addr, second.addr, third.addr]) == sorted([big_addr, big_addr, small_addr])
        with pytest.raises(NoCapacity, match=r"all 2 video workers are at capacity \(1/2 sessions each\)"):
            await workers.place()
        workers.release(first)
        assert (await workers.place()).addr == big_addr, "released room is reused"
    finally:
        await workers.close()
        await small.stop(0)
        await big.stop(0)


async def test_ties_avoid_the_worker_just_lost_and_dns_names_resolve() -> None:
    a, a_addr = await start_worker(2)
    try:
        port = a_addr.rsplit(":", 1)[1]
        workers = VideoWorkers(f"dns:///localhost:{port}", grpc.aio.insecure_channel)
        try:
            placed = await workers.place(avoid=f"127.0.0.1:{port}")
            assert placed.addr.endswith(f":{port}"), "the only worker is used even when avoided"
        finally:
            await workers.close()
        nobody = VideoWorkers("127.0.0.1:1", grpc.aio.insecure_channel)
        with pytest.raises(NoCapacity, match="no video worker is reachable"):
            await nobody.place()
        await nobody.close()
    finally:
        await a.stop(0)


async def test_packagers_fill_evenly_and_name_their_paths() -> None:
    packagers = Packagers("127.0.0.1:1,127.0.0.1:2", grpc.aio.insecure_channel)
    slots = [packagers.place().slot for _ in range(4)]
    assert slots == [0, 1, 0, 1]
    assert packagers.playlist_path(packagers.packagers[1], "abc") == "/hls/p1/abc/index.m3u8"
    single = Packagers("127.0.0.1:1", grpc.aio.insecure_channel)
    assert single.playlist_path(single.place(), "abc") == "/hls/abc/index.m3u8"
    await packagers.close()
    await single.close()


@pytest.mark.parametrize(
    ("video", "packager", "words"),
    [("video:50054,", "p:1", None), ("nohost", "p:1", "VIDEO_ADDR"), ("dns:///x", "p:1", "dns:///name:port"),
     ("v:1", "", "PACKAGER_ADDR is empty"), ("v:1", "p:x", "PACKAGER_ADDR")],
)  # fmt: skip
def test_address_lists_are_checked_at_start(video: str, packager: str, words: str | None) -> None:
    def make():
        return SessionConfig(llm_addr="l:1", tts_addr="t:1", video_addr=video, packager_addr=packager)

    if words is None:
        make()
    else:
        with pytest.raises(ConfigError, match=words.replace("/", ".").replace(":", ".")):
            make()


async def test_the_catalog_comes_from_a_live_worker_when_another_is_dead() -> None:
    server, addr = await start_worker(2)
    workers = VideoWorkers(f"127.0.0.1:1,{addr}", grpc.aio.insecure_channel)
    try:
        for _ in range(3):  # whichever worker the round robin starts at
            avatars = await workers.list_avatars(timeout_s=2)
            assert "drawn" in [a.name for a in avatars.avatars]
    finally:
        await workers.close()
        await server.stop(0)
