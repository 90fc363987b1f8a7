// WatchSession's events as plain typed objects: a `kind` to switch on, names instead of enum numbers, and media
// times as numbers of microseconds (int64 on the wire; a session's clock stays far below 2^53 µs, about 285 years).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  FinishReason,
  SessionState,
  UtteranceSource,
  type WatchSessionResponse,
} from "./gen/avatar/v1/session_pb.js";

export type StateName = "unspecified" | "idle" | "thinking" | "rendering" | "speaking" | "ended";
export type FinishName = "unspecified" | "completed" | "interrupted" | "failed";
export type SourceName = "unspecified" | "say" | "chat";

/** What every event carries: the session's playout position when it was emitted, and the server's clock. */
export interface EventBase {
  mediaTimeUs: number;
  time: Date | undefined;
  /** The message as received, for fields this mapping does not name. */
  raw: WatchSessionResponse;
}

export type SessionEvent = EventBase &
  (
    | { kind: "state"; state: StateName; utteranceId: string; expectedStartUs: number }
    | { kind: "speechStarted"; utteranceId: string; source: SourceName; startUs: number }
    | { kind: "speechFinished"; utteranceId: string; reason: FinishName; endUs: number; spokenText: string }
    /** A word, sent when its first frame goes out: show it when the player reaches startUs. */
    | { kind: "word"; utteranceId: string; word: string; index: number; startUs: number; endUs: number }
    | {
        kind: "latency";
        utteranceId: string;
        firstClauseUs: number;
        firstAudioUs: number;
        firstSpeechFrameUs: number;
        firstSpeechSegmentUs: number;
      }
    /** Something went wrong; the session lives on. `code` is a gRPC code number. */
    | { kind: "error"; utteranceId: string; code: number; message: string; component: string }
    | { kind: "voiceDegraded"; utteranceId: string; message: string; fallbackEngine: string }
    | { kind: "stalled"; startUs: number; endUs: number; reason: string }
    | { kind: "heartbeat" }
    /** An event this version of the package does not know (a newer server). */
    | { kind: "unknown" }
  );

const STATES: Record<number, StateName> = {
  [SessionState.IDLE]: "idle",
  [SessionState.THINKING]: "thinking",
  [SessionState.RENDERING]: "rendering",
  [SessionState.SPEAKING]: "speaking",
  [SessionState.ENDED]: "ended",
};
const FINISHES: Record<number, FinishName> = {
  [FinishReason.COMPLETED]: "completed",
  [FinishReason.INTERRUPTED]: "interrupted",
  [FinishReason.FAILED]: "failed",
};
const SOURCES: Record<number, SourceName> = {
  [UtteranceSource.SAY]: "say",
  [UtteranceSource.CHAT]: "chat",
};

export function toEvent(raw: WatchSessionResponse): SessionEvent {
  const base: EventBase = {
    mediaTimeUs: Number(raw.mediaTimeUs),
    time: raw.time ? timestampDate(raw.time) : undefined,
    raw,
  };
  const e = raw.event;
  switch (e.case) {
    case "stateChanged":
      return {
        ...base,
        kind: "state",
        state: STATES[e.value.state] ?? "unspecified",
        utteranceId: e.value.utteranceId,
        expectedStartUs: Number(e.value.expectedStartUs),
      };
    case "speechStarted":
      return {
        ...base,
        kind: "speechStarted",
        utteranceId: e.value.utteranceId,
        source: SOURCES[e.value.source] ?? "unspecified",
        startUs: Number(e.value.startUs),
      };
    case "speechFinished":
      return {
        ...base,
        kind: "speechFinished",
        utteranceId: e.value.utteranceId,
        reason: FINISHES[e.value.reason] ?? "unspecified",
        endUs: Number(e.value.endUs),
        spokenText: e.value.spokenText,
      };
    case "wordSpoken":
      return {
        ...base,
        kind: "word",
        utteranceId: e.value.utteranceId,
        word: e.value.word,
        index: e.value.wordIndex,
        startUs: Number(e.value.startUs),
        endUs: Number(e.value.endUs),
      };
    case "latency":
      return {
        ...base,
        kind: "latency",
        utteranceId: e.value.utteranceId,
        firstClauseUs: Number(e.value.firstClauseUs),
        firstAudioUs: Number(e.value.firstAudioUs),
        firstSpeechFrameUs: Number(e.value.firstSpeechFrameUs),
        firstSpeechSegmentUs: Number(e.value.firstSpeechSegmentUs),
      };
    case "error":
      return {
        ...base,
        kind: "error",
        utteranceId: e.value.utteranceId,
        code: e.value.code,
        message: e.value.message,
        component: e.value.component,
      };
    case "voiceDegraded":
      return {
        ...base,
        kind: "voiceDegraded",
        utteranceId: e.value.utteranceId,
        message: e.value.message,
        fallbackEngine: e.value.fallbackEngine,
      };
    case "stalled":
      return {
        ...base,
        kind: "stalled",
        startUs: Number(e.value.startUs),
        endUs: Number(e.value.endUs),
        reason: e.value.reason,
      };
    case "heartbeat":
      return { ...base, kind: "heartbeat" };
    default:
      return { ...base, kind: "unknown" };
  }
}
