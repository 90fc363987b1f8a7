// What each WatchSession event does to the page: a state change goes to the state clock, speech, words, the finish
// and latency to the utterance's turn, errors and degraded voices and stalls to the notices. One switch over the
// event types, apart from the loop that receives them (session-events.test.ts).
import {
  FinishReason,
  SessionState,
  type WatchSessionResponse,
} from "../gen/avatar/v1/session_pb";
import type { Conversation } from "./conversation";
import type { Notices } from "./notices";
import type { ServerState, StateClock } from "./state-clock";
import { addWord, type Finish } from "./transcript";

const STATE_NAMES: Record<number, ServerState> = {
  [SessionState.IDLE]: "idle",
  [SessionState.THINKING]: "thinking",
  [SessionState.RENDERING]: "rendering",
  [SessionState.SPEAKING]: "speaking",
  [SessionState.ENDED]: "ended",
};

const FINISH_NAMES: Record<number, Finish> = {
  [FinishReason.COMPLETED]: "completed",
  [FinishReason.INTERRUPTED]: "interrupted",
  [FinishReason.FAILED]: "failed",
};

/** The parts of the page that events change. */
export interface EventTargets {
  states: StateClock;
  conversation: Conversation<WatchSessionResponse>;
  notices: Notices;
}

/** Applies one event, received at `now` (ms, performance.now()). `immediate`: the first event of a watch (the current
 * state, shown at once). */
export function applySessionEvent(
  event: WatchSessionResponse,
  immediate: boolean,
  { states, conversation, notices }: EventTargets,
  now: number,
): void {
  const atUs = Number(event.mediaTimeUs);
  const e = event.event;
  switch (e.case) {
    case "stateChanged": {
      const state = STATE_NAMES[e.value.state];
      if (state) states.receive(state, atUs, immediate, now);
      break;
    }
    case "speechStarted": {
      const turn = conversation.turnFor(e.value.utteranceId, event);
      if (!turn) break;
      turn.speechStartUs = Number(e.value.startUs);
      notices.clearSessionError();
      break;
    }
    case "wordSpoken": {
      const turn = conversation.turnFor(e.value.utteranceId, event);
      if (!turn) break;
      const startUs = Number(e.value.startUs);
      addWord(turn, { index: e.value.wordIndex, text: e.value.word, startUs, receivedAt: now });
      break;
    }
    case "speechFinished": {
      const turn = conversation.turnFor(e.value.utteranceId, event);
      if (!turn) break;
      turn.finish = FINISH_NAMES[e.value.reason] ?? "completed";
      turn.spokenText = e.value.spokenText;
      break;
    }
    case "latency": {
      const turn = conversation.turnFor(e.value.utteranceId, event);
      if (!turn) break;
      turn.server = {
        firstClauseMs: Number(e.value.firstClauseUs) / 1000,
        firstAudioMs: Number(e.value.firstAudioUs) / 1000,
        firstSpeechFrameMs: Number(e.value.firstSpeechFrameUs) / 1000,
        firstSpeechSegmentMs: Number(e.value.firstSpeechSegmentUs) / 1000,
      };
      break;
    }
    case "error": {
      const component = e.value.component ? `${e.value.component}: ` : "";
      if (e.value.utteranceId) {
        const turn = conversation.turnFor(e.value.utteranceId, event);
        if (turn) turn.error = e.value.message;
      }
      notices.setSessionError(`Problem on the server — ${component}${e.value.message}`);
      break;
    }
    case "voiceDegraded": {
      const fallback = e.value.fallbackEngine ? ` (${e.value.fallbackEngine})` : "";
      notices.setNotice(`The voice's provider failed; the offline voice${fallback} finishes this answer.`);
      break;
    }
    case "stalled":
      // Shown by the notices' tick once the episode settles (and not more often than every few seconds).
      notices.addStall({ startUs: Number(e.value.startUs), endUs: Number(e.value.endUs), reason: e.value.reason });
      break;
    default:
      break;
  }
}
