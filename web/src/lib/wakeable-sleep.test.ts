// The session loop's backoff pause. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WakeableSleep } from "./wakeable-sleep";

test("a sleep ends on its own or when woken", async () => {
  const pause = new WakeableSleep();
  const started = Date.now();
  await pause.sleep(20);
  assert.ok(Date.now() - started >= 15);

  const long = pause.sleep(60_000);
  pause.wake();
  await long; // would time the test out without the wake
  pause.wake(); // no sleeper: nothing happens
});
