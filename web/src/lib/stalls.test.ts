// StreamStalled notices: wording and throttling. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatSeconds, StallThrottle, stallNotice } from "./stalls";

test("the stall notice says how long, why, and what showed", () => {
  assert.equal(
    stallNotice(500_000, "late"),
    "The picture fell behind for 0.5 s (the server is busy); the avatar idled while speaking.",
  );
  assert.match(stallNotice(320_000, "lost"), /^The picture fell behind for 0\.3 s \(the video renderer's stream was lost\)/);
  assert.match(stallNotice(960_000, "unusable"), /for 1\.0 s \(a rendered piece could not be used\)/);
  assert.equal(stallNotice(480_000, ""), "The picture fell behind for 0.5 s; the avatar idled while speaking.");
  assert.equal(formatSeconds(0), "0.1 s");
  assert.equal(formatSeconds(12_400_000), "12 s");
});

test("one notice per stall episode, after it settles", () => {
  const throttle = new StallThrottle({ settleMs: 1000, maxHoldMs: 3000, minGapMs: 5000 });
  assert.equal(throttle.poll(0), null);
  // Three consecutive 0.32 s chunks, one every 320 ms.
  throttle.add({ startUs: 0, endUs: 320_000, reason: "late" }, 0);
  assert.equal(throttle.poll(100), null);
  throttle.add({ startUs: 320_000, endUs: 640_000, reason: "late" }, 320);
  throttle.add({ startUs: 640_000, endUs: 960_000, reason: "late" }, 640);
  assert.equal(throttle.poll(1500), null); // not settled yet
  assert.equal(
    throttle.poll(1640),
    "The picture fell behind for 1.0 s (the server is busy); the avatar idled while speaking.",
  );
  assert.equal(throttle.poll(1700), null); // shown once
});

test("no more than one notice every few seconds; held stalls join the next", () => {
  const throttle = new StallThrottle({ settleMs: 1000, maxHoldMs: 3000, minGapMs: 5000 });
  throttle.add({ startUs: 0, endUs: 500_000, reason: "late" }, 0);
  assert.ok(throttle.poll(1000));
  throttle.add({ startUs: 2_000_000, endUs: 2_300_000, reason: "late" }, 2000);
  throttle.add({ startUs: 3_000_000, endUs: 3_300_000, reason: "lost" }, 3000);
  throttle.add({ startUs: 3_300_000, endUs: 3_700_000, reason: "lost" }, 3400);
  assert.equal(throttle.poll(4500), null); // settled, but too soon after the last notice
  const next = throttle.poll(6000);
  assert.match(next ?? "", /for 1\.0 s \(the video renderer's stream was lost\)/); // the reason covering most time
  assert.equal(throttle.poll(20000), null);
});

test("a long episode is reported while it lasts, every few seconds", () => {
  const throttle = new StallThrottle({ settleMs: 1000, maxHoldMs: 3000, minGapMs: 5000 });
  const shown: number[] = [];
  for (let t = 0; t <= 12000; t += 100) {
    if (t % 400 === 0) throttle.add({ startUs: t * 1000, endUs: (t + 400) * 1000, reason: "late" }, t);
    if (throttle.poll(t)) shown.push(t);
  }
  assert.deepEqual(shown, [3000, 8000]);
  throttle.reset();
  assert.equal(throttle.poll(30000), null);
});
