// The media element's buffered range around the playhead, read by the catch-up (player.ts: how much lies ahead) and
// the unstick rules (unstick.ts: where the buffer ends). Pure over a TimeRanges-like value, so unit-tested.

/** The subset of TimeRanges read here. */
export interface Ranges {
  readonly length: number;
  start(index: number): number;
  end(index: number): number;
}

/** The end of the (last) buffered range holding `time`, a range starting up to `slackS` after it counting too (a
 * playhead resting just before a range's first frame); null when the playhead stands in no range. */
export function bufferedEndAt(ranges: Ranges, time: number, slackS: number): number | null {
  let end: number | null = null;
  for (let i = 0; i < ranges.length; i++) {
    if (ranges.start(i) <= time + slackS && ranges.end(i) >= time) end = ranges.end(i);
  }
  return end;
}
