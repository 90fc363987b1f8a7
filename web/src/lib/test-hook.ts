// window.__avatar: what the browser tests and the benchmark read from the page (tests/test_web.py, bench/browser.py).
// Its shape is a contract with them: change a field here and there together.
import type { PlaybackInfo } from "./player";
import type { UiState } from "./snapshot";

/** Test hook: window.__avatar. */
export interface AvatarTestHook {
  sessionId: string;
  avatar: string;
  state: UiState;
  words: string[];
  /** Each shown word's media start (µs), in the order of `words`. */
  wordStartsUs: number[];
  /** The session's control token (the page's own credential; for the benchmark's WatchSession and cleanup). */
  controlToken: string;
  lastError: string | null;
  mediaTimeUs: number | null;
  playlistUrl: string;
  latencies: number[];
  /** The player: LL mode, hls.js latency and target, stall/rebuffer/reload counts. */
  playback: PlaybackInfo;
  /** How far the picture on screen is behind real time (ms), as the page shows it. */
  behindLiveMs: number | null;
}

declare global {
  interface Window {
    __avatar?: AvatarTestHook;
  }
}

export function publishTestHook(hook: AvatarTestHook): void {
  window.__avatar = hook;
}
