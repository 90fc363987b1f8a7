"""Density with real processes: idle sessions cost almost nothing and share their avatar's idle loop, speaking ones
play without stalls beside them, admission follows the measured capacity, and the session service carries no
pixels and stays bounded when the packager stalls. (Figures: bench/density.py; these tests assert behaviour.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor as pb_descriptor

from avatar.v1 import llm_pb2, packager_pb2, video_pb2_grpc
from infinitetalk_live.client import SessionClient, control_metadata, playlist_url
from infinitetalk_live.hls import PlaylistFollower, fetch_playlist
from infinitetalk_live.ports import SERVICE_ORDER, StackPorts
from infinitetalk_live.procstats import cpu_seconds, io_bytes, rss_mb
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2, tts_pb2, video_pb2
from tests.hls_analysis import decode, lip_sync, loud_span
from tests.prometheus import metric

pytestmark = pytest.mark.e2e

SENTENCE = "Hello there. Several of us speak on one small machine, each in time with our own voice."
LONG = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs and watched the dark water for travellers."
)


async def worker_status(ports: StackPorts) -> video_pb2.GetWorkerStatusResponse:
    async with grpc.aio.insecure_channel(ports.addr("video")) as channel:
        return await video_pb2_grpc.VideoServiceStub(channel).GetWorkerStatus(
            video_pb2.GetWorkerStatusRequest(), timeout=5
        )


async def media_seconds(url: str) -> float:
    """Media time the playlist covers, from its first segment's start to the end of its newest part (a 160 ms
    resolution; whole 960 ms segments would be too coarse for a few seconds of measurement)."""
    playlist = await asyncio.to_thread(fetch_playlist, url)
    assert playlist is not None and playlist.segments
    first, until = playlist.segments[0].program_date_time, playlist.covered_until()
    assert first is not None and until is not None
    return (until - first).total_seconds()


@contextlib.asynccontextmanager
async def stack(**env: str) -> AsyncIterator[Supervisor]:
    ports = StackPorts.free()
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-density-"))
    async with Supervisor(ports, log_dir=logs, extra_env=env, report=False, gateway=False).running() as supervisor:
        yield supervisor


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared() -> AsyncIterator[Supervisor]:
    async with stack() as supervisor:
        yield supervisor


class Watcher:
    """Collects a session's stalls and errors from WatchSession."""

    def __init__(self, client: SessionClient, session: session_pb2.Session) -> None:
        self.stalled: list[session_pb2.StreamStalled] = []
        self.errors: list[session_pb2.SessionError] = []
        self._task = asyncio.create_task(self._run(client, session))

    async def _run(self, client: SessionClient, session: session_pb2.Session) -> None:
        call = client.stub.WatchSession(
            session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "stalled":
                    self.stalled.append(event.stalled)
                elif kind == "error":
                    self.errors.append(event.error)

    def stop(self) -> None:
        self._task.cancel()


@pytest.mark.asyncio(loop_scope="module")
async def test_idle_and_speaking_sessions_side_by_side_play_without_stalls(shared: Supervisor, artifacts) -> None:
    """Sized for a 2-core CI box: 6 idle sessions and 2 speaking at once."""
    ports = shared.ports
    client = SessionClient(ports.addr("session"))
    sessions = [await client.create() for _ in range(8)]
    watchers = [Watcher(client, s) for s in sessions]
    urls = [playlist_url(s, ports.hls_base_url) for s in sessions]
    try:
        await asyncio.sleep(1.0)
        before = [await media_seconds(url) for url in urls]
        started = time.monotonic()
        followers = [PlaylistFollower(url) for url in urls[:2]]
        results = await asyncio.gather(
            *(
                client.speak(s, SENTENCE, hls_url=url, follower=f)
                for s, url, f in zip(sessions[:2], urls[:2], followers, strict=True)
            )
        )
        await asyncio.sleep(1.0)
        wall = time.monotonic() - started
        after = [await media_seconds(url) for url in urls]
        data = followers[0].fmp4_bytes()
        (artifacts / "density_speaker.mp4").write_bytes(data)
    finally:
        for watcher in watchers:
            watcher.stop()
        for session in sessions:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await client.end(session)
        await client.close()

    assert all(r.reason == session_pb2.FINISH_REASON_COMPLETED for r in results), results
    assert [w.stalled for w in watchers] == [[]] * len(watchers), "no frame stalled"
    assert [w.errors for w in watchers] == [[]] * len(watchers)
    for a, b in zip(before, after, strict=True):  # every playlist at real time, speaking or idle
        assert abs((b - a) / wall - 1.0) < 0.1, (a, b, wall)

    media = decode(data, rgb=True)
    span = loud_span(media.audio, media.sample_rate)
    assert span is not None, "no speech in the stream"
    onset_s, offset_s = span[0] + media.audio_start_s, span[1] + media.audio_start_s
    sync = lip_sync(media, (onset_s, offset_s))
    assert sync.mouth_onset_s is not None, "the mouth never moved"
    assert abs(sync.mouth_onset_s - onset_s) <= 0.08, sync
    assert sync.speech_opening > sync.silence_opening + 0.04, sync


@pytest.mark.asyncio(loop_scope="module")
async def test_a_second_idle_session_of_an_avatar_costs_less_than_the_first(shared: Supervisor) -> None:
    """The idle loop is rendered and encoded once per avatar: the first session of an avatar pays for it, the next
    ones replay it. Measured as the CPU seconds of all services from creating the session to a few seconds later."""
    ports = shared.ports
    pids = [shared.pid(name) for name in SERVICE_ORDER]
    client = SessionClient(ports.addr("session"))
    built_before = metric(ports.metrics["video"], "video_idle_loops_built_total")
    costs = []
    sessions = []
    try:
        for _ in range(2):
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            sessions.append(await client.create(avatar="drawn-kai"))  # an avatar no other test here uses
            await asyncio.sleep(4.0)
            costs.append(sum(cpu_seconds(pid) for pid in pids) - cpu_before)
    finally:
        for session in sessions:
            await client.end(session)
        await client.close()
    assert metric(ports.metrics["video"], "video_idle_loops_built_total") - built_before == 1
    assert costs[1] < costs[0], costs


@pytest.mark.asyncio(loop_scope="module")
async def test_the_session_service_carries_no_pixels(shared: Supervisor) -> None:
    # By the contract: nothing the session service sends or receives has a field that can hold a picture.
    allowed_bytes = {"pcm_s16le", "lookahead_pcm_s16le", "portrait", "image"}  # audio, and uploads on the way in
    seen: set[str] = set()

    def check(message: pb_descriptor.Descriptor) -> None:
        if message.full_name in seen:
            return
        seen.add(message.full_name)
        assert message.name not in {"EncodedChunk", "IdleLoopChunk", "VideoFrame"}, message.full_name
        for field in message.fields:
            if field.type == pb_descriptor.FieldDescriptor.TYPE_BYTES:
                assert field.name in allowed_bytes, f"{message.full_name}.{field.name} could carry pictures"
            if field.message_type is not None:
                check(field.message_type)

    used = [
        (llm_pb2, "LlmService", ("Generate",)),
        (tts_pb2, "TtsService", ("Synthesize", "ListVoices")),
        (video_pb2, "VideoService", ("Render", "ListAvatars", "PrepareAvatar", "GetWorkerStatus")),
        (packager_pb2, "PackagerService", ("Publish",)),
    ]
    for module, service, methods in used:
        for name in methods:
            method = module.DESCRIPTOR.services_by_name[service].methods_by_name[name]
            check(method.input_type)
            check(method.output_type)

    # By the traffic: a speaking session moves a few kB of audio and control per second through the session
    # service, not the ~10 MB/s of raw 512x512 frames (or ~100 kB/s of H.264) of its pictures.
    ports = shared.ports
    pid = shared.pid("session")
    client = SessionClient(ports.addr("session"))
    try:
        session = await client.create()
        await asyncio.sleep(1.0)
        io_before, started = io_bytes(pid), time.monotonic()
        result = await client.speak(session, LONG)
        seconds = time.monotonic() - started
        moved = io_bytes(pid) - io_before
        await client.end(session)
    finally:
        await client.close()
    assert result.reason == session_pb2.FINISH_REASON_COMPLETED
    assert moved / seconds < 250_000, f"{moved / seconds:.0f} bytes/s through the session service"


async def test_admission_follows_the_measured_capacity() -> None:
    """A worker's capacity comes from its CPU budget and the measured cost of a stream: the session past it is
    refused at the door with a sentence naming the limit, a Say past its speaking capacity too, and the sessions
    already admitted are not disturbed."""
    async with stack(VIDEO_SPEAKING_SHARE="0.5") as supervisor:
        ports = supervisor.ports
        measured = await worker_status(ports)
        assert measured.speaking_stream_cores > 0 and measured.cpu_budget_cores > 0
        # A budget for one or two speaking streams, from the worker's own first measurement; then restart it.
        budget = 2.2 * measured.speaking_stream_cores
        await supervisor.kill("video")
        supervisor.processes["video"].env["VIDEO_CPU_BUDGET"] = f"{budget:.4f}"
        await supervisor.launch("video")
        await supervisor.wait_healthy(timeout_s=120)
        client = SessionClient(ports.addr("session"))
        sessions: list[session_pb2.Session] = []
        watchers: list[Watcher] = []
        try:
            sessions.append(await client.create())
            watchers.append(Watcher(client, sessions[0]))
            warm = await client.speak(sessions[0], SENTENCE)  # live frames refine the measured cost
            assert warm.reason == session_pb2.FINISH_REASON_COMPLETED
            status = await worker_status(ports)
            assert status.cpu_budget_cores == pytest.approx(budget, rel=1e-3)
            assert 1 <= status.speaking_capacity < status.capacity <= 8, status

            # Sessions are admitted up to the capacity the worker measures, and the next one is refused.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                for _ in range(10):
                    sessions.append(await client.create())
                    watchers.append(Watcher(client, sessions[-1]))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = await worker_status(ports)
            assert status.active_streams == status.capacity == len(sessions) >= 2
            assert f"at capacity ({status.capacity} sessions each)" in refused.value.details()

            # As many speak as the worker can render at once; one more Say is refused while they do.
            speaking = min(status.speaking_capacity, len(sessions) - 1)
            talking = [asyncio.create_task(client.speak(s, LONG)) for s in sessions[:speaking]]
            await asyncio.sleep(1.5)
            other = sessions[speaking]
            if speaking == status.speaking_capacity:
                with pytest.raises(grpc.aio.AioRpcError) as busy:
                    await client.stub.Say(
                        session_pb2.SayRequest(session_id=other.session_id, text="Me too."),
                        metadata=control_metadata(other),
                    )
                assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert f"already speaking for {speaking} sessions" in busy.value.details()
            results = await asyncio.gather(*talking)
            assert all(r.reason == session_pb2.FINISH_REASON_COMPLETED for r in results)

            # Once they are done, it speaks; nobody stalled or saw an error throughout.
            after = await client.speak(other, "Now it is my turn.")
            assert after.reason == session_pb2.FINISH_REASON_COMPLETED
            assert [w.stalled for w in watchers] == [[]] * len(watchers)
            assert [w.errors for w in watchers] == [[]] * len(watchers)
        finally:
            for watcher in watchers:
                watcher.stop()
            for session in sessions:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await client.end(session)
            await client.close()


async def test_a_stalled_packager_cannot_grow_the_session_service() -> None:
    """With the packager stopped (SIGSTOP), a speaking session's commits pile up only to SESSION_OUTBOX_KB: then the
    session gives the playlist up with a clear error; the session service's memory stays where it was."""
    async with stack(SESSION_OUTBOX_KB="256") as supervisor:
        ports = supervisor.ports
        client = SessionClient(ports.addr("session"))
        session_pid, packager_pid = supervisor.pid("session"), supervisor.pid("packager")
        try:
            session = await client.create()
            watcher = Watcher(client, session)
            await asyncio.sleep(1.0)
            rss_before = rss_mb(session_pid)
            os.kill(packager_pid, signal.SIGSTOP)
            try:
                ended = asyncio.create_task(client.speak(session, " ".join([LONG] * 3), timeout_s=60))
                deadline = time.monotonic() + 45
                # The session gives the playlist up: its outbox hit the bound, or the connection timed out first.
                while not any(w in e.message for e in watcher.errors for w in ("not keeping up", "was lost")):
                    assert time.monotonic() < deadline, watcher.errors
                    await asyncio.sleep(0.5)
                growth = rss_mb(session_pid) - rss_before
            finally:
                os.kill(packager_pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ended, 30)
            watcher.stop()
            assert growth < 30, f"the session service grew {growth:.1f} MB"
            # The service is fine: a new session plays.
            fresh = await client.create()
            result = await client.speak(fresh, "Still here.")
            assert result.reason == session_pb2.FINISH_REASON_COMPLETED
            await client.end(fresh)
        finally:
            await client.close()
