// RESOURCE_EXHAUSTED in its three flavours, as the gRPC-Web client decodes it: `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { describeError, isBusyRefusal, sessionLost } from "./errors";
import { QuotaFailureSchema } from "../gen/google/rpc/error_details_pb";

/** The error the page sees when the server aborts with RESOURCE_EXHAUSTED, `message` and a QuotaFailure whose
 * violation has `subject` (services/common/errors.py abort_resource_exhausted): encoded into grpc-status-details-bin
 * and decoded back the way the gRPC-Web transport reads a trailers-only response. */
function fromWire(subject: string, message: string): ConnectError {
  const sent = new ConnectError(message, Code.ResourceExhausted, undefined, [
    { desc: QuotaFailureSchema, value: create(QuotaFailureSchema, { violations: [{ subject, description: message }] }) },
  ]);
  const headers = setTrailerStatus(new Headers(), sent);
  assert.ok(headers.get("grpc-status-details-bin"));
  const received = findTrailerError(headers);
  assert.ok(received);
  return received;
}

const RATE = "too many requests: at most 5 per second per session";
const BUSY_SAY =
  "the avatar server is already speaking for 6 sessions, as many as it can render at once (its measured limit: 6, " +
  "at 0.17 of 1.5 CPU cores each); try again when one finishes";
const BUSY_CREATE =
  "no room for another session: all 1 video workers are at capacity (24 sessions each); try again later";

test("a per-session rate limit says slow down", () => {
  const info = describeError(fromWire("session:abc123", RATE));
  assert.equal(info.kind, "rate-limited");
  assert.equal(info.quotaSubject, "session:abc123");
  assert.equal(info.message, `Slow down: ${RATE}`);
  const watchers = describeError(fromWire("session:abc123", "too many watchers: at most 4 per session"));
  assert.equal(watchers.kind, "rate-limited");
});

test("a busy Say/Chat shows the server's own sentence", () => {
  const info = describeError(fromWire("video.speaking", BUSY_SAY));
  assert.equal(info.kind, "busy");
  assert.equal(info.quotaSubject, "video.speaking");
  assert.equal(info.detail, BUSY_SAY);
  assert.equal(info.message, "T" + BUSY_SAY.slice(1));
  assert.ok(!info.message.includes("Slow down"));
});

test("a busy CreateSession is busy, not unreachable", () => {
  for (const [subject, message] of [
    ["video.workers", BUSY_CREATE],
    ["sessions", "the server is full: at most 100 sessions at once"],
  ]) {
    const info = describeError(fromWire(subject, message));
    assert.equal(info.kind, "busy", subject);
    assert.equal(info.message, message[0].toUpperCase() + message.slice(1));
  }
});

test("without QuotaFailure details, the message tells busy from rate-limited", () => {
  const busySay = describeError(new ConnectError(BUSY_SAY, Code.ResourceExhausted));
  assert.equal(busySay.kind, "busy");
  assert.equal(busySay.quotaSubject, "");
  assert.equal(describeError(new ConnectError(BUSY_CREATE, Code.ResourceExhausted)).kind, "busy");
  const rate = describeError(new ConnectError(RATE, Code.ResourceExhausted));
  assert.equal(rate.kind, "rate-limited");
  assert.equal(rate.message, `Slow down: ${RATE}`);
  assert.equal(describeError(new ConnectError("", Code.ResourceExhausted)).kind, "rate-limited");
  // The subject wins over the wording.
  assert.equal(isBusyRefusal("session:x", "at capacity"), false);
  assert.equal(isBusyRefusal("watcher", "this watcher fell too far behind; watch again"), false);
  assert.equal(isBusyRefusal("portraits", "too many portraits at once"), true);
});

test("details that do not decode fall back to the message", () => {
  const err = new ConnectError(BUSY_SAY, Code.ResourceExhausted);
  err.details = [{ type: "google.rpc.QuotaFailure", value: new Uint8Array([0x0a, 0xff]) }];
  assert.equal(describeError(err).kind, "busy");
});

test("a refused credential is 'denied'; for the page's own session that means start a new one", () => {
  for (const code of [Code.Unauthenticated, Code.PermissionDenied]) {
    const info = describeError(new ConnectError("the control token does not grant this session", code));
    assert.equal(info.kind, "denied");
    assert.equal(info.message, "the control token does not grant this session");
    assert.ok(sessionLost(info));
  }
  assert.ok(sessionLost(describeError(new ConnectError("session has ended", Code.NotFound))));
  assert.ok(!sessionLost(describeError(new ConnectError("slow down", Code.ResourceExhausted))));
});
