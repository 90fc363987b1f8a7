// LL-HLS or plain segments: the ?ll= switch, the playlist's timing, hls.js settings, catch-up. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  catchUpRate,
  chunkSeconds,
  hlsConfig,
  liveSyncSeconds,
  lowLatencyFromSearch,
  MAX_CATCH_UP_RATE,
  parsePlaylistTiming,
  readyToStart,
  relaxedTarget,
  retry404,
  seekPastSegmentEnd,
  seekToUnloadedPart,
  STALL_FORGET_MS,
} from "./playback";

// What the packager serves (issue 12): 960 ms segments of six 160 ms parts.
const LL_PLAYLIST = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.16
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.48
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-11-30T09:16:48.132Z
#EXT-X-PART:DURATION=0.16,URI="seg0.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.16,URI="seg0.1.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.16,URI="seg0.2.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.16,URI="seg0.3.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.16,URI="seg0.4.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.16,URI="seg0.5.m4s",INDEPENDENT=YES
#EXTINF:0.96,
seg0.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-30T09:16:49.092Z
#EXT-X-PART:DURATION=0.16,URI="seg1.0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg1.1.m4s"
`;

const PLAIN_PLAYLIST = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI="init.mp4"
#EXTINF:0.96,
seg0.m4s
#EXTINF:0.96,
seg1.m4s
`;

test("LL-HLS unless the URL says ll=0 (read once by the page; not in the UI)", () => {
  assert.equal(lowLatencyFromSearch(""), true);
  assert.equal(lowLatencyFromSearch("?ll=1"), true);
  assert.equal(lowLatencyFromSearch("?foo=bar&ll=yes"), true);
  for (const off of ["?ll=0", "?ll=false", "?x=1&ll=off", "?ll=NO"]) {
    assert.equal(lowLatencyFromSearch(off), false, off);
  }
});

test("the playlist's LL timing tags are read", () => {
  assert.deepEqual(parsePlaylistTiming(LL_PLAYLIST), {
    targetDuration: 1,
    segmentDuration: 0.96,
    partTarget: 0.16,
    partHoldBack: 0.48,
    canBlockReload: true,
  });
  const plain = parsePlaylistTiming(PLAIN_PLAYLIST);
  assert.equal(plain.partTarget, 0);
  assert.equal(plain.partHoldBack, 0);
  assert.equal(plain.canBlockReload, false);
  assert.equal(plain.segmentDuration, 0.96);
  // Attribute order does not matter; PART-HOLD-BACK is not HOLD-BACK.
  const other = parsePlaylistTiming(
    [
      "#EXTM3U",
      "#EXT-X-SERVER-CONTROL:HOLD-BACK=3.0,PART-HOLD-BACK=0.5,CAN-BLOCK-RELOAD=YES",
      "#EXT-X-PART-INF:PART-TARGET=0.2",
    ].join("\n"),
  );
  assert.equal(other.partHoldBack, 0.5);
  assert.equal(other.partTarget, 0.2);
  assert.equal(other.canBlockReload, true);
});

test("LL aims PART-HOLD-BACK behind the edge, plain two segments", () => {
  const ll = parsePlaylistTiming(LL_PLAYLIST);
  assert.equal(liveSyncSeconds(true, ll), 0.48);
  assert.equal(liveSyncSeconds(false, ll), 1.92);
  // No PART-HOLD-BACK: three parts; never under two parts.
  assert.equal(liveSyncSeconds(true, { ...ll, partHoldBack: 0 }), 0.48);
  assert.equal(liveSyncSeconds(true, { ...ll, partHoldBack: 0.1 }), 0.32);
  // A playlist without parts plays its segments even when LL is asked for.
  assert.equal(liveSyncSeconds(true, parsePlaylistTiming(PLAIN_PLAYLIST)), 1.92);
  assert.equal(chunkSeconds(true, ll), 0.16);
  assert.equal(chunkSeconds(false, ll), 0.96);
});

test("hls.js runs in lowLatencyMode tuned to the parts, or plays the plain segments", () => {
  const timing = parsePlaylistTiming(LL_PLAYLIST);
  const ll = hlsConfig(true, timing);
  assert.equal(ll.lowLatencyMode, true);
  assert.equal(ll.liveSyncDuration, 0.48);
  assert.ok(ll.liveMaxLatencyDuration! > ll.liveSyncDuration! + 1, "jumps to live only when far behind");
  assert.equal(ll.liveSyncOnStallIncrease, 0.16, "a stall raises the aim by one part");
  assert.equal(ll.maxLiveSyncPlaybackRate, 1, "the page's catch-up replaces hls.js's");
  assert.ok(ll.maxBufferLength! <= 8);
  assert.equal(ll.backBufferLength, Infinity, "the page trims the back buffer (back-buffer.ts), not hls.js");
  const plain = hlsConfig(false, timing);
  assert.equal(plain.lowLatencyMode, false);
  assert.equal(plain.liveSyncDuration, 1.92);
  assert.ok(plain.liveMaxLatencyDuration! > plain.liveSyncDuration!);
  // hls.js refuses liveMaxLatencyDuration without liveSyncDuration, or not above it.
  for (const config of [ll, plain]) assert.ok(config.liveMaxLatencyDuration! > config.liveSyncDuration!);
});

test("a 404 (a part a moment ahead) or a dropped connection is retried", () => {
  const config = { maxNumRetry: 3, retryDelayMs: 100, maxRetryDelayMs: 1000 };
  assert.equal(retry404(config, 0, false, { code: 404 }, false), true);
  assert.equal(retry404(config, 3, false, { code: 404 }, false), false);
  assert.equal(retry404(config, 0, false, { code: 0 }, false), true, "a dropped connection");
  assert.equal(retry404(config, 0, false, undefined, false), false, "a parse error is not retried");
  assert.equal(retry404(config, 0, false, { code: 403 }, false), false);
  assert.equal(retry404(config, 0, false, { code: 500 }, true), true);
  assert.equal(retry404(null, 0, false, { code: 404 }, false), false);
});

test("the page starts on a whole segment; the plain segments wait for as much as they stay behind", () => {
  const partsOnly = LL_PLAYLIST.slice(0, LL_PLAYLIST.indexOf("#EXTINF"));
  assert.equal(readyToStart(partsOnly, true), false, "parts but no whole segment yet");
  assert.equal(readyToStart(LL_PLAYLIST, true), true);
  assert.equal(readyToStart(LL_PLAYLIST, false), false, "one segment is less than 1.92 s");
  assert.equal(readyToStart(PLAIN_PLAYLIST, false), true);
  assert.equal(readyToStart(PLAIN_PLAYLIST, true), true, "no parts: plain rules, two segments are enough");
});

test("catch-up: a little faster while behind the aim, never draining the buffer", () => {
  const part = 0.16;
  assert.equal(catchUpRate(null, 0.48, 1, part), 1);
  assert.equal(catchUpRate(0.5, null, 1, part), 1);
  assert.equal(catchUpRate(0.5, 0.48, 0.45, part), 1, "within the slack");
  assert.equal(catchUpRate(0.68, 0.48, 0.6, part), 1.1);
  assert.equal(catchUpRate(1.5, 0.48, 1.4, part), MAX_CATCH_UP_RATE);
  assert.equal(catchUpRate(3, 0.48, 2.9, part, 1.5), 1.5);
  assert.equal(catchUpRate(0.9, 0.48, 0.2, part), 1, "too little buffered to speed up");
  // Whole segments arrive a second apart: the buffer must outlast one at the faster rate.
  assert.equal(catchUpRate(2.5, 1.92, 1.0, 0.96), 1);
  assert.equal(catchUpRate(2.5, 1.92, 1.5, 0.96), MAX_CATCH_UP_RATE);
  // Ahead of the aim: normal speed (never slower).
  assert.equal(catchUpRate(0.3, 0.48, 0.3, part), 1);
});

test("what stalls added to the aim is forgotten after a quiet while", () => {
  assert.equal(relaxedTarget(0.64, 0.48, 1000), null);
  assert.equal(relaxedTarget(0.64, 0.48, STALL_FORGET_MS), 0.48);
  assert.equal(relaxedTarget(0.48, 0.48, STALL_FORGET_MS * 2), null, "nothing to forget");
  assert.equal(relaxedTarget(null, 0.48, Infinity), null);
  assert.equal(relaxedTarget(0.64, 0.48, Infinity), 0.48, "no stall since the start");
});

test("a stall just short of a finished segment's end seeks to that end; anything else is left alone", () => {
  const ends = [35.509, 36.469];
  // Buffered to 36.448 (the audio ends a frame early), the playhead there: seek just past 36.469.
  assert.equal(seekPastSegmentEnd(36.44, 36.448, ends), 36.47);
  // Still more than the slack to play: not stuck yet.
  assert.equal(seekPastSegmentEnd(36.2, 36.448, ends), null);
  // Buffered up to (or past) the end: hls.js goes on by itself.
  assert.equal(seekPastSegmentEnd(36.46, 36.469, ends), null);
  // Dry in the middle of a segment (a late part, not this bug): waiting is right.
  assert.equal(seekPastSegmentEnd(36.0, 36.05, ends), null);
  assert.equal(seekPastSegmentEnd(36.0, null, ends), null);
});

test("standing at the buffer's end with later parts listed but not loaded seeks to the next part", () => {
  const starts = [36.309, 36.469, 36.629, 36.789];
  // Buffered to 36.36 (a gap before the next part at 36.469); two more parts listed: seek there.
  assert.equal(seekToUnloadedPart(36.35, 36.36, starts, 0.16), 36.47);
  // Only one part beyond the buffer: it may be on its way; wait.
  assert.equal(seekToUnloadedPart(36.6, 36.65, starts, 0.16), null);
  // More than the slack left to play, or the next part too far: leave it to hls.js.
  assert.equal(seekToUnloadedPart(35.9, 36.36, starts, 0.16), null);
  assert.equal(seekToUnloadedPart(36.0, 36.05, starts, 0.16), null);
  // Plain segments (no parts): never. After a seek into unbuffered media: hls.js is loading it.
  assert.equal(seekToUnloadedPart(36.35, 36.36, starts, 0), null);
  assert.equal(seekToUnloadedPart(36.35, null, starts, 0.16), null);
});
