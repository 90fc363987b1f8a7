// The conversation's turns: sending, events that wait for their reply, measuring. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Conversation, ORPHAN_WAIT_MS } from "./conversation";
import { addWord } from "./transcript";

function conversation(): { talk: Conversation<string>; at: (ms: number) => void } {
  let now = 0;
  return { talk: new Conversation<string>(() => now), at: (ms) => (now = ms) };
}

test("a sent turn is in flight until settled; a refused one is taken back", () => {
  const { talk } = conversation();
  const turn = talk.send("say", "hello");
  assert.equal(talk.sending, true);
  assert.deepEqual(talk.turns.map((t) => t.userText), ["hello"]);
  talk.withdraw(turn);
  talk.settle();
  assert.equal(talk.sending, false);
  assert.equal(talk.turns.length, 0);
});

test("events of an unknown utterance wait while a reply is in flight, and are claimed by it", () => {
  const { talk } = conversation();
  const turn = talk.send("chat", "hi?");
  assert.equal(talk.turnFor("u1", "speech"), null);
  assert.equal(talk.turnFor("u1", "word"), null);
  assert.equal(talk.turnFor("", "no utterance"), null);
  turn.utteranceId = "u1";
  talk.settle();
  assert.deepEqual(talk.claimWaiting(turn), ["speech", "word"]);
  assert.deepEqual(talk.claimWaiting(turn), []);
  assert.equal(talk.turnFor("u1", "finish"), turn);
});

test("speech nobody here asked for gets a turn of its own, at once or after the wait", () => {
  const { talk, at } = conversation();
  const other = talk.turnFor("u9", "speech");
  assert.equal(other?.utteranceId, "u9");
  assert.equal(other?.userText, "");

  talk.send("say", "mine");
  assert.equal(talk.turnFor("u2", "a"), null);
  const replayed: string[] = [];
  at(ORPHAN_WAIT_MS);
  talk.adoptStale((event) => replayed.push(event));
  assert.equal(replayed.length, 0);
  at(ORPHAN_WAIT_MS + 1);
  talk.adoptStale((event) => replayed.push(event));
  assert.deepEqual(replayed, ["a"]);
  assert.deepEqual(talk.turns.map((t) => t.utteranceId), ["u9", "", "u2"]);

  assert.equal(talk.turnFor("u3", "b"), null);
  talk.forgetWaiting(); // a new session
  at(10 * ORPHAN_WAIT_MS);
  talk.adoptStale((event) => replayed.push(event));
  assert.deepEqual(replayed, ["a"]);
});

test("words follow the screen; Send → first speech is measured when the speech is on screen", () => {
  const { talk, at } = conversation();
  at(1000);
  const turn = talk.send("say", "hello there");
  turn.utteranceId = "u1";
  talk.settle();
  assert.equal(talk.latestLatency(), null);
  turn.speechStartUs = 2_000_000;
  addWord(turn, { index: 0, text: "hello", startUs: 2_000_000, receivedAt: 1000 });
  addWord(turn, { index: 1, text: "there", startUs: 2_400_000, receivedAt: 1000 });
  at(1500);
  assert.equal(talk.follow(1_999_000), false);
  at(1800);
  assert.equal(talk.follow(2_100_000), true);
  assert.deepEqual(talk.shownWords(), ["hello"]);
  assert.deepEqual(talk.shownWordStartsUs(), [2_000_000]);
  assert.deepEqual(talk.firstSpeechLatencies(), [800]);
  assert.deepEqual(talk.latestLatency(), { firstSpeechMs: 800, server: null });
  at(1900);
  talk.follow(2_500_000);
  assert.deepEqual(talk.firstSpeechLatencies(), [800]); // measured once
  assert.deepEqual(talk.shownWords(), ["hello", "there"]);
});

test("the latency readout is the newest turn that measured anything", () => {
  const { talk } = conversation();
  const first = talk.send("say", "one");
  first.firstSpeechMs = 900;
  const second = talk.send("chat", "two");
  const server = { firstClauseMs: 50, firstAudioMs: 100, firstSpeechFrameMs: 200, firstSpeechSegmentMs: 700 };
  second.server = server;
  talk.send("say", "three");
  assert.deepEqual(talk.latestLatency(), { firstSpeechMs: null, server });
});
