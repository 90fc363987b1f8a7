import { test } from "node:test";
import assert from "node:assert/strict";
import { bufferedEndAt, type Ranges } from "./buffered";

function ranges(...spans: Array<[number, number]>): Ranges {
  return { length: spans.length, start: (i) => spans[i][0], end: (i) => spans[i][1] };
}

test("the buffered end around the playhead", () => {
  assert.equal(bufferedEndAt(ranges(), 3, 0.1), null, "nothing buffered");
  assert.equal(bufferedEndAt(ranges([0, 5]), 3, 0.01), 5);
  assert.equal(bufferedEndAt(ranges([0, 5]), 5, 0.01), 5, "standing at the end");
  assert.equal(bufferedEndAt(ranges([0, 2], [4, 6]), 3, 0.1), null, "in a hole");
  assert.equal(bufferedEndAt(ranges([0, 2], [3.05, 6]), 3, 0.1), 6, "just before a range");
  assert.equal(bufferedEndAt(ranges([0, 2], [3.05, 6]), 3, 0.01), null, "not that close");
});
