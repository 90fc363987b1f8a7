// What each failed call means for the page. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { describeError, UNREACHABLE_MESSAGE } from "./errors";
import {
  createFailure,
  interruptFailure,
  portraitFailure,
  sendFailure,
  watchFailure,
} from "./session-failures";

const info = (code: Code, message = "") => describeError(new ConnectError(message, code));
const gone = info(Code.NotFound, "no such session");
const denied = info(Code.Unauthenticated, "bad token");
const down = info(Code.Unavailable);
const invalid = info(Code.InvalidArgument, "text too long (5000)");
const busy = info(Code.ResourceExhausted, "the server is at capacity");
const rate = info(Code.ResourceExhausted, "too many requests per second");
const cancelled = info(Code.Canceled);
const other = info(Code.Aborted, "it broke");

test("a broken watch: new session, offline, or a banner that says the loop retries", () => {
  assert.deepEqual(watchFailure(gone), { kind: "new-session" });
  assert.deepEqual(watchFailure(denied), { kind: "new-session" });
  assert.deepEqual(watchFailure(invalid), { kind: "new-session" });
  assert.deepEqual(watchFailure(down), { kind: "offline" });
  assert.deepEqual(watchFailure(rate), { kind: "error", message: "too many requests per second — retrying…" });
  assert.deepEqual(watchFailure(other), { kind: "error", message: "it broke — retrying…" });
  assert.deepEqual(watchFailure({ ...other, message: "" }), { kind: "error", message: UNREACHABLE_MESSAGE });
});

test("a failed CreateSession: offline, the server's sentence, or back to the defaults", () => {
  assert.deepEqual(createFailure(down, false), { kind: "offline" });
  assert.deepEqual(createFailure(busy, false), { kind: "error", message: "The server is at capacity — retrying…" });
  assert.deepEqual(createFailure(rate, false), {
    kind: "error",
    message: "The server is busy: too many requests per second — retrying…",
  });
  const unknownAvatar = info(Code.InvalidArgument, "no avatar named zed");
  assert.deepEqual(createFailure(unknownAvatar, true), {
    kind: "error",
    message: "no avatar named zed",
    forgetChoice: true,
  });
  assert.deepEqual(createFailure(unknownAvatar, false), { kind: "error", message: "no avatar named zed" });
  assert.deepEqual(createFailure({ ...other, message: "" }, false), {
    kind: "error",
    message: "Could not start a session — retrying…",
  });
});

test("a failed Interrupt", () => {
  assert.deepEqual(interruptFailure(gone), { kind: "new-session" });
  assert.deepEqual(interruptFailure(down), { kind: "offline" });
  assert.deepEqual(interruptFailure(cancelled), { kind: "none" });
  assert.deepEqual(interruptFailure(rate), { kind: "input-error", message: rate.message });
});

test("a refused Say/Chat is taken back; a failed one stays with its reason", () => {
  assert.deepEqual(sendFailure(invalid), {
    withdraw: true,
    turnError: "",
    inputError: "text too long (5000)",
    offline: false,
  });
  assert.equal(sendFailure(busy).inputError, "The server is at capacity");
  assert.equal(sendFailure(rate).inputError, "Slow down: too many requests per second");
  assert.deepEqual(sendFailure(down), {
    withdraw: false,
    turnError: "Not sent: can't reach the server.",
    inputError: "Not sent: can't reach the server. Your text is still here.",
    offline: true,
  });
  assert.deepEqual(sendFailure(gone), {
    withdraw: false,
    turnError: "Not sent: The session ended — starting a new one…",
    inputError: "Not sent: The session ended — starting a new one…",
    offline: false,
  });
});

test("why a photo was not used", () => {
  assert.equal(portraitFailure(info(Code.InvalidArgument, "no face found")), "Your photo can't be used: no face found");
  assert.equal(portraitFailure(down), "Can't reach the server — your photo was not sent.");
  assert.equal(portraitFailure(busy), "The server is at capacity (your photo was not used)");
  assert.equal(portraitFailure(other), "it broke");
});
