// The event mapping and the error decoding, without a server (node --test dist/).
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { FinishReason, SessionState, WatchSessionResponseSchema } from "./gen/avatar/v1/session_pb.js";
import { BadRequestSchema, QuotaFailureSchema } from "./gen/google/rpc/error_details_pb.js";
import { ApiError, codeName } from "./errors.js";
import { toEvent } from "./events.js";

test("words keep their media times as numbers", () => {
  const raw = create(WatchSessionResponseSchema, {
    mediaTimeUs: 1_000_000n,
    event: { case: "wordSpoken", value: { utteranceId: "u1", word: "Hello", startUs: 1_240_000n, endUs: 1_600_000n } },
  });
  const event = toEvent(raw);
  assert.equal(event.kind, "word");
  if (event.kind !== "word") return;
  assert.deepEqual([event.word, event.startUs, event.endUs, event.mediaTimeUs], ["Hello", 1_240_000, 1_600_000, 1e6]);
});

test("enums become names", () => {
  const state = toEvent(
    create(WatchSessionResponseSchema, { event: { case: "stateChanged", value: { state: SessionState.SPEAKING } } }),
  );
  assert.equal(state.kind === "state" && state.state, "speaking");
  const finished = toEvent(
    create(WatchSessionResponseSchema, {
      event: { case: "speechFinished", value: { reason: FinishReason.INTERRUPTED, spokenText: "Hi" } },
    }),
  );
  assert.equal(finished.kind === "speechFinished" && finished.reason, "interrupted");
  assert.equal(toEvent(create(WatchSessionResponseSchema, {})).kind, "unknown");
});

test("ApiError carries the code, the sentence and the decoded details", () => {
  const bad = create(BadRequestSchema, { fieldViolations: [{ field: "text", description: "too long" }] });
  const quota = create(QuotaFailureSchema, { violations: [{ subject: "sessions" }] });
  const error = ApiError.from(
    new ConnectError("text is too long", Code.InvalidArgument, undefined, [
      { desc: BadRequestSchema, value: bad },
      { desc: QuotaFailureSchema, value: quota },
    ]),
  );
  assert.equal(error.code, Code.InvalidArgument);
  assert.equal(error.codeName, "INVALID_ARGUMENT");
  assert.equal(error.rawMessage, "text is too long");
  assert.equal(error.badRequest?.fieldViolations[0].field, "text");
  assert.equal(error.quotaFailure?.violations[0].subject, "sessions");
  assert.equal(error.resourceInfo, undefined);
  assert.equal(codeName(Code.ResourceExhausted), "RESOURCE_EXHAUSTED");
  assert.equal(ApiError.from(new Error("socket hang up")).code, Code.Unknown);
});
