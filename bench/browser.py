"""Browser benchmark: what a viewer of the page sees, measured in real headless Chromium, for LL-HLS and for the
plain segments.

Starts the stack (services + Envoy + page) on free loopback ports with VIDEO_BURN_CLOCK=1, so every frame
carries the wall-clock time at which it was live. The page's clock reads it back off each displayed frame
(requestVideoFrameCallback + canvas). One pass per mode, each with its own page and session: `ll` is the page as
it is (hls.js lowLatencyMode: 160 ms parts, blocking playlist reload), `plain` is the page at `/?ll=0` (whole
960 ms segments only, as a player without LL-HLS support plays them).

- Say -> first speech frame on screen: from pressing Send to the display of the first frame of the answer's speech
  (median and p95 over the answers);
- glass-to-glass: display time minus the burned live time, over every frame displayed (median, p95);
- stalls over the pass: visible freezes (the picture stood still at least FREEZE_MS longer than one frame),
  frames whose burned clock repeats or goes backwards, skips (the burned clock advanced at least JUMP_MS more than
  one frame: a seek to the live edge, often right after a freeze, or dropped frames), hls.js BUFFER_STALLED_ERROR
  events, `waiting` events on the <video> (rebuffers), and player reloads (the page's stall watchdog or fatal
  errors). A freeze followed by a seek to live is both: the viewer saw the picture stop, then lost what was said.
  Frames Chromium presented while the page's clock reader was held up (requestVideoFrameCallback's presentedFrames
  moved on by more than one) were on screen: they are counted apart, not as freezes or skips;
- how the media reached the page (bench.delivery): what was buffered ahead of the playhead at each displayed frame,
  and each media request's time queued in the browser, waiting for the first byte and in transfer, around Say (when
  the stack's CPU use peaks) apart from the rest, and for the requests before each rebuffer.

`--minutes N` makes each pass a long run (N minutes) that mixes short answers, long answers interrupted part-way
(the page's Stop button) and idle pauses, after the --runs measured answers.

Usage: .venv/bin/python -m bench.browser [--runs 5] [--mode ll|plain|both] [--minutes N]   (from the repo root)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import random
import re
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.delivery import (
    BUFFER_AHEAD_READER,
    PART_TIMING_READER,
    buffer_ahead_report,
    part_timing_report,
    requests_before,
)
from bench.stats import percentile
from infinitetalk_live.hls import fetch_playlist
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2, session_pb2_grpc
from services.video.clock_burn import BITS, BLOCK, MARGIN, PER_ROW
from tests.browser import CHROMIUM, CHROMIUM_ARGS

TEXT = "Hello there. This is a live avatar speaking."
SHORT = [
    TEXT,
    "Good morning, how can I help you today?",
    "That is a very good question.",
    "Sure, I can do that for you.",
]
LONG = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs and watched the dark water for travellers."
)
WRAP = 1 << BITS
FREEZE_MS = 150.0
FRAME_MS = 40.0  # 25 fps
JUMP_MS = 200.0
MODES = {"ll": "LL-HLS", "plain": "plain segments"}
DEBUG_REQUESTS = False

# Reads the burned clock off every displayed frame: [display wall ms, burned ms mod 2**32].
CLOCK_READER = f"""
() => {{
  const video = document.querySelector('#video');
  const canvas = document.createElement('canvas');
  const width = {PER_ROW * BLOCK + 2 * MARGIN}, height = {(BITS // PER_ROW) * BLOCK + 2 * MARGIN};
  canvas.width = width; canvas.height = height;
  const g = canvas.getContext('2d', {{ willReadFrequently: true }});
  window.__frames = [];
  window.__waiting = 0;
  window.__waitingAt = [];
  video.addEventListener('waiting', () => {{
    window.__waiting++;
    const ranges = [];
    for (let i = 0; i < video.buffered.length; i++) ranges.push([video.buffered.start(i), video.buffered.end(i)]);
    window.__waitingAt.push([performance.timeOrigin + performance.now(), video.currentTime, ranges]);
  }});
  window.__seeks = [];
  window.__rates = [];
  video.addEventListener('ratechange', () => {{
    window.__rates.push([performance.timeOrigin + performance.now(), video.playbackRate]);
  }});
  window.__unseen = [];
  let presented = -1;
  let shownTime = 0;
  video.addEventListener('timeupdate', () => {{ if (!video.seeking) shownTime = video.currentTime; }});
  video.addEventListener('seeking', () => {{
    window.__seeks.push([performance.timeOrigin + performance.now(), shownTime, video.currentTime]);
  }});
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
    if (presented >= 0 && meta.presentedFrames - presented > 1) {{
      window.__unseen.push([performance.timeOrigin + meta.expectedDisplayTime, meta.presentedFrames - presented - 1]);
    }}
    presented = meta.presentedFrames;
    video.requestVideoFrameCallback(onFrame);
  }};
  video.requestVideoFrameCallback(onFrame);
}}
"""

PRESS_SEND = (
    "() => { const t = performance.timeOrigin + performance.now(); document.querySelector('#send').click(); return t; }"
)


@dataclass
class Continuity:
    """What the viewer saw go wrong, from consecutive displayed frames (display ms, burned ms)."""

    freezes: int = 0
    frozen_ms: float = 0.0
    repeats: int = 0
    backwards: int = 0
    jumps: int = 0
    unseen: int = 0  # frames Chromium presented that the clock reader missed (its main thread was busy)


def frame_gaps(frames: list[tuple[float, int]], unseen: list[list]):
    """(display ms, ms shown longer than one frame, burned-clock advance beyond one frame, frames presented unseen)
    between consecutive frames the reader saw; a backward clock as advance None. Frames Chromium presented that the
    reader missed (requestVideoFrameCallback's presentedFrames) were on screen: they shorten the gap."""
    unseen_at = sorted((t, n) for t, n in unseen)
    times = [t for t, _ in unseen_at]
    for (t0, v0), (t1, v1) in itertools.pairwise(frames):
        lo, hi = bisect.bisect_right(times, t0), bisect.bisect_right(times, t1 + 1)
        missed = sum(n for _, n in unseen_at[lo:hi])
        advance = (v1 - v0) % WRAP
        if advance > WRAP // 2:
            yield t0, 0.0, None, missed
            continue
        yield t0, t1 - t0 - (missed + 1) * FRAME_MS, advance - (missed + 1) * FRAME_MS, missed


def continuity(frames: list[tuple[float, int]], unseen: list[list]) -> Continuity:
    """Freezes, repeated or backward clocks and forward jumps between consecutive displayed frames."""
    seen = Continuity()
    for _, longer, advance, missed in frame_gaps(frames, unseen):
        seen.unseen += missed
        if advance is None:
            seen.backwards += 1
        elif advance == -FRAME_MS * (missed + 1):
            seen.repeats += 1
        else:
            if longer >= FREEZE_MS:
                seen.freezes += 1
                seen.frozen_ms += longer
            if advance >= JUMP_MS:
                seen.jumps += 1
    return seen


@dataclass
class Pass:
    mode: str
    first_speech: list[float] = field(default_factory=list)
    page_readout: list[float] = field(default_factory=list)
    frames: list[tuple[float, int]] = field(default_factory=list)
    playback: dict = field(default_factory=dict)
    behind_live: list[float] = field(default_factory=list)
    pressed: list[float] = field(default_factory=list)  # wall ms of each Say
    interrupted: list[float] = field(default_factory=list)  # wall ms of each Stop
    waiting_at: list[list] = field(default_factory=list)  # each rebuffer: [wall ms, currentTime, buffered ranges]
    rates: list[list] = field(default_factory=list)  # each playback-rate change: [wall ms, rate]
    unseen: list[list] = field(default_factory=list)  # frames presented that the clock reader missed: [wall ms, n]
    seeks: list[list] = field(default_factory=list)  # each seek by the player: [wall ms, from, to]
    media_requests: list[list] = field(default_factory=list)  # bench.delivery's PART_TIMING_READER rows
    buffer_ahead: list[float] = field(default_factory=list)  # ms buffered ahead at each displayed frame
    hls_requests: list[tuple[float, str, str]] = field(default_factory=list)  # (wall ms, asked|done|failed, name)
    console: list[tuple[float, str]] = field(default_factory=list)
    lateness: dict[str, dict[float, float]] = field(default_factory=dict)  # packager: content -> {le: parts}
    minutes: float = 0.0
    answers: int = 0
    interrupts: int = 0

    @property
    def glass(self) -> list[float]:
        return glass_ms(self.frames)

    @property
    def glass_last_minute(self) -> list[float]:
        end = self.frames[-1][0] if self.frames else 0
        return glass_ms([f for f in self.frames if f[0] >= end - 60_000])


def glass_ms(frames: list[tuple[float, int]]) -> list[float]:
    values = [((t % WRAP) - value) % WRAP for t, value in frames]
    return [g for g in values if g < 60_000]  # drop misreads (none expected)


async def watch_speech(stub, session_id: str, auth, watching: asyncio.Event, result: dict) -> None:
    """Records the answer's SpeechStarted.start_us (and when it reached us) and returns at SpeechFinished."""
    call = stub.WatchSession(session_pb2.WatchSessionRequest(session_id=session_id), metadata=auth)
    await call.read()
    watching.set()
    while True:
        event = await call.read()
        kind = event.WhichOneof("event")
        if kind == "speech_started":
            result["start_us"] = event.speech_started.start_us
            result["started_at"] = time.monotonic()
        elif kind == "speech_finished":
            call.cancel()
            return


async def answer(page, stub, session_id: str, auth, text: str, interrupt_after_s: float | None) -> dict:
    """Says `text` from the page (Interrupt from the page's Stop button after `interrupt_after_s` of speech)."""
    watching, result = asyncio.Event(), {}
    watcher = asyncio.create_task(watch_speech(stub, session_id, auth, watching, result))
    await watching.wait()
    await page.fill("#text-input", text)
    result["pressed_ms"] = await page.evaluate(PRESS_SEND)
    if interrupt_after_s is not None:
        while "started_at" not in result and not watcher.done():
            await asyncio.sleep(0.05)
        await asyncio.sleep(interrupt_after_s)
        if not watcher.done():
            result["interrupted_ms"] = await page.evaluate(
                "() => { const t = performance.timeOrigin + performance.now();"
                " document.querySelector('#interrupt').click(); return t; }"
            )
            result["interrupted"] = True
    await asyncio.wait_for(watcher, 90)
    return result


async def run_pass(browser, stub, ports: StackPorts, mode: str, runs: int, minutes: float, seed: int) -> Pass:
    result = Pass(mode)
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    hls_log = result.hls_requests

    def log_request(kind: str):
        def record(request) -> None:
            if "/hls/" in request.url:
                hls_log.append((time.time() * 1000, kind, request.url.rsplit("/", 1)[-1]))

        return record

    page.on("request", log_request("asked"))
    page.on("console", lambda message: result.console.append((time.time() * 1000, message.text[:300])))
    page.on("requestfinished", log_request("done"))
    page.on("requestfailed", log_request("failed"))
    session_id = ""
    try:
        await page.goto(ports.gateway_url + ("/" if mode == "ll" else "/?ll=0"))
        await page.wait_for_function("() => window.__avatar && window.__avatar.sessionId", timeout=30_000)
        await page.wait_for_function("() => document.querySelector('#video').currentTime > 1", timeout=30_000)
        hook = await page.evaluate("() => window.__avatar")
        session_id = hook["sessionId"]
        auth = (("authorization", f"Bearer {hook['controlToken']}"),)  # the page's own session: its token
        playlist_url = hook["playlistUrl"]
        if playlist_url.startswith("/"):
            playlist_url = ports.gateway_url + playlist_url
        playlist = await asyncio.to_thread(fetch_playlist, playlist_url)
        assert playlist is not None and playlist.media_sequence == 0
        epoch_ms = playlist.segments[0].program_date_time.timestamp() * 1000
        await asyncio.sleep(2.0)  # settle at the live edge
        await page.evaluate(CLOCK_READER)
        await page.evaluate(PART_TIMING_READER)
        await page.evaluate(BUFFER_AHEAD_READER)
        before = await page.evaluate("() => window.__avatar.playback || {}")
        await page.click("#mode-say")
        started = time.monotonic()
        deadline = started + minutes * 60
        rng = random.Random(seed)
        n = 0
        while n < runs or time.monotonic() < deadline:
            measured = n < runs
            if measured:
                text, interrupt_after, pause = TEXT, None, 2.0
            else:
                kind = rng.choice(["short", "short", "long-interrupted", "long"])
                text = rng.choice(SHORT) if kind == "short" else LONG
                interrupt_after = rng.uniform(1.0, 4.0) if kind == "long-interrupted" else None
                pause = rng.uniform(1.0, 12.0)  # idle between answers, sometimes long
            await asyncio.sleep(pause)
            said = await answer(page, stub, session_id, auth, text, interrupt_after)
            n += 1
            await asyncio.sleep(3.0)  # let the player show it
            frames = [tuple(f) for f in await page.evaluate("() => window.__frames.splice(0)")]
            result.frames += frames
            result.answers += 1
            result.interrupts += bool(said.get("interrupted"))
            result.pressed.append(said["pressed_ms"])
            if "interrupted_ms" in said:
                result.interrupted.append(said["interrupted_ms"])
            if "start_us" not in said:
                continue
            start_ms = (epoch_ms + said["start_us"] / 1000) % WRAP
            pressed = said["pressed_ms"]
            shown = [t for t, value in result.frames if t >= pressed and (value - start_ms) % WRAP < 60_000]
            if shown:
                result.first_speech.append(min(shown) - pressed)
            hook = await page.evaluate("() => window.__avatar")
            if hook.get("behindLiveMs") is not None:
                result.behind_live.append(hook["behindLiveMs"])
        result.minutes = (time.monotonic() - started) / 60
        hook = await page.evaluate("() => window.__avatar")
        result.playback = dict(hook.get("playback") or {})
        for counter in ("bufferStalls", "reloads"):  # over the measured run, not the start
            if counter in result.playback:
                result.playback[counter] -= before[counter]
        result.playback["waiting"] = await page.evaluate("() => window.__waiting")
        result.seeks = await page.evaluate("() => window.__seeks")
        result.waiting_at = await page.evaluate("() => window.__waitingAt")
        result.rates = await page.evaluate("() => window.__rates")
        result.unseen = await page.evaluate("() => window.__unseen")
        result.media_requests = await page.evaluate("() => window.__media")
        result.buffer_ahead = await page.evaluate("() => window.__ahead")
        result.lateness = await asyncio.to_thread(part_lateness, ports)
        result.page_readout = hook["latencies"]
    finally:
        await context.close()
        if session_id:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.EndSession(session_pb2.EndSessionRequest(session_id=session_id), timeout=5, metadata=auth)
    return result


def part_lateness(ports: StackPorts) -> dict[str, dict[float, float]]:
    """The packager's cumulative part-lateness histogram (content -> {upper bound s: parts}), from its metrics."""
    url = f"http://127.0.0.1:{ports.metrics['packager']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found: dict[str, dict[float, float]] = {}
    bucket = re.compile(r'^packager_part_lateness_seconds_bucket\{content="(\w+)",le="([^"]+)"\} (\S+)$', re.M)
    for match in bucket.finditer(text):
        found.setdefault(match[1], {})[float(match[2])] = float(match[3])
    return found


def late_share(buckets: dict[float, float], bound: float) -> str:
    """Parts published later than `bound` seconds after their media's end, of all (the difference of two passes)."""
    total = buckets.get(float("inf"), 0.0)
    on_time = max((n for le, n in buckets.items() if le <= bound + 1e-9), default=0.0)
    return f"{total - on_time:.0f} / {total:.0f}"


def since_text(pass_: Pass, at: float) -> str:
    """Seconds since the last Say and the last Stop before wall ms `at` (speech starts ~1 s after Say)."""
    said = [t for t in pass_.pressed if t <= at]
    stopped = [t for t in pass_.interrupted if t <= at]
    since = f"Say +{(at - max(said)) / 1000:.1f} s" if said else "before any Say"
    if stopped and (not said or max(stopped) >= max(said)):
        since += f", Stop +{(at - max(stopped)) / 1000:.1f} s"
    return since


def freeze_report(pass_: Pass) -> list[str]:
    """Each visible freeze: when, how long, how far the picture then jumped, the playback rate in effect, and how many
    frames Chromium presented meanwhile that the clock reader did not see (the reader's lag, not the viewer's)."""
    out = []
    for t0, longer, advance, missed in frame_gaps(pass_.frames, pass_.unseen):
        if advance is None or longer < FREEZE_MS:
            continue
        rate = next((r for t, r in reversed(pass_.rates) if t <= t0), 1)
        out.append(
            f"{since_text(pass_, t0)}; frozen {longer:.0f} ms longer than a frame, then the clock advanced "
            f"{advance:.0f} ms more than a frame; rate {rate}; presented but unseen frames: {missed}"
        )
    return out


def rebuffer_report(pass_: Pass) -> list[str]:
    """Each rebuffer: when (since_text), the playhead and how much was buffered ahead of it (0: the buffer ran dry;
    a later range: a hole in the buffer)."""
    out = []
    for at, current, ranges in pass_.waiting_at:
        since = since_text(pass_, at)
        ahead = [f"{start - current:+.2f}..{end - current:+.2f}" for start, end in ranges if end > current - 0.5]
        out.append(f"{since}; buffered around the playhead: {', '.join(ahead) or 'nothing'}")
        before = requests_before(pass_.media_requests, at)
        out.append(f"    the media requests before it (queued/server/transfer ms): {before}")
        if DEBUG_REQUESTS:
            near = [(t - at, text) for t, text in pass_.console if -1800 < t - at < 300 and "m3u8" not in text]
            out += [f"    {dt:+6.0f} ms console {text}" for dt, text in near]
            near = [(t - at, kind, name) for t, kind, name in pass_.hls_requests if -2500 < t - at < 500]
            out += [f"    {dt:+6.0f} ms {kind} {name}" for dt, kind, name in near]
    return out


def print_tables(passes: list[Pass], burned: bool = True) -> None:
    """`burned`: the frames carry the burned clock; without it, only what the page and the player report."""

    def cell(values: list[float], q: float | None) -> str:
        if not values:
            return "—"
        return f"{statistics.median(values) if q is None else percentile(values, q):.0f}"

    names = [MODES[p.mode] for p in passes]
    frames = ", ".join(f"{MODES[p.mode]}: {len(p.glass)} frames, {p.answers} answers" for p in passes)
    print(f"\nInfiniteTalk Live browser benchmark (headless Chromium through Envoy; {frames})\n")
    header = "| measure (ms) | " + " | ".join(f"{name} median | {name} p95" for name in names) + " |"
    print(header)
    print("|" + " --- |" * (1 + 2 * len(passes)))
    rows = [
        ("pressing Say -> first speech frame on screen", lambda p: p.first_speech),
        ("glass-to-glass: live -> displayed in the page", lambda p: p.glass),
        ("glass-to-glass, the last minute of the pass", lambda p: p.glass_last_minute),
    ] * burned + [
        ("the page's own readout: Send -> speech on screen", lambda p: p.page_readout),
        ("the page's 'behind live' readout (PDT)", lambda p: p.behind_live),
    ]
    for name, values in rows:
        cells = " | ".join(f"{cell(values(p), None)} | {cell(values(p), 0.95)}" for p in passes)
        print(f"| {name} | {cells} |")

    minutes = ", ".join(f"{MODES[p.mode]} {p.minutes:.1f} min" for p in passes)
    print(f"\n| over the run ({minutes}) | " + " | ".join(names) + " |")
    print("|" + " --- |" * (1 + len(passes)))
    seen = [continuity(p.frames, p.unseen) for p in passes]
    counts = (
        [
            ("answers (of which interrupted)", [f"{p.answers} ({p.interrupts})" for p in passes]),
        ]
        + [
            ("visible freezes >= 150 ms (total ms)", [f"{c.freezes} ({c.frozen_ms:.0f})" for c in seen]),
            ("burned clock repeated / went backwards", [f"{c.repeats} / {c.backwards}" for c in seen]),
            ("skips >= 200 ms (seek to live, dropped frames)", [str(c.jumps) for c in seen]),
            ("frames on screen the clock reader missed (its lag, not counted above)", [str(c.unseen) for c in seen]),
        ]
        * burned
        + [
            ("hls.js BUFFER_STALLED_ERROR", [str(p.playback.get("bufferStalls", "—")) for p in passes]),
            ("<video> waiting (rebuffers)", [str(p.playback.get("waiting", "—")) for p in passes]),
            ("player reloads (watchdog, fatal errors)", [str(p.playback.get("reloads", "—")) for p in passes]),
            (
                "hls.js lowLatencyMode / target latency at the end (ms)",
                [
                    f"{p.playback.get('lowLatencyMode')} / {1000 * (p.playback.get('targetLatencyS') or 0):.0f}"
                    for p in passes
                ],
            ),
        ]
    )
    for name, values in counts:
        print(f"| {name} | " + " | ".join(values) + " |")

    # Where the rebuffers fall, and how late the packager published parts (all passes so far: one packager).
    for p in passes:
        print()
        for line in rebuffer_report(p):
            print(f"{MODES[p.mode]}: rebuffer at {line}")
        for line in freeze_report(p):
            print(f"{MODES[p.mode]}: freeze at {line}")
        print(f"{MODES[p.mode]}: playback-rate changes: {len(p.rates)}")
        print(f"{MODES[p.mode]}: {buffer_ahead_report(p.buffer_ahead)}")
        for line in part_timing_report(p.media_requests, p.pressed):
            print(f"{MODES[p.mode]}: {line}")
        print(f"{MODES[p.mode]}: hls.js errors it recovered from: {p.playback.get('recoveredErrors')}")
        seeks = f"{p.playback.get('segmentEndSeeks')} / {p.playback.get('unloadedPartSeeks')}"
        print(f"{MODES[p.mode]}: the page's seeks past a segment's end / to an unloaded part: {seeks}")
        print(f"{MODES[p.mode]}: the page's back-buffer trims: {p.playback.get('backBufferTrims')}")
        jumps = [f"{to - start:+.2f} s" for _, start, to in p.seeks]
        print(f"{MODES[p.mode]}: the player seeked {len(p.seeks)} times while measured: {', '.join(jumps)}")
        for content, buckets in sorted(p.lateness.items()):
            late = ", ".join(f"> {int(b * 1000)} ms: {late_share(buckets, b)}" for b in (0.08, 0.16, 0.32, 0.48))
            print(f"{MODES[p.mode]}: packager parts ({content}) published late after their media's end: {late}")


async def main() -> None:
    from playwright.async_api import async_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured answers per pass (default 5)")
    parser.add_argument("--mode", choices=["ll", "plain", "both"], default="both")
    parser.add_argument("--minutes", type=float, default=0.0, help="make each pass a long mixed run of N minutes")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--no-burn",
        action="store_true",
        help="no burned clock: the video worker renders only around speech, as in production (no glass-to-glass)",
    )
    args = parser.parse_args()
    modes = ["ll", "plain"] if args.mode == "both" else [args.mode]
    ports = StackPorts.free()
    supervisor = Supervisor(
        ports,
        log_dir=Path(tempfile.mkdtemp(prefix="infinitetalk-bench-")),
        extra_env=None if args.no_burn else {"VIDEO_BURN_CLOCK": "1"},
        report=False,
    )
    await supervisor.start()
    passes: list[Pass] = []
    try:
        await supervisor.wait_healthy(timeout_s=120)
        async with async_playwright() as playwright, grpc.aio.insecure_channel(ports.addr("session")) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for mode in modes:
                    passes.append(await run_pass(browser, stub, ports, mode, args.runs, args.minutes, args.seed))
            finally:
                await browser.close()
    finally:
        await supervisor.stop()
    print_tables(passes, burned=not args.no_burn)


if __name__ == "__main__":
    asyncio.run(main())
