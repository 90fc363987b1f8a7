"""The page in real headless Chromium (Debian's), loaded from Envoy, talking gRPC-Web to the real services."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from infinitetalk_live.stack import check_health
from tests.browser import launched_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SENTENCE = "Hello there, this is the page speaking."
LONG = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs and watched the dark water for travellers."
)

# Measures the loudness of what the <video> element plays, through Web Audio.
AUDIO_PROBE = """
() => {
  const video = document.querySelector('#video');
  const ctx = new AudioContext();
  const source = ctx.createMediaElementSource(video);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  source.connect(analyser);
  analyser.connect(ctx.destination);
  window.__rms = [];
  const samples = new Float32Array(analyser.fftSize);
  setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    window.__rms.push([performance.now(), Math.sqrt(sum / samples.length)]);
  }, 20);
  return ctx.state;
}
"""

# Spread of the video element's pixels (0 for a blank or single-colour picture).
VIDEO_PIXEL_SPREAD = """
() => {
  const video = document.querySelector('#video');
  const canvas = document.createElement('canvas');
  canvas.width = 128; canvas.height = 128;
  const g = canvas.getContext('2d');
  g.drawImage(video, 0, 0, 128, 128);
  const data = g.getImageData(0, 0, 128, 128).data;
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const y = (data[i] + data[i+1] + data[i+2]) / 3; sum += y; sq += y*y; n++;
  }
  const mean = sum / n;
  return Math.sqrt(sq / n - mean * mean);
}
"""


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def browser() -> AsyncIterator:
    async with launched_chromium() as launched:
        yield launched


# Records every publication of window.__avatar (the page republishes it on each change): what was on screen
# (mediaTimeUs) and the media start of each word shown then.
HOOK_RECORDER = """
() => {
  window.__published = [];
  let current = window.__avatar;
  Object.defineProperty(window, '__avatar', {
    configurable: true,
    get: () => current,
    set: (value) => {
      current = value;
      window.__published.push([performance.now(), value.mediaTimeUs, value.wordStartsUs.slice()]);
    },
  });
}
"""

PART_URI = re.compile(r"/seg\d+\.\d+\.m4s$")
SEGMENT_URI = re.compile(r"/seg\d+\.m4s$")


async def open_page(browser, stack, viewport=(1280, 800), query="", requests=None):
    context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = await context.new_page()
    if requests is not None:
        page.on("request", lambda request: requests.append(request.url))
    await page.goto(stack.ports.gateway_url + "/" + query)
    await page.wait_for_function("() => window.__avatar && window.__avatar.sessionId", timeout=30_000)
    await page.wait_for_function("() => document.querySelector('#state').textContent.trim() === 'idle'")
    return context, page


async def current_time(page) -> float:
    return await page.evaluate("() => document.querySelector('#video').currentTime")


async def words(page) -> list[str]:
    return await page.evaluate("() => window.__avatar.words.slice()")


async def say(page, text: str) -> None:
    await page.click("#mode-say")
    await page.fill("#text-input", text)
    await page.click("#send")


async def test_page_plays_speaks_shows_words_and_interrupts(browser, stack, artifacts):
    context, page = await open_page(browser, stack)
    try:
        # The live stream plays.
        await page.wait_for_function("() => document.querySelector('#video').currentTime > 0.5", timeout=20_000)
        start = await current_time(page)
        await asyncio.sleep(2.0)
        assert await current_time(page) > start + 1.0, "currentTime advances"

        # Say: words appear as spoken and the audio track carries speech.
        if await page.is_visible("#unmute"):
            await page.click("#unmute")
        assert await page.evaluate(AUDIO_PROBE) in ("running", "suspended")
        await say(page, SENTENCE)
        expected = SENTENCE.split()
        await page.wait_for_function(
            f"() => window.__avatar.words.slice(-{len(expected)}).join(' ') === {' '.join(expected)!r}",
            timeout=30_000,
        )
        transcript = await page.inner_text("#transcript")
        assert "speaking." in transcript and "Hello" in transcript
        await page.wait_for_timeout(300)
        loudness = [rms for _, rms in await page.evaluate("() => window.__rms")]
        assert max(loudness) > 0.02, "the page's audio carries speech"
        assert await page.inner_text("#latency"), "a latency readout is shown"
        await page.wait_for_function("() => document.querySelector('#state').textContent.trim() === 'idle'")

        # The picture is the avatar, not a blank area.
        await page.screenshot(path=str(artifacts / "page.png"))
        assert await page.evaluate(VIDEO_PIXEL_SPREAD) > 10

        # Interrupt stops a long answer.
        await say(page, LONG)
        await page.wait_for_function("() => document.querySelector('#state').textContent.trim() === 'speaking'")
        await page.wait_for_function(f"() => window.__avatar.words.length >= {len(expected) + 4}", timeout=30_000)
        await page.click("#interrupt")
        await page.wait_for_function(
            "() => document.querySelector('#state').textContent.trim() === 'idle'", timeout=5_000
        )
        await page.wait_for_timeout(3000)  # what is still in the player's buffer plays out
        count = len(await words(page))
        await page.wait_for_timeout(2000)
        assert len(await words(page)) == count, "no more words after the interrupt"
        assert count < len(expected) + len(LONG.split()), "the long answer was cut"
    finally:
        await context.close()


async def test_page_fits_a_phone(browser, stack, artifacts):
    context, page = await open_page(browser, stack, viewport=(390, 844))
    try:
        await page.wait_for_function("() => document.querySelector('#video').currentTime > 0.5", timeout=20_000)
        await page.wait_for_function("() => document.querySelectorAll('#voice-select option').length >= 3")
        avatars = await page.eval_on_selector_all("#avatar-select option", "options => options.map(o => o.value)")
        voices = await page.eval_on_selector_all("#voice-select option", "options => options.map(o => o.value)")
        assert {"drawn", "drawn-kai"} <= set(avatars), "the pickers offer what the server offers"
        assert {"joe", "espeak-en-us", "espeak-en-gb"} <= set(voices)
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, "no horizontal scrolling on a phone"
        for selector in ("#video", "#text-input", "#send", "#interrupt", "#transcript"):
            assert await page.is_visible(selector), selector
        await page.screenshot(path=str(artifacts / "page-phone.png"), full_page=True)
    finally:
        await context.close()


async def test_page_shows_an_error_when_the_session_service_stops_and_recovers(browser, stack):
    context, page = await open_page(browser, stack)
    try:
        first_session = await page.evaluate("() => window.__avatar.sessionId")
        restarts = stack.processes["session"].restarts
        os.kill(stack.pid("session"), signal.SIGKILL)
        await page.wait_for_function(
            "() => document.querySelector('#state').textContent.trim() === 'error'", timeout=15_000
        )
        message = await page.inner_text("#error")
        assert message.strip(), "the page says what is wrong"
        deadline = time.monotonic() + 60
        while stack.processes["session"].restarts == restarts or not await check_health(stack.ports.addr("session")):
            assert time.monotonic() < deadline, "the supervisor restarted the session service"
            await asyncio.sleep(0.1)
        await page.wait_for_function(
            f"() => window.__avatar.sessionId && window.__avatar.sessionId !== {first_session!r}"
            " && document.querySelector('#state').textContent.trim() === 'idle'",
            timeout=30_000,
        )
        start = await current_time(page)
        await page.wait_for_function(
            f"() => document.querySelector('#video').currentTime > {start + 1.0}", timeout=20_000
        )
    finally:
        await context.close()


def astronaut_jpeg(path) -> str:
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return str(path)


async def test_page_animates_an_uploaded_photo(browser, stack, tmp_path, artifacts):
    context, page = await open_page(browser, stack)
    try:
        first_session = await page.evaluate("() => window.__avatar.sessionId")
        assert await page.get_attribute("#portrait-input", "accept") == "image/jpeg,image/png,image/webp"
        assert "Your photo" in await page.inner_text("label:has(#portrait-input)")
        await page.set_input_files("#portrait-input", astronaut_jpeg(tmp_path / "me.jpg"))
        await page.wait_for_function(
            f"() => window.__avatar.sessionId && window.__avatar.sessionId !== {first_session!r}"
            " && window.__avatar.avatar.startsWith('portrait-')",
            timeout=30_000,
        )
        await page.wait_for_function(
            "() => ['idle', 'speaking'].includes(document.querySelector('#state').textContent.trim())",
            timeout=15_000,
        )
        assert await page.is_hidden("#error")
        await page.wait_for_function("() => document.querySelector('#video').currentTime > 0.5", timeout=20_000)
        start = await current_time(page)
        await page.wait_for_function(
            f"() => document.querySelector('#video').currentTime > {start + 1.0}", timeout=20_000
        )
        assert await page.evaluate(VIDEO_PIXEL_SPREAD) > 10
        await page.screenshot(path=str(artifacts / "page-portrait.png"))
        # It speaks, like any avatar.
        await say(page, "Hello from my photo.")
        await page.wait_for_function(
            "() => window.__avatar.words.slice(-4).join(' ') === 'Hello from my photo.'", timeout=30_000
        )
    finally:
        await context.close()


async def test_page_says_why_a_file_is_not_a_usable_photo(browser, stack, tmp_path):
    context, page = await open_page(browser, stack)
    try:
        session = await page.evaluate("() => window.__avatar.sessionId")
        not_an_image = tmp_path / "notes.jpg"
        not_an_image.write_bytes(b"these are my shopping notes, not a photo\n" * 100)
        await page.set_input_files("#portrait-input", str(not_an_image))
        await page.wait_for_function("() => !document.querySelector('#error').hidden", timeout=30_000)
        message = await page.inner_text("#error")
        assert "not a JPEG, PNG or WebP image" in message, message
        # The session that was playing plays on.
        assert await page.evaluate("() => window.__avatar.sessionId") == session
        assert (await page.inner_text("#state")).strip() == "idle"
        start = await current_time(page)
        await page.wait_for_function(
            f"() => document.querySelector('#video').currentTime > {start + 1.0}", timeout=20_000
        )
    finally:
        await context.close()


async def test_page_plays_low_latency_hls_and_words_follow_the_picture(browser, stack):
    requests: list[str] = []
    context, page = await open_page(browser, stack, requests=requests)
    try:
        await page.wait_for_function("() => document.querySelector('#video').currentTime > 1.0", timeout=20_000)
        await asyncio.sleep(2.0)
        playback = await page.evaluate("() => window.__avatar.playback")
        assert playback["lowLatency"] and playback["lowLatencyMode"] and playback["parts"], playback
        # hls.js asks for parts as they come: blocking playlist reloads and part URIs (seg<n>.<i>.m4s).
        playlists = [url for url in requests if "/index.m3u8" in url]
        assert any("_HLS_msn=" in url and "_HLS_part=" in url for url in playlists), playlists[-5:]
        assert sum(bool(PART_URI.search(url)) for url in requests) >= 6, requests[-10:]
        # It aims PART-HOLD-BACK (0.48 s) behind the live edge, and gets there (generous: slow shared CI machines).
        assert 0.3 <= playback["targetLatencyS"] <= 1.0, playback
        assert playback["latencyS"] is not None and playback["latencyS"] < 1.5, playback
        behind = await page.evaluate("() => window.__avatar.behindLiveMs")
        assert behind is not None and 0 < behind < 1500, behind
        assert "behind" in await page.inner_text("#live-latency")

        # Words appear as their frames reach the screen: never before, and soon after.
        await page.evaluate(HOOK_RECORDER)
        before = len(await words(page))
        await say(page, SENTENCE)
        expected = SENTENCE.split()
        await page.wait_for_function(
            f"() => window.__avatar.words.slice(-{len(expected)}).join(' ') === {' '.join(expected)!r}",
            timeout=30_000,
        )
        published = await page.evaluate("() => window.__published")
        first_seen: dict[int, int] = {}
        for _, media_us, starts in published:
            for i, start_us in enumerate(starts):
                if i < before or media_us is None:
                    continue
                assert start_us <= media_us, f"word {i} shown at {media_us} µs before its start {start_us} µs"
                first_seen.setdefault(i, media_us - start_us)
        assert len(first_seen) == len(expected)
        assert max(first_seen.values()) < 500_000, f"words shown late (µs after their start): {first_seen}"
        assert await page.inner_text("#latency"), "a latency readout is shown"
        latencies = await page.evaluate("() => window.__avatar.latencies")
        assert latencies and 0 < latencies[-1] < 5000, latencies

        # The page trims what was played itself (hls.js's own trimming can make it stop loading parts): a trim once
        # 12 s lie behind the playhead (back-buffer.ts), down to 4 s.
        await page.wait_for_function("() => window.__avatar.playback.backBufferTrims >= 1", timeout=30_000)
        played = await page.evaluate(
            "() => { const v = document.querySelector('#video'); return [v.currentTime, v.buffered.start(0)]; }"
        )
        assert played[0] - played[1] < 12.5, f"back buffer not trimmed: playhead, buffered start = {played}"
        # Once the playlist lasts longer than CAN-SKIP-UNTIL (6 s), hls.js asks for delta updates, and plays on.
        deltas = [url for url in requests if "/index.m3u8" in url and "_HLS_skip=YES" in url]
        assert deltas, [url for url in requests if "/index.m3u8" in url][-3:]
        start = await current_time(page)
        await page.wait_for_function(f"() => document.querySelector('#video').currentTime > {start + 1.0}")
    finally:
        await context.close()


async def test_page_plays_the_plain_segments_with_ll_0(browser, stack):
    requests: list[str] = []
    context, page = await open_page(browser, stack, query="?ll=0", requests=requests)
    try:
        await page.wait_for_function("() => document.querySelector('#video').currentTime > 1.0", timeout=20_000)
        start = await current_time(page)
        await asyncio.sleep(2.0)
        assert await current_time(page) > start + 1.0, "currentTime advances"
        playback = await page.evaluate("() => window.__avatar.playback")
        assert not playback["lowLatency"] and not playback["lowLatencyMode"], playback
        assert any(SEGMENT_URI.search(url) for url in requests), requests[-10:]
        assert not any(PART_URI.search(url) for url in requests), "no parts without low-latency mode"
        assert playback["targetLatencyS"] > 1.0, playback
    finally:
        await context.close()


async def test_page_recovers_from_a_missed_part_without_a_reload(browser, stack):
    """One part request dropped (a flaky link or CDN): hls.js asks again at once and the picture goes on."""
    context, page = await open_page(browser, stack)
    dropped: list[str] = []
    requested: list[str] = []

    async def drop_one_part(route) -> None:
        url = route.request.url
        requested.append(url)
        if not dropped:
            dropped.append(url)
            await route.abort("connectionreset")
        else:
            await route.continue_()

    try:
        await page.wait_for_function("() => document.querySelector('#video').currentTime > 1.0", timeout=20_000)
        await asyncio.sleep(1.0)
        before = await page.evaluate("() => window.__avatar.playback")
        start = await current_time(page)
        await page.route(PART_URI, drop_one_part)
        await asyncio.sleep(4.0)
        assert dropped, "a part was requested (and dropped)"
        assert requested.count(dropped[0]) >= 2, f"the dropped part {dropped[0]} was asked for again"
        after = await page.evaluate("() => window.__avatar.playback")
        assert after["reloads"] == before["reloads"], "no reload of the player"
        assert await current_time(page) > start + 3.0, "the picture went on"
        assert await page.inner_text("#state") == "idle"
    finally:
        await context.close()
