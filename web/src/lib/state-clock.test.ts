// The state clock: states follow the picture. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { STATE_HOLD_WITHOUT_CLOCK_MS, STATE_MAX_HOLD_MS, StateClock } from "./state-clock";

test("speaking shows when the screen reaches it", () => {
  const clock = new StateClock();
  clock.receive("speaking", 2_000_000, false, 0);
  assert.equal(clock.advance(1_900_000, 10), false);
  assert.equal(clock.state, "idle");
  assert.equal(clock.advance(2_000_000, 20), true);
  assert.equal(clock.state, "speaking");
});

test("thinking, rendering, ended and a watch's first state show at once and drop what was queued", () => {
  const clock = new StateClock();
  clock.receive("speaking", 5_000_000, false, 0);
  clock.receive("thinking", 4_000_000, false, 0);
  assert.equal(clock.state, "thinking");
  assert.equal(clock.advance(9_000_000, 1), false); // the queued "speaking" went
  clock.receive("idle", 0, true, 2);
  assert.equal(clock.state, "idle");
  clock.receive("speaking", 6_000_000, false, 3);
  clock.receive("ended", 0, false, 4);
  assert.equal(clock.state, "ended");
  assert.equal(clock.advance(9_000_000, 5), false);
});

test("without a clock a change shows after a hold, and never waits past the maximum", () => {
  const clock = new StateClock();
  clock.receive("speaking", 1_000_000, false, 0);
  assert.equal(clock.advance(null, STATE_HOLD_WITHOUT_CLOCK_MS - 1), false);
  assert.equal(clock.advance(null, STATE_HOLD_WITHOUT_CLOCK_MS), true);
  clock.receive("idle", 99_000_000, false, 10_000);
  assert.equal(clock.advance(0, 10_000 + STATE_MAX_HOLD_MS - 1), false); // the screen is far behind
  assert.equal(clock.advance(0, 10_000 + STATE_MAX_HOLD_MS), true);
  assert.equal(clock.state, "idle");
});

test("changes show in order; reset and dropPending forget them", () => {
  const clock = new StateClock();
  clock.receive("speaking", 1_000_000, false, 0);
  clock.receive("idle", 2_000_000, false, 0);
  assert.equal(clock.advance(2_500_000, 1), true);
  assert.equal(clock.state, "idle");
  clock.receive("speaking", 3_000_000, false, 2);
  clock.dropPending();
  assert.equal(clock.advance(9_000_000, 3), false);
  clock.receive("thinking", 0, false, 4);
  clock.reset();
  assert.equal(clock.state, "idle");
});
