"""Pipeline benchmark: starts the real stack on free loopback ports and prints a table.

- time from Say to the first speech part (Low-Latency HLS) on the playlist, as a viewer polling the playlist sees it
  (median and p95 over --runs), with the server's own stage split;
- real-time factor (compute time / media time; below 1 is faster than real time) of each stage: tts (through its
  gRPC stream), video render, video encode and packager mux (in-process, one thread each), and of the whole
  pipeline (offline pacing);
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
import numpy as np

from avatar.v1 import tts_pb2_grpc
from bench.stats import percentile
from infinitetalk_live.client import SessionClient, playlist_url
from infinitetalk_live.hls import PlaylistFollower
from infinitetalk_live.ports import SERVICE_ORDER, StackPorts
from infinitetalk_live.procstats import cpu_seconds
from infinitetalk_live.speech_drives import frame_drives
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import media_pb2, session_pb2, tts_pb2
from services.common.clauses import split_clauses
from services.common.h264 import is_idr_sample
from services.common.media import FPS, HEIGHT, SAMPLE_RATE_HZ, SAMPLES_PER_FRAME, WIDTH
from services.packager.audio import ChunkAudio
from services.packager.muxer import MuxerSettings, SessionMuxer, VideoChunk
from services.video.backend import Drive, IdleLoop
from services.video.chunker import ChunkAssembler
from services.video.encoding import EncoderSettings, FrameEncoder
from services.video.photo.backend import DEFAULT_PHOTO_AVATAR, PhotoBackend

TEXT = "Hello there. This is a live avatar speaking, and it answers as soon as it can."
LONG_TEXT = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs and watched the dark water for travellers."
)
CHUNK_FRAMES = 12


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


def bench_stages(pcm: bytes) -> tuple[float, float, float]:
    """Real-time factors (CPU seconds / media seconds, one thread) of the video worker's two stages and the
    packager's, on the frames under `pcm`: render (default photo avatar, 512x512), encode (H.264 chunks) and mux
    (AAC + fMP4 segments)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    drives = frame_drives(samples, [], SAMPLE_RATE_HZ, FPS)
    media_s = len(drives) / FPS
    renderer = PhotoBackend().open(DEFAULT_PHOTO_AVATAR, WIDTH, HEIGHT, FPS, SAMPLE_RATE_HZ, IdleLoop(240))
    renderer.render_one(drives[0])  # preparation (and the JIT) is not per frame
    encoder = FrameEncoder(EncoderSettings(WIDTH, HEIGHT, FPS))
    assembler = ChunkAssembler(CHUNK_FRAMES, encoder.encode)
    render_s = encode_s = 0.0
    chunks = []
    for index, drive in enumerate(drives):
        started = time.process_time()
        frame = renderer.render_one(Drive(index, drive.utterance_id, drive.pcm, drive.phonemes))
        rendered = time.process_time()
        chunk = assembler.add(index, 0, frame.data)
        encode_s += time.process_time() - rendered
        render_s += rendered - started
        if chunk is not None:
            chunks.append(chunk)
    muxer = SessionMuxer(MuxerSettings(WIDTH, HEIGHT, FPS, SAMPLE_RATE_HZ, CHUNK_FRAMES, 1), encoder.sps, encoder.pps)
    started = time.process_time()
    for chunk in chunks:
        start = chunk.start_frame_index * SAMPLES_PER_FRAME * 2
        audio = pcm[start : start + CHUNK_FRAMES * SAMPLES_PER_FRAME * 2]
        audio += bytes(CHUNK_FRAMES * SAMPLES_PER_FRAME * 2 - len(audio))
        frames = tuple(chunk.frames)
        muxer.add_chunk(VideoChunk(frames, tuple(is_idr_sample(f) for f in frames)), ChunkAudio(audio), True)
    mux_s = time.process_time() - started
    return render_s / media_s, encode_s / media_s, mux_s / media_s


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
            render_rtf, encode_rtf, mux_rtf = await asyncio.to_thread(bench_stages, pcm)
            pipeline_rtf = await bench_offline_pipeline(client, ports.hls_base_url)
        finally:
            await client.close()
    finally:
        await supervisor.stop()

    rows = [
        ("Say -> first speech part on playlist (ms)", first_speech),
        ("  server: request -> first audio (ms)", stages["first_audio"]),
        ("  server: request -> first speech frame out (ms)", stages["first_speech_frame"]),
        ("  server: request -> first speech part (ms)", stages["first_speech_segment"]),
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
        ("video render (default avatar: photo, 512x512), one thread", render_rtf),
        ("video encode (H.264 chunks, x264 ultrafast), one thread", encode_rtf),
        ("packager mux of speech (AAC + fMP4 segments), one thread", mux_rtf),
        ("whole pipeline, offline pacing (Say -> playlist ended)", pipeline_rtf),
        ("CPU seconds per media second, all five services, live session", cpu_per_media_s),
    ):
        print(f"| {name:70s} | {value:8.3f} |")


if __name__ == "__main__":
    asyncio.run(main())
