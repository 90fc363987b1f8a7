// What each WatchSession event does to the page. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  FinishReason,
  SessionState,
  WatchSessionResponseSchema,
  type WatchSessionResponse,
} from "../gen/avatar/v1/session_pb";
import { Conversation } from "./conversation";
import { Notices } from "./notices";
import { applySessionEvent, type EventTargets } from "./session-events";
import { StateClock } from "./state-clock";

type Init = Parameters<typeof create<typeof WatchSessionResponseSchema>>[1];
const event = (init: Init): WatchSessionResponse => create(WatchSessionResponseSchema, init);

function page(): EventTargets {
  return {
    states: new StateClock(),
    conversation: new Conversation<WatchSessionResponse>(() => 0),
    notices: new Notices(
      () => undefined,
      () => 0,
    ),
  };
}

test("state changes go to the state clock at their media time", () => {
  const targets = page();
  const speaking = event({
    mediaTimeUs: 3_000_000n,
    event: { case: "stateChanged", value: { state: SessionState.SPEAKING } },
  });
  applySessionEvent(speaking, false, targets, 0);
  assert.equal(targets.states.state, "idle");
  targets.states.advance(3_000_000, 1);
  assert.equal(targets.states.state, "speaking");
  const idle = event({ event: { case: "stateChanged", value: { state: SessionState.IDLE } } });
  applySessionEvent(idle, true, targets, 2); // a watch's first event shows at once
  assert.equal(targets.states.state, "idle");
});

test("speech, words, the finish and latency fill the utterance's turn", () => {
  const targets = page();
  const u = "u1";
  targets.notices.setSessionError("Problem on the server — earlier");
  const started = { utteranceId: u, startUs: 1_000_000n };
  applySessionEvent(event({ event: { case: "speechStarted", value: started } }), false, targets, 5);
  assert.equal(targets.notices.bannerError, ""); // speech resumed
  const word = { utteranceId: u, word: "hi", startUs: 1_000_000n, wordIndex: 0 };
  applySessionEvent(event({ event: { case: "wordSpoken", value: word } }), false, targets, 6);
  const finish = { utteranceId: u, reason: FinishReason.INTERRUPTED, spokenText: "hi" };
  applySessionEvent(event({ event: { case: "speechFinished", value: finish } }), false, targets, 7);
  const latency = {
    utteranceId: u,
    firstClauseUs: 0n,
    firstAudioUs: 120_000n,
    firstSpeechFrameUs: 300_000n,
    firstSpeechSegmentUs: 900_000n,
  };
  applySessionEvent(event({ event: { case: "latency", value: latency } }), false, targets, 8);
  const [turn] = targets.conversation.turns;
  assert.equal(turn.utteranceId, u);
  assert.equal(turn.speechStartUs, 1_000_000);
  assert.deepEqual(turn.words, [{ index: 0, text: "hi", startUs: 1_000_000, receivedAt: 6, shown: false }]);
  assert.equal(turn.finish, "interrupted");
  assert.equal(turn.spokenText, "hi");
  const serverMs = { firstClauseMs: 0, firstAudioMs: 120, firstSpeechFrameMs: 300, firstSpeechSegmentMs: 900 };
  assert.deepEqual(turn.server, serverMs);
});

test("errors, a degraded voice and stalls become messages", () => {
  const targets = page();
  const error = { utteranceId: "u2", component: "tts", message: "provider down" };
  applySessionEvent(event({ event: { case: "error", value: error } }), false, targets, 0);
  assert.equal(targets.notices.bannerError, "Problem on the server — tts: provider down");
  assert.equal(targets.conversation.turns[0].error, "provider down");
  const degraded = { utteranceId: "u2", fallbackEngine: "piper" };
  applySessionEvent(event({ event: { case: "voiceDegraded", value: degraded } }), false, targets, 0);
  assert.equal(
    targets.notices.currentNotice,
    "The voice's provider failed; the offline voice (piper) finishes this answer.",
  );
  const stall = { startUs: 0n, endUs: 320_000n, reason: "lost" };
  applySessionEvent(event({ event: { case: "stalled", value: stall } }), false, targets, 0);
  assert.match(targets.notices.currentNotice, /offline voice/); // the stall shows on the notices' clock, later
});

test("events of an utterance whose reply is in flight wait for it", () => {
  const targets = page();
  targets.conversation.send("say", "hello");
  const word = { utteranceId: "u3", word: "hello", startUs: 0n, wordIndex: 0 };
  applySessionEvent(event({ event: { case: "wordSpoken", value: word } }), false, targets, 0);
  assert.equal(targets.conversation.turns.length, 1);
  assert.equal(targets.conversation.turns[0].words.length, 0);
});
