// Unit tests for the pure parts: `npm test` (compiled by tsc to .test-build/, run by node:test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { backoffMs, describeError } from "./errors";
import { addWord, newTurn, revealWords, shownWords, turnText } from "./transcript";

test("words show when the picture reaches their start", () => {
  const turn = newTurn({ utteranceId: "u1", mode: "say", userText: "hello there" });
  addWord(turn, { index: 1, text: "there", startUs: 1_400_000, receivedAt: 0 });
  addWord(turn, { index: 0, text: "hello", startUs: 1_000_000, receivedAt: 0 });
  addWord(turn, { index: 0, text: "hello", startUs: 1_000_000, receivedAt: 0 }); // repeated after a reconnect
  assert.equal(revealWords([turn], 900_000, 100), false);
  assert.deepEqual(shownWords([turn]), []);
  assert.equal(revealWords([turn], 1_000_000, 100), true);
  assert.deepEqual(shownWords([turn]), ["hello"]);
  revealWords([turn], 2_000_000, 200);
  assert.equal(turnText(turn), "hello there");
});

test("words show anyway when the player has no clock or is stuck", () => {
  const turn = newTurn({ utteranceId: "u2" });
  addWord(turn, { index: 0, text: "late", startUs: 9_000_000, receivedAt: 0 });
  assert.equal(revealWords([turn], null, 1000), false);
  assert.equal(revealWords([turn], null, 1600), true);
  const stuck = newTurn({ utteranceId: "u3" });
  addWord(stuck, { index: 0, text: "stuck", startUs: 9_000_000, receivedAt: 0 });
  assert.equal(revealWords([stuck], 1_000_000, 5000), false);
  assert.equal(revealWords([stuck], 1_000_000, 6000), true);
});

test("errors map to what the page does", () => {
  assert.equal(describeError(new ConnectError("upstream connect error", Code.Unavailable)).kind, "unreachable");
  assert.equal(describeError(new TypeError("Failed to fetch")).kind, "unreachable");
  const gone = describeError(new ConnectError("session has ended; create a new one", Code.NotFound));
  assert.equal(gone.kind, "session-gone");
  const long = describeError(
    new ConnectError("text is 5001 characters long; the limit is 5000 characters", Code.InvalidArgument),
  );
  assert.equal(long.kind, "invalid");
  assert.equal(long.message, "text is 5001 characters long; the limit is 5000 characters");
  assert.equal(describeError(new ConnectError("too many requests", Code.ResourceExhausted)).kind, "rate-limited");
});

test("backoff grows from 0.5 s to 5 s", () => {
  assert.ok(backoffMs(0) <= 500 && backoffMs(0) >= 400);
  assert.ok(backoffMs(10) <= 5000 && backoffMs(10) >= 4000);
});
