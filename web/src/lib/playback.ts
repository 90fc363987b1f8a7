// How the page plays the live HLS: low-latency (LL-HLS: 160 ms parts, blocking playlist reload) or the plain
// segments (`?ll=0`, for comparison), and the hls.js settings for each, derived from what the playlist announces.
// Pure (no DOM, no hls.js at run time), so unit-tested (playback.test.ts).
import type { HlsConfig, RetryConfig } from "hls.js";

/** The playlist's timing, as announced by the server (LL tags absent on a plain playlist). */
export interface PlaylistTiming {
  /** EXT-X-TARGETDURATION (s; an integer, rounded up). */
  targetDuration: number;
  /** The longest EXTINF (s): the real segment length. */
  segmentDuration: number;
  /** EXT-X-PART-INF:PART-TARGET (s), 0 without parts. */
  partTarget: number;
  /** EXT-X-SERVER-CONTROL:PART-HOLD-BACK (s), 0 when absent. */
  partHoldBack: number;
  /** EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES. */
  canBlockReload: boolean;
}

/** Whether the page plays in low-latency mode: yes unless the URL says `ll=0` (or `false`, `no`, `off`). */
export function lowLatencyFromSearch(search: string): boolean {
  const value = new URLSearchParams(search).get("ll");
  if (value === null) return true;
  return !["0", "false", "no", "off"].includes(value.trim().toLowerCase());
}

function attribute(line: string, name: string): string | null {
  const match = new RegExp(`(?:^|[:,])${name}=([^,]*)`).exec(line);
  return match ? match[1] : null;
}

function seconds(value: string | null): number {
  const n = value === null ? NaN : Number.parseFloat(value);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** Reads the timing tags off a media playlist's text. */
export function parsePlaylistTiming(text: string): PlaylistTiming {
  const timing: PlaylistTiming = {
    targetDuration: 0,
    segmentDuration: 0,
    partTarget: 0,
    partHoldBack: 0,
    canBlockReload: false,
  };
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#EXT-X-TARGETDURATION:")) {
      timing.targetDuration = seconds(line.slice("#EXT-X-TARGETDURATION:".length));
    } else if (line.startsWith("#EXTINF:")) {
      timing.segmentDuration = Math.max(timing.segmentDuration, seconds(line.slice("#EXTINF:".length)));
    } else if (line.startsWith("#EXT-X-PART-INF:")) {
      timing.partTarget = seconds(attribute(line, "PART-TARGET"));
    } else if (line.startsWith("#EXT-X-SERVER-CONTROL:")) {
      timing.partHoldBack = seconds(attribute(line, "PART-HOLD-BACK"));
      timing.canBlockReload = attribute(line, "CAN-BLOCK-RELOAD") === "YES";
    }
  }
  return timing;
}

/** Seconds behind the live edge the player aims for. LL: the server's PART-HOLD-BACK (at least two parts; three
 * parts when it does not say). Plain: two segments, as before LL-HLS (1 s with 480 ms segments). */
export function liveSyncSeconds(lowLatency: boolean, timing: PlaylistTiming): number {
  const segment = timing.segmentDuration || timing.targetDuration || 1;
  if (lowLatency && timing.partTarget > 0) {
    return Math.max(timing.partHoldBack || 3 * timing.partTarget, 2 * timing.partTarget);
  }
  return 2 * segment;
}

/** 404 means "not yet" for a live playlist or a part/segment a moment ahead, and status 0 a dropped connection (the
 * page and its media share one origin, so it is no CORS refusal): retry both like a server error, so that one missed
 * part costs a quick second request instead of a fatal error and a reload. */
export function retry404(
  retryConfig: RetryConfig | null | undefined,
  retryCount: number,
  _isTimeout: boolean,
  response: { code?: number } | undefined,
  retry: boolean,
): boolean {
  const missed = response?.code === 404 || response?.code === 0;
  return retry || (!!retryConfig && missed && retryCount < retryConfig.maxNumRetry);
}

function policy(maxNumRetry: number, maxLoadTimeMs: number, retryDelayMs = 250) {
  return {
    default: {
      maxTimeToFirstByteMs: 8000,
      maxLoadTimeMs,
      timeoutRetry: { maxNumRetry: 3, retryDelayMs: 0, maxRetryDelayMs: 0 },
      errorRetry: { maxNumRetry, retryDelayMs, maxRetryDelayMs: 2000, shouldRetry: retry404 },
    },
  };
}

/** The fastest the page plays to catch up with the live edge after a stall (speech stays intelligible). */
export const MAX_CATCH_UP_RATE = 1.25;
/** After this long without a stall, the aim goes back from what stalls added to the playlist's hold-back. */
export const STALL_FORGET_MS = 30_000;

/**
 * hls.js settings. LL: `lowLatencyMode` (parts, blocking reload with _HLS_msn/_HLS_part), aiming PART-HOLD-BACK
 * behind the live edge; each stall raises the aim by a part (at most one target duration in all; the player forgets
 * it after STALL_FORGET_MS without a stall); jumps to the aim when more than ~2 s past it. Plain: whole segments
 * only, two segments behind. hls.js's own playback-rate catch-up (maxLiveSyncPlaybackRate) is off: it only acts with
 * more than a second buffered ahead, which a half-second latency never has; the player runs `catchUpRate` instead.
 * Small buffers (a live stream cannot buffer past its edge anyway; the page trims what was played, back-buffer.ts);
 * a missed part or segment is asked again quickly.
 */
export function hlsConfig(lowLatency: boolean, timing: PlaylistTiming): Partial<HlsConfig> {
  const sync = liveSyncSeconds(lowLatency, timing);
  const segment = timing.segmentDuration || timing.targetDuration || 1;
  const part = lowLatency && timing.partTarget > 0 ? timing.partTarget : 0;
  return {
    lowLatencyMode: lowLatency,
    liveSyncDuration: sync,
    liveMaxLatencyDuration: sync + Math.max(2, 2 * segment),
    liveSyncOnStallIncrease: part || segment / 2,
    maxLiveSyncPlaybackRate: 1,
    liveDurationInfinity: true,
    maxBufferLength: 4,
    maxMaxBufferLength: 8,
    // The page trims the played media itself (back-buffer.ts): hls.js's own trimming can make it stop loading.
    backBufferLength: Infinity,
    startFragPrefetch: true,
    enableWorker: true,
    manifestLoadPolicy: policy(12, 10000),
    // A blocking playlist request is held by the server until the part exists (up to ~3 target durations).
    playlistLoadPolicy: policy(8, 10000, part ? 100 : 250),
    fragLoadPolicy: policy(8, 15000, part ? 100 : 250),
  };
}

/** The media the player receives at a time (s): a part in LL mode, else a whole segment. */
export function chunkSeconds(lowLatency: boolean, timing: PlaylistTiming): number {
  if (lowLatency && timing.partTarget > 0) return timing.partTarget;
  return timing.segmentDuration || timing.targetDuration || 1;
}

/**
 * The page's catch-up after a stall: hls.js only speeds up while more than one second is buffered ahead, which a
 * half-second live latency never has, so it would sit a stall's worth behind for good. Plays up to `maxRate` (by
 * half the excess: 0.2 s behind the aim → 1.1×) while more than `slackS` behind the aim, as long as what is buffered
 * lasts until the next chunk (`chunkS`: a part, or a segment) even at that speed; 1 otherwise.
 */
export function catchUpRate(
  latencyS: number | null,
  targetS: number | null,
  bufferedAheadS: number,
  chunkS: number,
  maxRate = MAX_CATCH_UP_RATE,
  slackS = 0.05,
): number {
  if (latencyS === null || targetS === null || !(latencyS > 0) || !(targetS > 0)) return 1;
  const excess = latencyS - targetS;
  if (excess <= slackS) return 1;
  const rate = Math.max(1, Math.round(Math.min(maxRate, 1 + Math.min(excess, 1) * 0.5) * 20) / 20);
  if (bufferedAheadS < chunkS * rate + 0.1) return 1;
  return rate;
}

/** Whether a live playlist holds enough to start: a whole segment (hls.js needs one), and for the plain segments
 * as much media as the player stays behind the edge (else it starts nearer the edge than it aims, on a thin buffer,
 * and stalls at the first late segment). */
export function readyToStart(text: string, lowLatency: boolean): boolean {
  if (!text.includes("#EXTINF")) return false;
  const timing = parsePlaylistTiming(text);
  if (lowLatency && timing.partTarget > 0) return true;
  let total = 0;
  for (const match of text.matchAll(/^#EXTINF:([0-9.]+)/gm)) total += Number.parseFloat(match[1]);
  return total + 0.01 >= liveSyncSeconds(false, timing);
}

/** The aim to go back to (s) when stalls raised hls.js's target and none came for `forgetMs`; null: leave it. */
export function relaxedTarget(
  targetS: number | null,
  baseS: number,
  msSinceLastStall: number,
  forgetMs = STALL_FORGET_MS,
): number | null {
  if (targetS === null || targetS <= baseS + 0.001 || msSinceLastStall < forgetMs) return null;
  return baseS;
}

/** How far before a finished segment's end the buffered media may stop and still count as that segment's end. */
export const SEGMENT_END_SLACK_S = 0.1;

/**
 * Where to seek when playback ran dry just before the end of a finished segment, or null.
 *
 * Why: in an LL-HLS part the audio ends up to a couple of AAC frames (21 ms each) before the video, because the
 * encoder emits a frame only once it has the audio after it. Within a segment hls.js (1.7) loads the next part all the
 * same; but once the segment is complete on the playlist, it maps the buffered end (audio and video together) into
 * that finished segment, finds it loaded, and loads nothing more until it jumps to live two seconds later. Seeking to
 * the segment's end (skipping at most SEGMENT_END_SLACK_S of silence-or-speech) makes it load the next part at once.
 */
export function seekPastSegmentEnd(
  currentTime: number,
  bufferedEnd: number | null,
  segmentEnds: readonly number[],
  slackS = SEGMENT_END_SLACK_S,
): number | null {
  if (bufferedEnd === null || bufferedEnd - currentTime > slackS) return null; // still something to play
  for (const end of segmentEnds) {
    if (end > bufferedEnd + 1e-4 && end - bufferedEnd <= slackS) return end + 0.001;
  }
  return null;
}

/** How long playback may stand at the end of its buffer, with later parts listed, before the page moves it on. */
export const UNLOADED_PARTS_WAIT_MS = 400;

/**
 * Where to seek when playback stands at the end of its buffer while the playlist already lists at least two later
 * parts that hls.js has not loaded (it stopped choosing them: the segment-end case above with a larger gap, or after
 * an interrupt), or null. The target is the first listed part starting after the buffered end, within `slackS`: each
 * part starts with an independent frame, so playback resumes there as soon as hls.js loads it. Without this, hls.js
 * waits until it is two seconds behind live and then jumps there (a two-second freeze and two seconds lost).
 */
export function seekToUnloadedPart(
  currentTime: number,
  bufferedEnd: number | null,
  partStarts: readonly number[],
  partTarget: number,
  slackS = 0.25,
): number | null {
  // Not after a seek into unbuffered media (bufferedEnd null): hls.js is loading what the seek asked for.
  if (bufferedEnd === null || bufferedEnd - currentTime > slackS || partTarget <= 0) return null;
  const end = bufferedEnd;
  const later = partStarts.filter((start) => start > end + 1e-3);
  if (later.length < 2) return null; // nothing listed beyond what is on its way: a late part, waiting is right
  const next = Math.min(...later);
  return next - end <= slackS ? next + 0.001 : null;
}
