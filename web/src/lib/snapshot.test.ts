// The snapshot's derived fields: the state badge, picker options, the live readouts. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { behindLiveMs, pickerOptions, targetLatencyMs, uiState } from "./snapshot";

const watched = { offline: false, error: "", hasSession: true, watching: true, serverState: "speaking" as const };

test("the state badge: offline and failed first, then connecting, then the server's state", () => {
  assert.equal(uiState(watched), "speaking");
  assert.equal(uiState({ ...watched, offline: true }), "error");
  assert.equal(uiState({ ...watched, error: "no room", hasSession: false }), "error");
  assert.equal(uiState({ ...watched, error: "photo refused" }), "speaking"); // the session plays on
  assert.equal(uiState({ ...watched, hasSession: false }), "connecting");
  assert.equal(uiState({ ...watched, watching: false }), "connecting");
  assert.equal(uiState({ ...watched, serverState: "ended" }), "connecting");
});

test("a picker offers the catalog and the current value, once each", () => {
  assert.deepEqual(pickerOptions(["ada", "bo"], "bo"), ["ada", "bo"]);
  assert.deepEqual(pickerOptions([], "portrait-1"), ["portrait-1"]);
  assert.deepEqual(pickerOptions(["ada", ""], ""), ["ada"]);
});

test("behind live: now minus the epoch plus the on-screen time, to 10 ms", () => {
  assert.equal(behindLiveMs(1_000_000, null, 1_002_000), null);
  assert.equal(behindLiveMs(1_000_000, 500_000, 1_001_734), 1230);
  assert.equal(targetLatencyMs(null), null);
  assert.equal(targetLatencyMs(1.4999), 1500);
});
