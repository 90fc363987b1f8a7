"""Provider overhead benchmark: our own latency on top of the providers' latency.

Starts the stack with the OpenAI-compatible LLM pointed at a local server that speaks the OpenAI wire protocol and
answers every request after a fixed 200 ms first-byte delay (then streams the reply at once), and the ElevenLabs voice
at a local server speaking its wire protocol with the same delay. The session's `UtteranceLatency` events give the
time from the request to the first clause (Chat) and to the first audio (Say); minus the provider's 200 ms, that is
what our services add. Median and p95 over --runs.

Usage: .venv/bin/python -m bench.providers [--runs 5]   (from the repo root)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench.stats import percentile
from infinitetalk_live.client import SessionClient
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from tests.fakes.elevenlabs_server import ElevenLabsServer
from tests.fakes.openai_server import FakeOpenAI, Reply

FIRST_BYTE_DELAY_S = 0.2
ANSWER = "Here is a short answer. It has a second sentence too."


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    openai = await FakeOpenAI(default=Reply(text=ANSWER), first_byte_delay_s=FIRST_BYTE_DELAY_S).start()
    elevenlabs = await ElevenLabsServer(first_byte_delay_s=FIRST_BYTE_DELAY_S).start()
    env = {
        "OPENAI_BASE_URL": openai.base_url,
        "OPENAI_API_KEY": "sk-bench",
        "LLM_MODEL": "bench",
        "ELEVENLABS_API_KEY": "xi-bench",
        "ELEVENLABS_BASE_URL": elevenlabs.url,
    }
    ports = StackPorts.free()
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-bench-"))
    supervisor = Supervisor(ports, log_dir=logs, extra_env=env, report=False, gateway=False)
    await supervisor.start()
    first_clause, first_audio, cloud_audio = [], [], []
    try:
        await supervisor.wait_healthy(timeout_s=120)
        client = SessionClient(ports.addr("session"))
        try:
            session = await client.create(llm_provider="openai")
            for _ in range(args.runs + 1):
                result = await client.speak(session, "Tell me something.", chat=True)
                assert result.latency is not None, result.errors
                first_clause.append(result.latency.first_clause_us / 1000)
                first_audio.append((result.latency.first_audio_us - result.latency.first_clause_us) / 1000)
                await asyncio.sleep(0.5)
            await client.end(session)
            session = await client.create(voice="elevenlabs:JBFqnCBsd6RMkjVDRZzb")
            for _ in range(args.runs + 1):
                result = await client.speak(session, "Hello there, how are you?")
                assert result.latency is not None, result.errors
                cloud_audio.append(result.latency.first_audio_us / 1000)
                await asyncio.sleep(0.5)
            await client.end(session)
        finally:
            await client.close()
    finally:
        await supervisor.stop()
        await openai.stop()
        await elevenlabs.stop()
    # The first run of each warms the connections up.
    first_clause, first_audio, cloud_audio = first_clause[1:], first_audio[1:], cloud_audio[1:]
    delay_ms = FIRST_BYTE_DELAY_S * 1000
    print(f"\nProvider overhead ({args.runs} runs; the fake providers add {delay_ms:.0f} ms before their first byte)\n")
    print(f"| {'measure':58s} | {'median':>8s} | {'p95':>8s} |")
    print(f"|{'-' * 60}|{'-' * 10}|{'-' * 10}|")
    for name, values in (
        ("Chat request -> first clause (ms)", first_clause),
        ("  of which ours: minus the provider's first-byte delay (ms)", [v - delay_ms for v in first_clause]),
        ("first clause -> first audio, offline Piper voice (ms)", first_audio),
        ("Say request -> first audio, ElevenLabs voice (ms)", cloud_audio),
        ("  of which ours: minus the provider's first-byte delay (ms)", [v - delay_ms for v in cloud_audio]),
    ):
        print(f"| {name:58s} | {statistics.median(values):8.0f} | {percentile(values, 0.95):8.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
