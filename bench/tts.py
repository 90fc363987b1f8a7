"""TTS cost benchmark: what speech costs the tts process, for the Piper voice and the espeak-ng voice.

The clauses of a short story (split as the session splits a reply) are spoken one after another, each handed over
when the previous one is done, --rounds times per voice. Measured:

- first audio: from handing a clause over to its first audio (ms; median and p95 over clauses);
- real-time factor: from handing a clause over to its last audio, divided by the audio's duration (per clause);
- CPU seconds per second of speech: utime+stime of the whole process (every thread, onnxruntime's pool included)
  over a round, divided by the round's audio seconds (median and p95 over rounds);
- idle CPU: CPU seconds per second the process uses with nothing to do, for --idle-s seconds after start-up and again
  right after speaking (should be ~0: no spinning or polling threads).

Two setups: in-process (the engines loaded as `python -m services.tts` loads them and called as
services/tts/service.py calls them: `engine.synthesize`, then resampling to 24 kHz on a worker thread), and through
the real service (`python -m services.tts` on free loopback ports, clauses streamed through TtsService.Synthesize, its
CPU time read from /proc/<pid>/stat). With --sessions N, N service streams speak at once (CPU per second of all their
speech; first audio then includes waiting for the other sessions' synthesis).

With --simultaneous (service only), N warmed-up streams each Say a 3-clause reply at the same instant, --rounds times
per voice: the burst a live stack sees when several avatars answer together. Measured per stream and round: first
audio (from sending the reply's clauses to its first audio), stalls (total gap a player starting at the first audio
would hear, waiting for later audio), last audio (until the whole reply is made); and the process's CPU seconds per
burst.

Usage: .venv/bin/python -m bench.tts [--rounds 3] [--idle-s 5] [--sessions 1] [--simultaneous]
[--only inprocess|service]
(from the repo root; TTS_THREADS, TTS_CONCURRENCY and other tts variables in the environment apply to both setups)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from avatar.v1 import tts_pb2_grpc
from bench.stats import percentile
from infinitetalk_live.ports import free_port
from infinitetalk_live.procstats import cpu_seconds
from infinitetalk_live.stack import check_health
from infinitetalk_live_client.avatar.v1 import media_pb2, tts_pb2
from services.common.clauses import split_clauses
from services.common.media import SAMPLE_RATE_HZ

STORY = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs and watched the dark water for travellers. "
    "One stormy evening, a small boat appeared, tossed by the waves. He lit the great lamp and waited. "
    "By morning, the sailors were safe in the harbour, and the whole village came to thank him."
)
# A reply as the session splits it into clauses: a short first clause, two sentence-sized ones.
REPLY = (
    "Sure, I can help with that. The lighthouse keeper climbed the winding stairs every night. "
    "He watched the dark water for travellers until morning came."
)
VOICES = {"piper": "joe", "espeak": "espeak-en-us"}
# Keys that would make the service load cloud voices too: the bench measures the offline engines alone.
CLOUD_KEYS = ("ELEVENLABS_API_KEY", "ELEVENLABS_BASE_URL", "OPENAI_API_KEY", "OPENAI_TTS_BASE_URL", "OPENAI_BASE_URL")


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


@dataclass
class Figures:
    """One voice in one setup."""

    first_audio_ms: list[float] = field(default_factory=list)
    rtf: list[float] = field(default_factory=list)
    cpu_per_speech_s: list[float] = field(default_factory=list)


@dataclass
class Burst:
    """One voice, --simultaneous: per stream and round, and per round."""

    first_audio_ms: list[float] = field(default_factory=list)
    stall_ms: list[float] = field(default_factory=list)
    last_audio_ms: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # per burst
    cpu_per_speech_s: list[float] = field(default_factory=list)  # per burst


@dataclass
class Idle:
    after_start: float = 0.0  # CPU-s per s
    after_speech: float = 0.0
    threads: int = 0


async def idle_cpu(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


# --- in-process -----------------------------------------------------------------------------------------------------


async def speak_in_process(engine, voice: str, text: str) -> tuple[float, float, float]:
    """(first audio s, total s, audio s) for one clause, called as the service calls the engine."""
    from services.tts.resample import resample

    started = time.perf_counter()
    first = None
    samples = 0
    async for chunk in engine.synthesize(text, voice):
        pcm = await asyncio.to_thread(resample, chunk.pcm, chunk.sample_rate_hz, SAMPLE_RATE_HZ)
        first = first if first is not None else time.perf_counter() - started
        samples += len(pcm)
    return first or 0.0, time.perf_counter() - started, samples / SAMPLE_RATE_HZ


async def bench_in_process(clauses: list[str], rounds: int, idle_s: float) -> tuple[dict[str, Figures], Idle]:
    from services.tts.registry import load_engines

    pid = os.getpid()
    engines = await asyncio.to_thread(load_engines, "piper")
    by_name = {engine.name: engine for engine in engines}
    idle = Idle(after_start=await idle_cpu(pid, idle_s))
    results: dict[str, Figures] = {}
    for name, voice in VOICES.items():
        engine = by_name[name]
        figures = results[name] = Figures()
        await speak_in_process(engine, voice, "Hello.")  # warm-up, not counted
        for _ in range(rounds):
            cpu0, audio = cpu_seconds(pid), 0.0
            for clause in clauses:
                first, total, seconds = await speak_in_process(engine, voice, clause)
                figures.first_audio_ms.append(first * 1000)
                figures.rtf.append(total / seconds)
                audio += seconds
            figures.cpu_per_speech_s.append((cpu_seconds(pid) - cpu0) / audio)
    idle.after_speech = await idle_cpu(pid, idle_s)
    idle.threads = thread_count(pid)
    return results, idle


# --- through the service --------------------------------------------------------------------------------------------


async def speak_stream(stub: tts_pb2_grpc.TtsServiceStub, voice: str, clauses: list[str], rounds: int, out: Figures):
    """One Synthesize stream speaking the clauses `rounds` times (after a warm-up clause); returns audio seconds."""
    call = stub.Synthesize()
    config = tts_pb2.SynthesizeConfig(session_id="bench", voice=voice, sample_rate_hz=SAMPLE_RATE_HZ)
    await call.write(tts_pb2.SynthesizeRequest(config=config))
    audio = 0.0
    texts = [("warm-up", "Hello.")] + [(f"r{r}", c) for r in range(rounds) for c in clauses]
    for index, (uid, text) in enumerate(texts):
        clause = media_pb2.TextClause(utterance_id=uid, clause_index=index, text=text)
        started = time.perf_counter()
        await call.write(tts_pb2.SynthesizeRequest(clause=clause))
        first = None
        samples = 0
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise RuntimeError("the tts stream ended early")
            kind = response.WhichOneof("response")
            if kind == "audio":
                first = first if first is not None else time.perf_counter() - started
                samples += len(response.audio.pcm_s16le) // 2
            elif kind == "clause_done":
                break
            elif kind == "error":
                raise RuntimeError(f"tts failed: {response.error.message}")
        if uid != "warm-up":
            out.first_audio_ms.append((first or 0.0) * 1000)
            out.rtf.append((time.perf_counter() - started) / (samples / SAMPLE_RATE_HZ))
            audio += samples / SAMPLE_RATE_HZ
    await call.done_writing()
    return audio


@contextlib.asynccontextmanager
async def tts_process() -> AsyncIterator[tuple[int, str]]:
    """`python -m services.tts` (offline voices only) on free loopback ports, once it is SERVING: (pid, address)."""
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in CLOUD_KEYS}
    env.update({"HOST": "127.0.0.1", "PORT": str(port), "METRICS_PORT": str(metrics_port), "TTS_PROVIDER": "piper"})
    env.pop("TTS_ENGINE", None)
    log_path = Path(tempfile.mkdtemp(prefix="infinitetalk-bench-tts-")) / "tts.log"
    addr = f"127.0.0.1:{port}"
    with open(log_path, "wb") as log_file:  # noqa: ASYNC230 - once, before the process starts
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.tts", env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 180
            while not await check_health(addr, timeout_s=1.0):
                if process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the tts service did not start; see {log_path}")
                await asyncio.sleep(0.2)
            yield process.pid, addr
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()


async def bench_service(
    clauses: list[str], rounds: int, idle_s: float, sessions: int
) -> tuple[dict[str, Figures], Idle]:
    async with tts_process() as (pid, addr):
        idle = Idle(after_start=await idle_cpu(pid, idle_s))
        results: dict[str, Figures] = {}
        async with grpc.aio.insecure_channel(addr) as channel:
            stub = tts_pb2_grpc.TtsServiceStub(channel)
            for name, voice in VOICES.items():
                figures = results[name] = Figures()
                # One stream per round gives a CPU figure per round; streams of all sessions run together.
                for _ in range(rounds):
                    per_session = [Figures() for _ in range(sessions)]
                    cpu0 = cpu_seconds(pid)
                    audio = await asyncio.gather(*(speak_stream(stub, voice, clauses, 1, f) for f in per_session))
                    figures.cpu_per_speech_s.append((cpu_seconds(pid) - cpu0) / sum(audio))
                    for f in per_session:
                        figures.first_audio_ms += f.first_audio_ms
                        figures.rtf += f.rtf
        idle.after_speech = await idle_cpu(pid, idle_s)
        idle.threads = thread_count(pid)
        return results, idle


async def open_stream(stub: tts_pb2_grpc.TtsServiceStub, voice: str):
    """A Synthesize stream, configured and warmed up (one short clause spoken and done)."""
    call = stub.Synthesize()
    config = tts_pb2.SynthesizeConfig(session_id="bench", voice=voice, sample_rate_hz=SAMPLE_RATE_HZ)
    await call.write(tts_pb2.SynthesizeRequest(config=config))
    await call.write(tts_pb2.SynthesizeRequest(clause=media_pb2.TextClause(utterance_id="warm-up", text="Hello.")))
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            raise RuntimeError("the tts stream ended early")
        if response.WhichOneof("response") == "clause_done":
            return call
        if response.WhichOneof("response") == "error":
            raise RuntimeError(f"tts failed: {response.error.message}")


async def say(call, uid: str, clauses: list[str]) -> tuple[float, float, float, float]:
    """Sends an utterance's clauses at once and reads its audio: (first audio s, stall s, last audio s, audio s).
    Stall: the gaps a player that starts at the first piece and plays every piece on arrival would hear."""
    started = time.perf_counter()
    for index, text in enumerate(clauses):
        clause = media_pb2.TextClause(utterance_id=uid, clause_index=index, text=text)
        await call.write(tts_pb2.SynthesizeRequest(clause=clause))
    first = None
    play_end = stall = audio = 0.0
    while True:
        response = await call.read()
        now = time.perf_counter() - started
        if response is grpc.aio.EOF:
            raise RuntimeError("the tts stream ended early")
        kind = response.WhichOneof("response")
        if kind == "audio":
            seconds = len(response.audio.pcm_s16le) / 2 / SAMPLE_RATE_HZ
            if first is None:
                first = play_end = now
            stall += max(0.0, now - play_end)
            play_end = max(play_end, now) + seconds
            audio += seconds
        elif kind == "clause_done" and response.clause_done.clause_index == len(clauses) - 1:
            return first or 0.0, stall, now, audio
        elif kind == "error":
            raise RuntimeError(f"tts failed: {response.error.message}")


async def bench_bursts(sessions: int, rounds: int) -> dict[str, Burst]:
    async with tts_process() as (pid, addr), grpc.aio.insecure_channel(addr) as channel:
        return await run_bursts(tts_pb2_grpc.TtsServiceStub(channel), pid, sessions, rounds)


async def run_bursts(stub: tts_pb2_grpc.TtsServiceStub, pid: int, sessions: int, rounds: int) -> dict[str, Burst]:
    clauses = split_clauses(REPLY)
    results: dict[str, Burst] = {}
    for name, voice in VOICES.items():
        burst = results[name] = Burst()
        calls = [await open_stream(stub, voice) for _ in range(sessions)]
        for r in range(rounds):
            await asyncio.sleep(0.5)  # the warm-up's or the last burst's threads settle
            cpu0 = cpu_seconds(pid)
            outcomes = await asyncio.gather(*(say(call, f"r{r}", clauses) for call in calls))
            cpu = cpu_seconds(pid) - cpu0
            burst.cpu_s.append(cpu)
            burst.cpu_per_speech_s.append(cpu / sum(o[3] for o in outcomes))
            for first, stall, last, _ in outcomes:
                burst.first_audio_ms.append(first * 1000)
                burst.stall_ms.append(stall * 1000)
                burst.last_audio_ms.append(last * 1000)
        for call in calls:
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
    return results


def print_bursts(results: dict[str, Burst], sessions: int, rounds: int) -> None:
    env = {k: os.environ.get(k) or "default" for k in ("TTS_THREADS", "TTS_CONCURRENCY")}
    print(
        f"\nSimultaneous replies: {sessions} streams each Say {len(split_clauses(REPLY))} clauses at once, {rounds} "
        f"rounds per voice (TTS_THREADS={env['TTS_THREADS']}, TTS_CONCURRENCY={env['TTS_CONCURRENCY']})\n"
    )
    print(
        f"| {'voice':6s} | {'first audio ms: median':>22s} | {'max':>6s} | {'stall ms: max':>13s} | "
        f"{'last audio ms: max':>18s} | {'CPU-s per burst':>15s} | {'CPU-s per s of speech':>21s} |"
    )
    print(f"|{'-' * 8}|{'-' * 24}|{'-' * 8}|{'-' * 15}|{'-' * 20}|{'-' * 17}|{'-' * 23}|")
    for name, b in results.items():
        print(
            f"| {name:6s} | {statistics.median(b.first_audio_ms):22.0f} | {max(b.first_audio_ms):6.0f} | "
            f"{max(b.stall_ms):13.0f} | {max(b.last_audio_ms):18.0f} | {statistics.median(b.cpu_s):15.2f} | "
            f"{statistics.median(b.cpu_per_speech_s):21.3f} |"
        )
    for name, b in results.items():
        firsts = ", ".join(f"{v:.0f}" for v in sorted(b.first_audio_ms))
        print(f"\n{name} first audio ms, all streams and rounds: {firsts}")


# --- report ---------------------------------------------------------------------------------------------------------


def print_tables(setups: dict[str, tuple[dict[str, Figures], Idle]], clauses: int, rounds: int, sessions: int) -> None:
    threads = os.environ.get("TTS_THREADS") or "default"
    print(
        f"\nTTS cost ({clauses} clauses x {rounds} rounds per voice, {SAMPLE_RATE_HZ} Hz out, TTS_THREADS={threads}; "
        f"service streams at once: {sessions})\n"
    )
    columns = [f"{name} {stat}" for name in VOICES for stat in ("median", "p95")]
    print(f"| {'measure':40s} | " + " | ".join(f"{c:>14s}" for c in columns) + " |")
    print(f"|{'-' * 42}|" + "|".join("-" * 16 for _ in columns) + "|")
    for setup, (results, _) in setups.items():
        for label, attr, fmt in (
            ("first audio (ms)", "first_audio_ms", "14.0f"),
            ("real-time factor", "rtf", "14.3f"),
            ("CPU-s per s of speech", "cpu_per_speech_s", "14.3f"),
        ):
            cells = []
            for name in VOICES:
                values = getattr(results[name], attr)
                cells += [format(statistics.median(values), fmt), format(percentile(values, 0.95), fmt)]
            print(f"| {setup + ': ' + label:40s} | " + " | ".join(cells) + " |")
    print(f"\n| {'process':12s} | {'idle CPU-s per s, after start':>30s} | {'after speaking':>16s} | {'threads':>8s} |")
    print(f"|{'-' * 14}|{'-' * 32}|{'-' * 18}|{'-' * 10}|")
    for setup, (_, idle) in setups.items():
        print(f"| {setup:12s} | {idle.after_start:30.4f} | {idle.after_speech:16.4f} | {idle.threads:8d} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=1, help="service streams speaking at once")
    parser.add_argument("--simultaneous", action="store_true", help="--sessions streams each Say a reply at once")
    parser.add_argument("--only", choices=("inprocess", "service"))
    args = parser.parse_args()
    if args.simultaneous:
        print_bursts(await bench_bursts(args.sessions, args.rounds), args.sessions, args.rounds)
        return
    clauses = split_clauses(STORY)
    setups: dict[str, tuple[dict[str, Figures], Idle]] = {}
    if args.only != "service":
        setups["in-process"] = await bench_in_process(clauses, args.rounds, args.idle_s)
    if args.only != "inprocess":
        setups["service"] = await bench_service(clauses, args.rounds, args.idle_s, args.sessions)
    print_tables(setups, len(clauses), args.rounds, args.sessions)


if __name__ == "__main__":
    asyncio.run(main())
