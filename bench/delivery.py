"""How the media reached the page: how much was buffered ahead of the playhead at each displayed frame, and how long
each media request took, split where the time went (the browser's Resource Timing).

Why: a low-latency player holds two or three parts (0.3-0.5 s) ahead of the playhead, so a part that takes 200 ms
instead of 10 ms to arrive is a rebuffer. The packager's own metric says when it published each part; this says when the
page had it, and whether the wait was the browser's (queued before the request went out), the server's (request
sent, first byte late: Envoy or the packager) or the transfer's. Used by bench.browser, reported around each Say
(when the stack's CPU use peaks: speech synthesis starts) apart from the rest of the pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from bench.stats import percentile

# Collects every finished media request (parts, segments, playlists) as
# [wall ms at start, queued ms (start -> request sent), server ms (sent -> first byte), transfer ms, kind].
PART_TIMING_READER = """
() => {
  window.__media = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (!e.name.includes('/hls/')) continue;
      const kind = e.name.includes('.m3u8') ? 'playlist' : 'media';
      const sent = e.requestStart || e.startTime;
      const first = e.responseStart || sent;
      window.__media.push([performance.timeOrigin + e.startTime, sent - e.startTime, first - sent,
                           e.responseEnd - first, kind]);
    }
    performance.clearResourceTimings();
  });
  observer.observe({ type: 'resource', buffered: false });
}
"""

# The buffered media ahead of the playhead (ms) at each displayed frame.
BUFFER_AHEAD_READER = """
() => {
  const video = document.querySelector('#video');
  window.__ahead = [];
  const onFrame = () => {
    const t = video.currentTime;
    let end = t;
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) <= t + 0.1 && video.buffered.end(i) >= t) end = video.buffered.end(i);
    }
    window.__ahead.push(Math.round((end - t) * 1000));
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}
"""

AROUND_SAY_MS = (0.0, 1500.0)  # a request started this long after a Say counts as "around Say"


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.0f} / {percentile(values, 0.95):.0f} / {max(values):.0f}"


def around(at_ms: float, says: Iterable[float]) -> bool:
    return any(AROUND_SAY_MS[0] <= at_ms - say <= AROUND_SAY_MS[1] for say in says)


def part_timing_report(requests: list[list], says: list[float]) -> list[str]:
    """Lines: for media (parts, segments) requests around Say and otherwise, median / p95 / max of each share (ms).
    Playlists are left out: a blocking reload is held on purpose."""
    lines = []
    for label, keep in (("around Say", True), ("otherwise", False)):
        chosen = [r for r in requests if r[4] == "media" and around(r[0], says) == keep]
        if not chosen:
            continue
        total = [r[1] + r[2] + r[3] for r in chosen]
        lines.append(
            f"media requests {label} ({len(chosen)}), median / p95 / max ms: total {_cell(total)}; "
            f"queued in the browser {_cell([r[1] for r in chosen])}; "
            f"waiting for the server {_cell([r[2] for r in chosen])}; transfer {_cell([r[3] for r in chosen])}"
        )
    return lines


def requests_before(requests: list[list], at_ms: float, n: int = 3) -> str:
    """The last `n` media requests started before `at_ms`: how long before, and queued/server/transfer ms."""
    earlier = [r for r in requests if r[4] == "media" and r[0] <= at_ms][-n:]
    return ", ".join(f"{r[0] - at_ms:+.0f} ms: {r[1]:.0f}/{r[2]:.0f}/{r[3]:.0f}" for r in earlier)


def buffer_ahead_report(ahead_ms: list[float]) -> str:
    """One line: the buffered media ahead of the playhead over the displayed frames (median, 5th percentile, least)."""
    if not ahead_ms:
        return "buffered ahead of the playhead: —"
    return (
        f"buffered ahead of the playhead at each displayed frame (ms): median {statistics.median(ahead_ms):.0f}, "
        f"5th percentile {percentile(ahead_ms, 0.05):.0f}, least {min(ahead_ms):.0f}"
    )
