// The page's back-buffer trimming: how much, and only right after the newest listed media is buffered. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import type Hls from "hls.js";
import type { FragBufferedData } from "hls.js";
import {
  BACK_BUFFER_KEEP_S,
  BACK_BUFFER_MAX_S,
  BACK_BUFFER_TRIM_STEP_S,
  BackBufferTrimmer,
  backBufferCut,
  isNewestListed,
  listedEdge,
} from "./back-buffer";

type Details = NonNullable<Hls["latestLevelDetails"]>;

/** hls.js's level details as the trimmer reads them: segments `firstSn..lastSn`, and parts of the newest ones. */
function details(firstSn: number, lastSn: number, parts: Array<[sn: number, index: number]>): Details {
  const fragments = [];
  for (let sn = firstSn; sn <= lastSn; sn++) fragments.push({ sn });
  const partList = parts.map(([sn, index]) => ({ fragment: { sn }, index }));
  return { fragments, endSN: lastSn, partList: partList.length ? partList : null } as unknown as Details;
}

function buffered(ranges: Array<[number, number]>): TimeRanges {
  return {
    length: ranges.length,
    start: (i: number) => ranges[i][0],
    end: (i: number) => ranges[i][1],
  } as TimeRanges;
}

function bufferedPart(sn: number, part: number | null, type = "main"): Pick<FragBufferedData, "frag" | "part"> {
  return { frag: { sn, type }, part: part === null ? null : { index: part } } as unknown as FragBufferedData;
}

test("the back buffer is cut KEEP seconds behind the playhead, once STEP more has piled up", () => {
  const keep = BACK_BUFFER_KEEP_S;
  const step = BACK_BUFFER_TRIM_STEP_S;
  assert.equal(backBufferCut(30, 30 - keep - step + 0.01, true), null, "not yet");
  assert.equal(backBufferCut(30, 30 - keep - step, true), 30 - keep);
  assert.equal(backBufferCut(100, 80, true), 100 - keep);
  assert.equal(backBufferCut(100, null, true), null, "nothing buffered");
  assert.equal(backBufferCut(0, 0, true), null, "not playing yet");
  assert.equal(backBufferCut(Number.NaN, 0, true), null);
});

test("not at a safe moment, the back buffer is cut only once it reaches its limit", () => {
  assert.equal(backBufferCut(100, 80, false), null, "a part may be loading: wait for a safe moment");
  assert.equal(backBufferCut(100, 100 - BACK_BUFFER_MAX_S + 0.01, false), null);
  assert.equal(backBufferCut(100, 100 - BACK_BUFFER_MAX_S, false), 100 - BACK_BUFFER_KEEP_S, "too much: trim anyway");
});

test("the newest listed media is the last part, or the last segment without parts", () => {
  const listed = details(10, 12, [[12, 5], [13, 0], [13, 1]]);
  assert.deepEqual(listedEdge(listed, true), { sn: 13, part: 1 });
  assert.deepEqual(listedEdge(listed, false), { sn: 12, part: null }, "the plain segments: parts listed, not loaded");
  assert.deepEqual(listedEdge(details(10, 12, []), true), { sn: 12, part: null });
  assert.equal(listedEdge(null, true), null);
  const edge = { sn: 13, part: 1 };
  assert.ok(isNewestListed(13, 1, edge));
  assert.ok(!isNewestListed(13, 0, edge), "a later part is listed: it may be loading");
  assert.ok(!isNewestListed(12, 1, edge));
  assert.ok(!isNewestListed(13, null, edge), "a whole segment while parts are listed");
  assert.ok(!isNewestListed(13, 1, null));
});

test("the trimmer flushes only when the newest listed part was just buffered and enough was played", () => {
  const video = { currentTime: 40, buffered: buffered([[20, 40.3]]) };
  let listed = details(30, 40, [[40, 5], [41, 0]]);
  const flushed: number[] = [];
  const trimmer = new BackBufferTrimmer(
    video,
    () => listed,
    true,
    (end) => flushed.push(end),
  );
  trimmer.onBuffered(bufferedPart(40, 5));
  assert.deepEqual(flushed, [], "part 41.0 is listed after it: it may be on its way, a flush could race it");
  trimmer.onBuffered(bufferedPart(41, 0, "audio"));
  assert.deepEqual(flushed, [], "only the main stream's media");
  trimmer.onBuffered(bufferedPart(41, 0));
  assert.deepEqual(flushed, [40 - BACK_BUFFER_KEEP_S]);

  video.buffered = buffered([[36, 40.5]]);
  listed = details(30, 40, [[41, 1]]);
  trimmer.onBuffered(bufferedPart(41, 1));
  assert.deepEqual(flushed, [40 - BACK_BUFFER_KEEP_S], "already trimmed: nothing to do");

});

test("playing the plain segments, the trimmer flushes after the newest whole segment, parts listed or not", () => {
  const video = { currentTime: 40, buffered: buffered([[15, 40.5]]) };
  const listed = details(30, 41, [[41, 5], [42, 0]]);
  const flushed: number[] = [];
  const trimmer = new BackBufferTrimmer(video, () => listed, false, (end) => flushed.push(end));
  trimmer.onBuffered(bufferedPart(40, null));
  assert.deepEqual(flushed, [], "segment 41 is listed after it");
  trimmer.onBuffered(bufferedPart(41, null));
  assert.deepEqual(flushed, [40 - BACK_BUFFER_KEEP_S]);
  // A player that never catches up with the newest segment still keeps at most BACK_BUFFER_MAX_S.
  video.buffered = buffered([[40 - BACK_BUFFER_MAX_S, 40.5]]);
  trimmer.onBuffered(bufferedPart(40, null));
  assert.equal(flushed.length, 2);
});
