// The page's wording: readouts, the overlay line, the latency breakdown. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  avatarLabel,
  formatMs,
  formatSeconds,
  isBusy,
  liveLatencyTitle,
  serverLatencyParts,
  spinnerText,
} from "./page-text";

test("durations read as seconds or whole ms", () => {
  assert.equal(formatSeconds(1234), "1.23 s");
  assert.equal(formatSeconds(0), "0.00 s");
  assert.equal(formatMs(411.6), "412 ms");
});

test("the live-latency tooltip says the aim and the mode", () => {
  assert.equal(
    liveLatencyTitle({ targetLatencyMs: 1500, lowLatency: true }),
    "Now minus the live time of the frame on screen (its PROGRAM-DATE-TIME); the player aims for 1.50 s (LL-HLS)",
  );
  const plain = liveLatencyTitle({ targetLatencyMs: null, lowLatency: false });
  assert.match(plain, /\(its PROGRAM-DATE-TIME\) \(plain segments\)$/);
});

test("the overlay says why the video is not playing", () => {
  assert.equal(spinnerText("error", "loading"), "Reconnecting…");
  assert.equal(spinnerText("idle", "stalled"), "Catching up with the stream…");
  assert.equal(spinnerText("idle", "retrying"), "Catching up with the stream…");
  assert.equal(spinnerText("connecting", "loading"), "Starting the stream…");
});

test("busy while answering", () => {
  assert.deepEqual(
    (["connecting", "idle", "thinking", "rendering", "speaking", "error"] as const).filter(isBusy),
    ["thinking", "rendering", "speaking"],
  );
});

test("the server's latency breakdown, the first clause only when there is one", () => {
  assert.deepEqual(serverLatencyParts(null), []);
  const say = { firstClauseMs: 0, firstAudioMs: 120, firstSpeechFrameMs: 340.4, firstSpeechSegmentMs: 900 };
  assert.deepEqual(serverLatencyParts(say), ["first audio 120 ms", "first frame 340 ms", "on playlist 900 ms"]);
  assert.equal(serverLatencyParts({ ...say, firstClauseMs: 80 })[0], "first clause 80 ms");
});

test("an uploaded photo's avatar reads as your photo", () => {
  assert.equal(avatarLabel("portrait-3f2a"), "your photo");
  assert.equal(avatarLabel("ada"), "ada");
});
