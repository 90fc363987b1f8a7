"""Playout that tells the truth, end to end: a video service with the (tiny, CPU) InfiniteTalk backend renders
slower than real time in chunks; the session holds each utterance back just long enough, says so on WatchSession
(RENDERING with the expected start), and the utterance then plays through without a stalled frame."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import pytest

from infinitetalk_live.client import SessionClient, control_metadata
from infinitetalk_live.hls import fetch
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2

pytestmark = pytest.mark.e2e

SIZE = 64
TEXT = "Hello there. I am rendered in chunks, and I still speak without a single stall."


@pytest.fixture
async def slow_stack():
    ports = StackPorts.free()
    supervisor = Supervisor(
        ports,
        log_dir=Path(tempfile.mkdtemp(prefix="infinitetalk-e2e-it-")),
        extra_env={
            "INFINITETALK": "1",
            "INFINITETALK_TINY": "1",
            "INFINITETALK_DEVICE": "cpu",
            "INFINITETALK_STEPS": "3",
            "INFINITETALK_FPS_ESTIMATE": "8",
            "VIDEO_DEFAULT_AVATAR": "astronaut-infinitetalk",
            "VIDEO_WARM_SIZE": "0",
            "VIDEO_WIDTH": str(SIZE),
            "VIDEO_HEIGHT": str(SIZE),
        },
        report=False,
        gateway=False,
    )
    async with supervisor.running(timeout_s=180):
        yield supervisor


async def stalled_frames(ports: StackPorts) -> float:
    text = (await asyncio.to_thread(fetch, f"http://127.0.0.1:{ports.metrics['session']}/metrics")).decode()
    match = re.search(r"^session_stalled_frames_total ([\d.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_slow_renderer_gets_a_preroll_and_speech_plays_through(slow_stack: Supervisor) -> None:
    client = SessionClient(slow_stack.ports.addr("session"))
    try:
        session = await client.create()
        assert session.avatar == "astronaut-infinitetalk" and session.width == SIZE
        for attempt in range(2):  # the first uses the configured pace estimate, the second the measured pace
            watch = client.stub.WatchSession(
                session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
            )
            await watch.read()
            stalled_before = await stalled_frames(slow_stack.ports)
            await client.stub.Say(
                session_pb2.SayRequest(session_id=session.session_id, text=TEXT), metadata=control_metadata(session)
            )
            rendering = started = finished = None
            async with asyncio.timeout(180):
                while True:
                    event = await watch.read()
                    kind = event.WhichOneof("event")
                    if kind == "state_changed" and event.state_changed.state == session_pb2.SESSION_STATE_RENDERING:
                        rendering = event
                    elif kind == "speech_started":
                        started = event.speech_started
                    elif kind == "speech_finished":
                        finished = event.speech_finished
                        break
            watch.cancel()
            assert rendering is not None, "the session said it is rendering ahead"
            expected = rendering.state_changed.expected_start_us
            assert expected > rendering.media_time_us, "and when speech will start"
            assert started is not None and abs(started.start_us - expected) <= 40_000, (started, expected)
            assert finished is not None and finished.reason == session_pb2.FINISH_REASON_COMPLETED
            duration_frames = (finished.end_us - started.start_us) / 40_000
            assert duration_frames > 81, "long enough for two chunks"
            stalled = await stalled_frames(slow_stack.ports) - stalled_before
            assert stalled <= 2, f"attempt {attempt}: {stalled} frames stalled; {started}; {finished}; {rendering}"
        await client.end(session)
    finally:
        await client.close()
