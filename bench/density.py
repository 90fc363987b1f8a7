"""Density benchmark: how many sessions one box serves, and what each costs, idle and speaking.

Starts the real stack (five services, offline defaults: the photo avatar at 512x512 and Piper) on free loopback
ports and measures, from /proc, the CPU of every process over a window:
- 1, 10 and 30 idle sessions (cores per process; every playlist's growth against real time over the window);
- 1 session speaking (a long text) and 6 speaking at once while 10 more idle (cores per process over the window;
  a speaking session's cost is what the speakers add over the same sessions idling, per second of speech spoken);
- stalled frames (WatchSession `stalled` events); time from Say to the first speech segment on the playlist, one
  speaker alone (median and p95 over five short answers, as a viewer polling the playlist sees it and as the server
  reports it) and six at once (the server's figure); the session service's memory per session;
- the video workers' measured capacity (GetWorkerStatus).

Usage: .venv/bin/python -m bench.density [--window 20]   (from the repo root; takes about four minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from avatar.v1 import video_pb2_grpc
from bench.stats import percentile
from infinitetalk_live.client import SessionClient, SpeakResult, control_metadata, playlist_url
from infinitetalk_live.hls import fetch_playlist
from infinitetalk_live.ports import SERVICE_ORDER, StackPorts
from infinitetalk_live.procstats import cpu_seconds, rss_mb
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2, video_pb2

SPEECH = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs and watched the dark water for travellers."
)
LATENCY_TEXT = "Hello there. This is a live avatar speaking, and it answers as soon as it can."  # as bench.pipeline
SHORT = "Hello there. This is one of several avatars speaking on the same small machine at the same time."


@dataclass
class Row:
    load: str
    cores: dict[str, float]
    sessions: int
    growth: list[float] = field(default_factory=list)  # playlist media seconds per wall second, per session
    wall_s: float = 0.0
    speech_s: float = 0.0  # seconds of speech the speakers spoke in the window

    @property
    def total(self) -> float:
        return sum(self.cores.values())


class Meter:
    """CPU seconds of every service process between `start` and `stop`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.pids = {name: supervisor.pid(name) for name in SERVICE_ORDER}
        self._cpu: dict[str, float] = {}
        self._at = 0.0
        self.wall_s = 0.0

    def start(self) -> None:
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._at = time.perf_counter()

    def stop(self) -> dict[str, float]:
        self.wall_s = time.perf_counter() - self._at
        return {name: (cpu_seconds(pid) - self._cpu[name]) / self.wall_s for name, pid in self.pids.items()}


async def media_seconds(url: str) -> float:
    playlist = await asyncio.to_thread(fetch_playlist, url)
    if playlist is None or not playlist.segments:
        return 0.0
    last = playlist.segments[-1]
    first = playlist.segments[0]
    assert last.program_date_time is not None and first.program_date_time is not None
    return (last.program_date_time - first.program_date_time).total_seconds() + last.duration_s


async def idle_window(meter: Meter, urls: list[str], window_s: float) -> tuple[dict[str, float], list[float]]:
    before = [await media_seconds(url) for url in urls]
    meter.start()
    started = time.perf_counter()
    await asyncio.sleep(window_s)
    cores = meter.stop()
    wall = time.perf_counter() - started
    after = [await media_seconds(url) for url in urls]
    return cores, [(b - a) / wall for a, b in zip(before, after, strict=True)]


async def watch_stalls(client: SessionClient, session: session_pb2.Session, stalls: list[int]) -> None:
    call = client.stub.WatchSession(
        session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
    )
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        async for event in call:
            if event.WhichOneof("event") == "stalled":
                stalls.append((event.stalled.end_us - event.stalled.start_us) // 40_000)


def spoken_s(results: list[SpeakResult]) -> float:
    return sum((r.end_us - r.start_us) / 1e6 for r in results if r.end_us is not None and r.start_us is not None)


async def worker_status(addr: str) -> video_pb2.GetWorkerStatusResponse:
    async with grpc.aio.insecure_channel(addr) as channel:
        return await video_pb2_grpc.VideoServiceStub(channel).GetWorkerStatus(
            video_pb2.GetWorkerStatusRequest(), timeout=5
        )


async def run(window_s: float) -> None:
    ports = StackPorts.free()
    # One client opens dozens of sessions within a minute: above the per-client create rate a deployment keeps.
    limits = {"SESSION_CREATES_PER_MINUTE": "600", "SESSION_CREATE_BURST": "100"}
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-density-"))
    supervisor = Supervisor(ports, log_dir=logs, extra_env=limits, report=False)
    rows: list[Row] = []
    stalls: list[int] = []
    first_speech: list[float] = []
    alone: list[float] = []
    concurrent: list[float] = []
    async with supervisor.running():
        client = SessionClient(ports.addr("session"))
        meter = Meter(supervisor)
        session_pid = supervisor.pid("session")
        sessions: list[session_pb2.Session] = []
        watchers: list[asyncio.Task[None]] = []
        try:
            rss_before = rss_mb(session_pid)
            for target in (1, 10, 30):
                while len(sessions) < target:
                    session = await client.create()
                    sessions.append(session)
                    watchers.append(asyncio.create_task(watch_stalls(client, session, stalls)))
                await asyncio.sleep(3.0)
                cores, growth = await idle_window(
                    meter, [playlist_url(s, ports.hls_base_url) for s in sessions], window_s
                )
                rows.append(Row(f"{target} idle", cores, target, growth))
            rss_per_session = (rss_mb(session_pid) - rss_before) / len(sessions)
            status = await worker_status(ports.addr("video"))
            for session in sessions[10:]:
                await client.end(session)
            sessions = sessions[:10]

            # One session speaking a long text (nine idle beside it, as before: their cost is subtracted).
            speaker = sessions[0]
            meter.start()
            alone_result = await client.speak(speaker, SPEECH)
            cores = meter.stop()
            rows.append(Row("1 speaking + 9 idle", cores, 10, wall_s=meter.wall_s, speech_s=spoken_s([alone_result])))

            # Six speaking at once while ten more idle.
            for _ in range(6):
                session = await client.create()
                sessions.append(session)
                watchers.append(asyncio.create_task(watch_stalls(client, session, stalls)))
            await asyncio.sleep(3.0)
            speakers = sessions[:6]
            stalls_before = len(stalls)
            meter.start()
            results: list[SpeakResult] = await asyncio.gather(*(client.speak(s, SHORT) for s in speakers))
            cores = meter.stop()
            rows.append(Row("6 speaking + 10 idle", cores, 16, wall_s=meter.wall_s, speech_s=spoken_s(results)))
            concurrent = [r.latency.first_speech_segment_us / 1000 for r in results if r.latency is not None]
            completed = sum(r.reason == session_pb2.FINISH_REASON_COMPLETED for r in results)
            stalled_in_speech = sum(stalls[stalls_before:])

            # One speaker at a time, a short answer, as a viewer polling the playlist sees it.
            url = playlist_url(speaker, ports.hls_base_url)
            for _ in range(5):
                result = await client.speak(speaker, LATENCY_TEXT, hls_url=url)
                if result.first_speech_ms is not None:
                    first_speech.append(result.first_speech_ms)
                if result.latency is not None:
                    alone.append(result.latency.first_speech_segment_us / 1000)
                await asyncio.sleep(1.0)
        finally:
            for task in watchers:
                task.cancel()
            for session in sessions:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await client.end(session)
            await client.close()

    names = list(SERVICE_ORDER)
    print(f"\nInfiniteTalk Live density benchmark ({os.cpu_count()} CPUs, photo avatar 512x512, Piper)\n")
    print("| load | " + " | ".join(names) + " | total | cost | playlists vs real time |")
    print("|---|" + "---:|" * (len(names) + 3))
    # Idle cost grows linearly with sessions: idle(n) = idle(1) + (n - 1) x marginal (from the 1 and 10 rows).
    marginal = (rows[1].total - rows[0].total) / 9

    def idle(n: int) -> float:
        return rows[0].total + (n - 1) * marginal

    for row in rows:
        cells = " | ".join(f"{row.cores[name]:.3f}" for name in names)
        if row.speech_s:
            # What the speakers add over the same sessions idling, per second of speech spoken: the cores one
            # speaking session keeps busy while it speaks.
            extra_cpu_s = (row.total - idle(row.sessions)) * row.wall_s
            per_session = f"{extra_cpu_s / row.speech_s + marginal:.3f} per speaking session"
        else:
            per_session = f"{marginal if row.sessions > 1 else row.total:.3f} per idle session"
        growth = f"{min(row.growth):.3f}-{max(row.growth):.3f}" if row.growth else ""
        print(f"| {row.load} | {cells} | {row.total:.3f} | {per_session} | {growth} |")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| stalled frames, 6 speaking + 10 idle | {stalled_in_speech} |")
    print(f"| stalled frames, whole run | {sum(stalls)} |")
    print(f"| utterances completed, 6 speaking | {completed} / 6 |")
    for label, values in (("as a viewer polling it sees it", first_speech), ("the server's figure", alone)):
        if values:
            print(
                f"| one speaker: Say -> first speech segment on the playlist, {label}, median / p95 (ms) | "
                f"{statistics.median(values):.0f} / {percentile(values, 0.95):.0f} |"
            )
    if concurrent:
        print(
            f"| six at once: Say -> first speech segment on the playlist, server, median / p95 (ms) | "
            f"{statistics.median(concurrent):.0f} / {percentile(concurrent, 0.95):.0f} |"
        )
    print(f"| session service memory per session (MB) | {rss_per_session:.2f} |")
    print(f"| video worker: measured capacity (sessions) | {status.capacity} |")
    print(f"| video worker: measured speaking capacity | {status.speaking_capacity} |")
    print(f"| video worker: cost of a speaking stream (cores) | {status.speaking_stream_cores:.3f} |")
    print(f"| video worker: cost of an idle stream (cores) | {status.idle_stream_cores:.4f} |")
    print(f"| video worker: CPU budget (cores) | {status.cpu_budget_cores:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per idle measurement")
    args = parser.parse_args()
    asyncio.run(run(args.window))


if __name__ == "__main__":
    main()
