// The words and numbers the page shows that depend on its state: readouts (seconds, ms), the state badge's label, the
// video overlay's line, the latency breakdown, picker labels. Pure, so the components stay markup and the wording is
// tested in one place (page-text.test.ts).
import type { PlayerStatus } from "./player";
import type { Snapshot, UiState } from "./snapshot";
import type { ServerLatency } from "./transcript";

/** A duration in ms as seconds: "1.23 s". */
export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** A duration in ms, whole: "412 ms". */
export function formatMs(ms: number): string {
  return `${Math.round(ms)} ms`;
}

/** The state badge's tooltip for each state. */
export const STATE_LABELS: Record<UiState, string> = {
  connecting: "Connecting",
  idle: "Listening",
  thinking: "Thinking",
  rendering: "Rendering the answer's video",
  speaking: "Speaking",
  error: "Offline",
};

/** The tooltip of the live-latency readout: what it measures and what the player aims for. */
export function liveLatencyTitle(snap: Pick<Snapshot, "targetLatencyMs" | "lowLatency">): string {
  const aim = snap.targetLatencyMs !== null ? `; the player aims for ${formatSeconds(snap.targetLatencyMs)}` : "";
  const mode = snap.lowLatency ? "LL-HLS" : "plain segments";
  return `Now minus the live time of the frame on screen (its PROGRAM-DATE-TIME)${aim} (${mode})`;
}

/** The line over the video while it is not playing. */
export function spinnerText(state: UiState, playerStatus: PlayerStatus): string {
  if (state === "error") return "Reconnecting…";
  if (playerStatus === "retrying" || playerStatus === "stalled") return "Catching up with the stream…";
  return "Starting the stream…";
}

/** Whether the avatar is busy answering (the Stop button is highlighted). */
export function isBusy(state: UiState): boolean {
  return state === "thinking" || state === "rendering" || state === "speaking";
}

/** The server's latency breakdown of a turn, in pipeline order (the first clause only for Chat, where it is > 0). */
export function serverLatencyParts(server: ServerLatency | null | undefined): string[] {
  const parts: string[] = [];
  if (!server) return parts;
  if (server.firstClauseMs > 0) parts.push(`first clause ${formatMs(server.firstClauseMs)}`);
  parts.push(`first audio ${formatMs(server.firstAudioMs)}`);
  parts.push(`first frame ${formatMs(server.firstSpeechFrameMs)}`);
  parts.push(`on playlist ${formatMs(server.firstSpeechSegmentMs)}`);
  return parts;
}

/** An avatar picker option's label: an uploaded photo's avatar ("portrait-…") is "your photo". */
export function avatarLabel(name: string): string {
  return name.startsWith("portrait-") ? "your photo" : name;
}
