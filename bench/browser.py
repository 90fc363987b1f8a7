"""Browser benchmark: what a viewer of the page sees, measured in real headless Chromium.

Starts the stack (services + Envoy + page) on free loopback ports with VIDEO_BURN_CLOCK=1, so every frame
carries the wall-clock time at which it was live. The page's clock reads it back off each displayed frame
(requestVideoFrameCallback + canvas):

- glass-to-glass: display time minus the burned live time, over every frame displayed (median, p95);
- Say -> first speech frame on screen: from pressing Send to the display of the first frame of the answer's speech
  (median and p95 over --runs).

Usage: .venv/bin/python -m bench.browser [--runs 5]   (from the repo root)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import grpc

from avatar.v1 import session_pb2, session_pb2_grpc
from infinitetalk.hls import fetch_playlist
from infinitetalk.stack import StackPorts, Supervisor
from services.video.clock_burn import BITS, BLOCK, MARGIN, PER_ROW
from tests.browser import CHROMIUM, CHROMIUM_ARGS

TEXT = "Hello there. This is a live avatar speaking."

# Reads the burned clock off every displayed frame: [display wall ms, burned ms mod 2**32].
CLOCK_READER = f"""
() => {{
  const video = document.querySelector('#video');
  const canvas = document.createElement('canvas');
  const width = {PER_ROW * BLOCK + 2 * MARGIN}, height = {(BITS // PER_ROW) * BLOCK + 2 * MARGIN};
  canvas.width = width; canvas.height = height;
  const g = canvas.getContext('2d', {{ willReadFrequently: true }});
  window.__frames = [];
  const onFrame = (now, meta) => {{
    const scale = video.videoWidth / 512;
    g.drawImage(video, 0, 0, width * scale, height * scale, 0, 0, width, height);
    const data = g.getImageData(0, 0, width, height).data;
    let value = 0;
    for (let bit = 0; bit < {BITS}; bit++) {{
      const row = Math.floor(bit / {PER_ROW}), col = bit % {PER_ROW};
      const x = {MARGIN} + col * {BLOCK} + {BLOCK // 2}, y = {MARGIN} + row * {BLOCK} + {BLOCK // 2};
      const i = (y * width + x) * 4;
      const luma = (data[i] + data[i + 1] + data[i + 2]) / 3;
      value = (value * 2) + (luma < 128 ? 1 : 0);
    }}
    window.__frames.push([performance.timeOrigin + meta.expectedDisplayTime, value]);
    video.requestVideoFrameCallback(onFrame);
  }};
  video.requestVideoFrameCallback(onFrame);
}}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def speech_start_us(stub, session_id: str, utterance_started: asyncio.Event, result: dict) -> None:
    call = stub.WatchSession(session_pb2.WatchSessionRequest(session_id=session_id))
    await call.read()
    utterance_started.set()
    while True:
        event = await call.read()
        if event.WhichOneof("event") == "speech_started":
            result["start_us"] = event.speech_started.start_us
        if event.WhichOneof("event") == "speech_finished":
            call.cancel()
            return


async def main() -> None:
    from playwright.async_api import async_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ports = StackPorts.free()
    supervisor = Supervisor(
        ports,
        log_dir=Path(tempfile.mkdtemp(prefix="infinitetalk-bench-")),
        extra_env={"VIDEO_BURN_CLOCK": "1"},
        report=False,
    )
    await supervisor.start()
    glass, first_speech = [], []
    try:
        await supervisor.wait_healthy(timeout_s=120)
        async with async_playwright() as playwright, grpc.aio.insecure_channel(ports.addr("session")) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(ports.gateway_url + "/")
            await page.wait_for_function("() => window.__avatar && window.__avatar.sessionId", timeout=30_000)
            await page.wait_for_function("() => document.querySelector('#video').currentTime > 1", timeout=30_000)
            await page.evaluate(CLOCK_READER)
            session_id = await page.evaluate("() => window.__avatar.sessionId")
            playlist = await asyncio.to_thread(fetch_playlist, f"{ports.gateway_url}/hls/{session_id}/index.m3u8")
            assert playlist is not None and playlist.media_sequence == 0
            epoch_ms = playlist.segments[0].program_date_time.timestamp() * 1000
            await page.click("#mode-say")
            for _ in range(args.runs):
                await asyncio.sleep(2.0)
                watching, result = asyncio.Event(), {}
                watcher = asyncio.create_task(speech_start_us(stub, session_id, watching, result))
                await watching.wait()
                await page.fill("#text-input", TEXT)
                pressed_ms = await page.evaluate(
                    "() => { const t = performance.timeOrigin + performance.now();"
                    " document.querySelector('#send').click(); return t; }"
                )
                await asyncio.wait_for(watcher, 60)
                await asyncio.sleep(3.0)  # let the player show it
                start_ms = (epoch_ms + result["start_us"] / 1000) % (1 << BITS)
                frames = await page.evaluate("() => window.__frames")
                shown = [t for t, value in frames if t >= pressed_ms and (value - start_ms) % (1 << BITS) < 60_000]
                first_speech.append(min(shown) - pressed_ms)
            frames = await page.evaluate("() => window.__frames")
            glass = [((t % (1 << BITS)) - value) % (1 << BITS) for t, value in frames]
            glass = [g for g in glass if g < 60_000]  # drop misreads (none expected)
            await browser.close()
    finally:
        await supervisor.stop()

    print(f"\nInfiniteTalk Live browser benchmark (headless Chromium, {args.runs} runs, {len(glass)} frames)\n")
    print(f"| {'measure':52s} | {'median':>8s} | {'p95':>8s} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 10}|")
    for name, values in (
        ("pressing Say -> first speech frame on screen (ms)", first_speech),
        ("glass-to-glass: live -> displayed in the page (ms)", glass),
    ):
        print(f"| {name:52s} | {statistics.median(values):8.0f} | {percentile(values, 0.95):8.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
