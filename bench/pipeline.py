"""Pipeline benchmark: starts the real stack on free loopback ports and prints a table.

- time from Say to the first speech segment on the playlist, as a viewer polling the playlist sees it
  (median and p95 over --runs), with the server's own stage split;
- real-time factor (compute time / media time; below 1 is faster than real time) of each stage driven on its own
  through its gRPC stream: tts, video render, encode (packager), and of the whole pipeline (offline pacing);
- CPU seconds (all five processes) per media second of a live session.

Usage: .venv/bin/python -m bench.pipeline [--runs 5]   (from the repo root)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from avatar.v1 import (
    media_pb2,
    packager_pb2,
    packager_pb2_grpc,
    session_pb2,
    tts_pb2,
    tts_pb2_grpc,
    video_pb2,
    video_pb2_grpc,
)
from infinitetalk.client import SessionClient, playlist_url
from infinitetalk.hls import PlaylistFollower
from infinitetalk.stack import SERVICE_ORDER, StackPorts, Supervisor
from services.common.clauses import split_clauses
from services.common.media import FPS, HEIGHT, SAMPLE_RATE_HZ, SAMPLES_PER_FRAME, WIDTH

TEXT = "Hello there. This is a live avatar speaking, and it answers as soon as it can."
LONG_TEXT = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs and watched the dark water for travellers."
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_tts(addr: str, text: str) -> tuple[float, float, bytes]:
    """(rtf, first-audio seconds, pcm) for `text` through the tts stream."""
    async with grpc.aio.insecure_channel(addr) as channel:
        call = tts_pb2_grpc.TtsServiceStub(channel).Synthesize()
        await call.write(tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig(sample_rate_hz=SAMPLE_RATE_HZ)))
        clauses = split_clauses(text)
        started = time.perf_counter()
        for index, clause in enumerate(clauses):
            clause_msg = media_pb2.TextClause(utterance_id="bench", clause_index=index, text=clause)
            await call.write(tts_pb2.SynthesizeRequest(clause=clause_msg))
        pcm = bytearray()
        first = None
        done = 0
        async for response in call:
            kind = response.WhichOneof("response")
            if kind == "audio":
                first = first or time.perf_counter() - started
                pcm += response.audio.pcm_s16le
            elif kind == "clause_done":
                done += 1
                if done == len(clauses):
                    break
        elapsed = time.perf_counter() - started
        call.cancel()
    return elapsed / (len(pcm) / 2 / SAMPLE_RATE_HZ), first or 0.0, bytes(pcm)


async def bench_video(addr: str, pcm: bytes) -> tuple[float, list[bytes]]:
    """(rtf, frames) rendering the frames under `pcm` through the video stream as fast as it goes."""
    frames_needed = len(pcm) // 2 // SAMPLES_PER_FRAME
    async with grpc.aio.insecure_channel(addr) as channel:
        call = video_pb2_grpc.VideoServiceStub(channel).Render()
        await call.write(
            video_pb2.RenderRequest(
                config=video_pb2.RenderConfig(
                    session_id="bench", width=WIDTH, height=HEIGHT, fps=FPS, sample_rate_hz=SAMPLE_RATE_HZ
                )
            )
        )
        started = time.perf_counter()

        async def feed() -> None:
            for index in range(frames_needed):
                chunk = pcm[index * SAMPLES_PER_FRAME * 2 : (index + 1) * SAMPLES_PER_FRAME * 2]
                drive = video_pb2.FrameDrive(frame_index=index, utterance_id="bench", pcm_s16le=chunk)
                await call.write(video_pb2.RenderRequest(frame=drive))

        feeder = asyncio.create_task(feed())
        frames = []
        async for response in call:
            if not response.HasField("frame"):
                continue
            frames.append(response.frame.data)
            if len(frames) == frames_needed:
                break
        elapsed = time.perf_counter() - started
        await feeder
        call.cancel()
    return elapsed / (frames_needed / FPS), frames


async def bench_encode(addr: str, frames: list[bytes], pcm: bytes) -> float:
    """Real-time factor of the packager encoding `frames` with their audio as fast as it can."""
    epoch = Timestamp()
    epoch.GetCurrentTime()
    session_id = "bench" + os.urandom(8).hex()
    async with grpc.aio.insecure_channel(addr) as channel:
        call = packager_pb2_grpc.PackagerServiceStub(channel).Publish()
        await call.write(
            packager_pb2.PublishRequest(
                config=packager_pb2.PublishConfig(
                    session_id=session_id,
                    width=WIDTH,
                    height=HEIGHT,
                    fps=FPS,
                    sample_rate_hz=SAMPLE_RATE_HZ,
                    segment_duration_ms=1000,
                    media_epoch=epoch,
                )
            )
        )
        started = time.perf_counter()
        for index, data in enumerate(frames):
            video = media_pb2.VideoFrame(
                frame_index=index,
                pts_us=index * 1_000_000 // FPS,
                width=WIDTH,
                height=HEIGHT,
                pixel_format=media_pb2.PIXEL_FORMAT_I420,
                data=data,
            )
            chunk = pcm[index * SAMPLES_PER_FRAME * 2 : (index + 1) * SAMPLES_PER_FRAME * 2]
            frame = packager_pb2.MediaFrame(video=video, pcm_s16le=chunk, speech=True)
            await call.write(packager_pb2.PublishRequest(frame=frame))
        await call.write(packager_pb2.PublishRequest(end=packager_pb2.EndOfStream()))
        async for response in call:
            if response.WhichOneof("response") == "ended":
                break
        elapsed = time.perf_counter() - started
    return elapsed / (len(frames) / FPS)


async def bench_offline_pipeline(client: SessionClient, hls_base: str) -> float:
    """Real-time factor of the whole pipeline rendering LONG_TEXT with offline pacing (Say to playlist end)."""
    session = await client.create(pacing=session_pb2.PACING_OFFLINE)
    started = time.perf_counter()
    result = await client.speak(session, LONG_TEXT)
    await client.end(session)
    elapsed = time.perf_counter() - started
    follower = PlaylistFollower(playlist_url(session, hls_base))
    playlist = await asyncio.to_thread(follower.poll)
    media_s = sum(s.duration_s for s in playlist.segments) if playlist else 0.0
    assert result.reason == session_pb2.FINISH_REASON_COMPLETED and media_s > 0
    return elapsed / media_s


async def bench_live(client: SessionClient, supervisor: Supervisor, hls_base: str, runs: int):
    """Say-to-first-speech-segment figures and CPU per media second over `runs` live utterances."""
    session = await client.create()
    url = playlist_url(session, hls_base)
    await asyncio.sleep(2.0)
    pids = [supervisor.pid(name) for name in SERVICE_ORDER]
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    wall_before = time.perf_counter()
    first_speech, stages = [], {"first_audio": [], "first_speech_frame": [], "first_speech_segment": []}
    for _ in range(runs):
        result = await client.speak(session, TEXT, hls_url=url)
        assert result.first_speech_ms is not None
        first_speech.append(result.first_speech_ms)
        if result.latency is not None:
            stages["first_audio"].append(result.latency.first_audio_us / 1000)
            stages["first_speech_frame"].append(result.latency.first_speech_frame_us / 1000)
            stages["first_speech_segment"].append(result.latency.first_speech_segment_us / 1000)
        await asyncio.sleep(1.0)
    media_s = time.perf_counter() - wall_before  # live: media time advances with wall time
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    await client.end(session)
    return first_speech, stages, cpu / media_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ports = StackPorts.free()
    supervisor = Supervisor(ports, log_dir=Path(tempfile.mkdtemp(prefix="infinitetalk-bench-")), report=False)
    await supervisor.start()
    try:
        await supervisor.wait_healthy(timeout_s=120)
        client = SessionClient(ports.addr("session"))
        try:
            first_speech, stages, cpu_per_media_s = await bench_live(client, supervisor, ports.hls_base_url, args.runs)
            tts_rtfs, firsts = [], []
            pcm = b""
            for _ in range(args.runs):
                rtf, first, pcm = await bench_tts(ports.addr("tts"), LONG_TEXT)
                tts_rtfs.append(rtf)
                firsts.append(first * 1000)
            video_rtf, frames = await bench_video(ports.addr("video"), pcm)
            encode_rtf = await bench_encode(ports.addr("packager"), frames, pcm)
            pipeline_rtf = await bench_offline_pipeline(client, ports.hls_base_url)
        finally:
            await client.close()
    finally:
        await supervisor.stop()

    rows = [
        ("Say -> first speech segment on playlist (ms)", first_speech),
        ("  server: request -> first audio (ms)", stages["first_audio"]),
        ("  server: request -> first speech frame out (ms)", stages["first_speech_frame"]),
        ("  server: request -> first speech segment (ms)", stages["first_speech_segment"]),
        ("tts: clause -> first audio (ms)", firsts),
    ]
    print(f"\nInfiniteTalk Live pipeline benchmark ({os.cpu_count()} CPUs, {args.runs} runs)\n")
    print(f"| {'measure':48s} | {'median':>8s} | {'p95':>8s} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 10}|")
    for name, values in rows:
        if values:
            print(f"| {name:48s} | {statistics.median(values):8.0f} | {percentile(values, 0.95):8.0f} |")
    print(f"\n| {'real-time factor (compute s / media s; < 1 is faster than real time)':70s} | {'value':>8s} |")
    print(f"|{'-' * 72}|{'-' * 10}|")
    for name, value in (
        ("tts (Piper, 24 kHz), median", statistics.median(tts_rtfs)),
        ("video render (default avatar: photo, 512x512, through gRPC)", video_rtf),
        ("encode (H.264 + AAC fMP4 HLS, through gRPC)", encode_rtf),
        ("whole pipeline, offline pacing (Say -> playlist ended)", pipeline_rtf),
        ("CPU seconds per media second, all five services, live session", cpu_per_media_s),
    ):
        print(f"| {name:70s} | {value:8.3f} |")


if __name__ == "__main__":
    asyncio.run(main())
