"""Low-Latency HLS through the real Envoy, with real processes: blocking playlist reload held and answered as parts
appear, refused when too far ahead, fifty viewers held at once; and Debian's ffmpeg, a player without low-latency
support, records the same playlist (speech, an interrupt, idle) with no decode error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from infinitetalk_live.client import SessionClient, control_metadata
from infinitetalk_live.hls import fetch_playlist, parse_playlist
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.media import FPS, SAMPLE_RATE_HZ
from services.packager.fmp4 import AUDIO_TRACK_ID, VIDEO_TRACK_ID
from tests.hls_analysis import track_ends
from tests.prometheus import metric

pytestmark = pytest.mark.e2e

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
PART_S = 0.16


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway_stack() -> AsyncIterator[Supervisor]:
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-llhls-"))
    async with Supervisor(StackPorts.free(), log_dir=logs, report=False).running() as supervisor:
        yield supervisor


@contextlib.asynccontextmanager
async def live_session(stack: Supervisor) -> AsyncIterator[tuple[SessionClient, session_pb2.Session, str]]:
    client = SessionClient(stack.ports.addr("session"))
    session = await client.create()
    try:
        yield client, session, stack.ports.gateway_url + session.playlist_path
    finally:
        with contextlib.suppress(Exception):
            await client.end(session)
        await client.close()


def next_part(text: str) -> tuple[int, int]:
    """(msn, part) of the preload hint: the part that comes next."""
    match = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg(\d+)\.(\d+)\.m4s"', text)
    assert match, text
    return int(match.group(1)), int(match.group(2))


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, float, dict[str, str]]:
    started = time.monotonic()
    async with http.get(url) as response:
        body = await response.text()
        return response.status, body, time.monotonic() - started, dict(response.headers)


@pytest.mark.asyncio(loop_scope="module")
async def test_blocking_reload_through_the_gateway(gateway_stack: Supervisor) -> None:
    async with live_session(gateway_stack) as (_, _, url), aiohttp.ClientSession() as http:
        await asyncio.sleep(1.5)
        status, text, _, headers = await get(http, url)
        assert status == 200 and "CAN-BLOCK-RELOAD=YES" in text and headers["Cache-Control"] == "no-cache"

        # Held until the next part exists, then answered at once: well within a part's duration of waiting.
        for _ in range(5):
            msn, part = next_part(text)
            status, text, waited, headers = await get(http, f"{url}?_HLS_msn={msn}&_HLS_part={part}")
            assert status == 200 and headers["Cache-Control"] == "no-cache"
            assert f'URI="seg{msn}.{part}.m4s"' in text, "the part asked for is in the answer"
            assert waited < PART_S + 0.35, f"held {waited:.3f} s for a part that comes every {PART_S} s"

        # Far ahead: refused at once.
        status, body, waited, _ = await get(http, f"{url}?_HLS_msn={msn + 5}")
        assert status == 400 and "too far ahead" in body and waited < 1.0

        # The hinted part's URI, asked before it exists, comes when it does.
        msn, part = next_part(text)
        base = url.rsplit("/", 1)[0]
        async with http.get(f"{base}/seg{msn}.{part}.m4s") as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=86400, immutable"
            data = await response.read()
        assert data[4:8] == b"moof"


@pytest.mark.asyncio(loop_scope="module")
async def test_fifty_viewers_held_at_once_are_all_answered(gateway_stack: Supervisor) -> None:
    async with live_session(gateway_stack) as (_, _, url), aiohttp.ClientSession() as http:
        await asyncio.sleep(1.5)
        _, text, _, _ = await get(http, url)
        msn, part = next_part(text)
        answers = await asyncio.gather(*(get(http, f"{url}?_HLS_msn={msn}&_HLS_part={part}") for _ in range(50)))
    assert [status for status, _, _, _ in answers] == [200] * 50
    assert all(f'URI="seg{msn}.{part}.m4s"' in body for _, body, _, _ in answers)
    assert max(waited for _, _, waited, _ in answers) < 2.0


@pytest.mark.asyncio(loop_scope="module")
async def test_every_parts_audio_reaches_its_videos_end(gateway_stack: Supervisor) -> None:
    """Players stop at the end of the shorter track: with each commit's lookahead the packager ends every part's
    audio at (less than one AAC packet after) its video's end, through speech, an interrupt and silence, and the
    lookahead is never contradicted by the audio committed after it."""
    parts_per_segment = 6  # 960 ms segments of 160 ms parts
    packet_s = 1024 / SAMPLE_RATE_HZ
    ends: list[tuple[float, float]] = []
    async with live_session(gateway_stack) as (client, session, url), aiohttp.ClientSession() as http:
        await asyncio.sleep(1.0)
        _, text, _, _ = await get(http, url)
        msn, part = next_part(text)
        base = url.rsplit("/", 1)[0]

        async def speak_and_interrupt() -> None:
            metadata = control_metadata(session)
            request = session_pb2.SayRequest(session_id=session.session_id, text=LONG_ANSWER)
            await client.stub.Say(request, metadata=metadata)
            await asyncio.sleep(2.5)
            await client.stub.Interrupt(session_pb2.InterruptRequest(session_id=session.session_id), metadata=metadata)

        speaking = asyncio.create_task(speak_and_interrupt())
        for _ in range(50):  # 8 s: idle, speech, the interrupt, idle again
            async with http.get(f"{base}/seg{msn}.{part}.m4s") as response:  # held until the part exists
                assert response.status == 200
                tracks = track_ends(await response.read())
            ends.append((tracks[VIDEO_TRACK_ID] / (FPS * 1000), tracks[AUDIO_TRACK_ID] / SAMPLE_RATE_HZ))
            msn, part = (msn + 1, 0) if part + 1 == parts_per_segment else (msn, part + 1)
        await speaking
        mismatches = await asyncio.to_thread(
            metric, gateway_stack.ports.metrics["packager"], "packager_audio_lookahead_mismatches_total"
        )
    short = [(video, audio) for video, audio in ends if not video <= audio < video + packet_s]
    assert not short, f"parts whose audio does not end with their video: {short[:5]}"
    assert mismatches == 0


@pytest.mark.skipif(FFMPEG is None or FFPROBE is None, reason="Debian's ffmpeg is not installed")
@pytest.mark.asyncio(loop_scope="module")
async def test_ffmpeg_records_the_low_latency_playlist(gateway_stack: Supervisor, tmp_path: Path) -> None:
    """A player that knows nothing of parts (ffmpeg's HLS demuxer) plays the same playlist from its segments."""
    out = tmp_path / "recording.mp4"
    async with live_session(gateway_stack) as (client, session, url):
        while True:  # ffmpeg probes the first segment: wait until there is one
            playlist = await asyncio.to_thread(fetch_playlist, url)
            if playlist is not None and playlist.segments:
                break
            await asyncio.sleep(0.1)
        recorder = await asyncio.create_subprocess_exec(
            FFMPEG, "-nostdin", "-loglevel", "error", "-live_start_index", "0", "-i", url, "-t", "30", "-c", "copy",
            "-y", str(out),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(2.0)
        first = await client.speak(session, "Hello there. This is a live avatar speaking to a recorder.")
        assert first.reason == session_pb2.FINISH_REASON_COMPLETED
        stub = client.stub
        await stub.Say(
            session_pb2.SayRequest(session_id=session.session_id, text=LONG_ANSWER), metadata=control_metadata(session)
        )
        await asyncio.sleep(2.0)
        await stub.Interrupt(
            session_pb2.InterruptRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        _, errors = await asyncio.wait_for(recorder.communicate(), 90)
    assert recorder.returncode == 0, errors.decode()[-2000:]
    decode = await asyncio.to_thread(
        subprocess.run,
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(out), "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    assert decode.returncode == 0 and decode.stderr.strip() == "", decode.stderr[-2000:]
    probe = await asyncio.to_thread(
        subprocess.run,
        [FFPROBE, "-v", "error", "-show_entries", "stream=codec_type,duration", "-of", "json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    durations = {s["codec_type"]: float(s["duration"]) for s in json.loads(probe.stdout)["streams"]}
    assert set(durations) == {"video", "audio"}
    assert durations["video"] >= 29.0, durations
    assert abs(durations["video"] - durations["audio"]) <= 0.04 + 1e-6, durations  # within one frame


LONG_ANSWER = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by the "
    "sound of its horn."
)


def test_the_parser_sees_parts() -> None:
    text = (
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=0.16\n#EXT-X-MEDIA-SEQUENCE:3\n"
        "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:40.000Z\n"
        '#EXT-X-PART:DURATION=0.16,URI="seg3.0.m4s",INDEPENDENT=YES\n#EXTINF:0.16,\nseg3.m4s\n'
        "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:40.160Z\n"
        '#EXT-X-PART:DURATION=0.16,URI="seg4.0.m4s",INDEPENDENT=YES\n'
        '#EXT-X-PART:DURATION=0.16,URI="seg4.1.m4s",INDEPENDENT=YES\n'
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg4.2.m4s"\n'
    )
    playlist = parse_playlist(text)
    assert [(p.sequence, p.index, p.uri) for p in playlist.parts] == [
        (3, 0, "seg3.0.m4s"),
        (4, 0, "seg4.0.m4s"),
        (4, 1, "seg4.1.m4s"),
    ]
    assert [s.sequence for s in playlist.segments] == [3]
    covered = playlist.covered_until()
    assert covered is not None and covered.isoformat() == "2025-06-15T15:06:40.480000+00:00"
