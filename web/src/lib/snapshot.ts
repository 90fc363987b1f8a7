// What the UI renders: an immutable snapshot of the controller's state (read with useSyncExternalStore), its value
// before there is a controller, and the pure rules that derive its fields (snapshot.test.ts).
import type { LatencyReadout } from "./conversation";
import type { PlayerStatus } from "./player";
import type { ServerState } from "./state-clock";
import type { Turn } from "./transcript";

export type { LatencyReadout } from "./conversation";

export type UiState = "connecting" | "idle" | "thinking" | "rendering" | "speaking" | "error";

export interface Snapshot {
  state: UiState;
  sessionId: string;
  avatar: string;
  voice: string;
  avatarOptions: string[];
  voiceOptions: string[];
  turns: Turn[];
  /** A failure the person should know about (#error); empty when all is well. */
  error: string;
  /** Something that happened and was handled, e.g. a new session (#notice); fades. */
  notice: string;
  /** Why the last text was refused (shown next to the input). */
  inputError: string;
  sending: boolean;
  /** A photo is being uploaded and prepared. */
  uploading: boolean;
  playerStatus: PlayerStatus;
  /** How far the picture on screen is behind real time, in ms (media epoch + on-screen media time vs now). */
  behindLiveMs: number | null;
  /** What the player aims for, in ms (LL-HLS: the playlist's PART-HOLD-BACK); null while unknown. */
  targetLatencyMs: number | null;
  /** LL-HLS (parts) or the plain segments (`?ll=0`). */
  lowLatency: boolean;
  latency: LatencyReadout | null;
}

/** Before the controller exists (and on the server, for the static export). */
export const EMPTY_SNAPSHOT: Snapshot = {
  state: "connecting",
  sessionId: "",
  avatar: "",
  voice: "",
  avatarOptions: [],
  voiceOptions: [],
  turns: [],
  error: "",
  notice: "",
  inputError: "",
  sending: false,
  uploading: false,
  playerStatus: "idle",
  behindLiveMs: null,
  targetLatencyMs: null,
  lowLatency: true,
  latency: null,
};

/** The state badge (#state): "error" while offline or without a session after an error, "connecting" until a
 * session is watched (or after it ended), else the server's state as the screen shows it. */
export function uiState(page: {
  offline: boolean;
  error: string;
  hasSession: boolean;
  watching: boolean;
  serverState: ServerState;
}): UiState {
  if (page.offline || (page.error && !page.hasSession)) return "error";
  if (!page.hasSession || !page.watching || page.serverState === "ended") return "connecting";
  return page.serverState;
}

/** A picker's options: what the server offers plus the current value, each once, no empty names. */
export function pickerOptions(offered: string[], current: string): string[] {
  return [...new Set([...offered, current].filter(Boolean))];
}

/** How far the picture on screen is behind real time (ms, to 10 ms): now minus the media epoch plus the on-screen
 * media time; null without a clock. */
export function behindLiveMs(epochMs: number, onScreenUs: number | null, nowMs: number): number | null {
  if (onScreenUs === null) return null;
  return Math.round((nowMs - (epochMs + onScreenUs / 1000)) / 10) * 10;
}

/** The player's aim (s) in whole ms; null while unknown. */
export function targetLatencyMs(targetS: number | null): number | null {
  return targetS !== null ? Math.round(targetS * 1000) : null;
}
