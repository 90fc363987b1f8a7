// Moving playback on where hls.js (1.7, lowLatencyMode) stops loading parts that are listed. The known causes are
// removed at their source (each part's audio reaches its video's end: the packager's audio lookahead; no back-buffer
// trim while a part loads: back-buffer.ts); this stays as the fallback for any other. Without it hls.js waits until
// it is two seconds behind live and jumps there: a two-second freeze and two seconds lost. Rules: playback.ts.
import type Hls from "hls.js";
import { bufferedEndAt } from "./buffered";
import { seekPastSegmentEnd, seekToUnloadedPart, UNLOADED_PARTS_WAIT_MS } from "./playback";

export class Unsticker {
  /** Seeks past a finished segment's last few ms (seekPastSegmentEnd). */
  segmentEndSeeks = 0;
  /** Seeks to a listed part hls.js left unloaded while playback stood at its buffer's end (seekToUnloadedPart). */
  unloadedPartSeeks = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly video: HTMLVideoElement,
    private readonly hls: () => Hls | null,
  ) {}

  /** On `waiting` (and hls.js's BUFFER_STALLED_ERROR): at a segment's end now; elsewhere if still standing a moment
   * later (a part may just be on its way). */
  onStall(): void {
    this.atSegmentEnd();
    const standingAt = this.video.currentTime;
    const hls = this.hls();
    this.cancel();
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.hls() === hls && this.video.currentTime === standingAt) this.toUnloadedPart();
    }, UNLOADED_PARTS_WAIT_MS);
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private atSegmentEnd(): void {
    const hls = this.hls();
    if (!hls || !hls.lowLatencyMode) return;
    const ends = (hls.latestLevelDetails?.fragments ?? []).map((fragment) => fragment.end);
    const target = seekPastSegmentEnd(this.video.currentTime, this.bufferedEnd(), ends);
    if (target === null) return;
    this.segmentEndSeeks++;
    this.video.currentTime = target;
  }

  private toUnloadedPart(): void {
    const hls = this.hls();
    const details = hls?.latestLevelDetails;
    if (!hls || !hls.lowLatencyMode || !details) return;
    const starts = (details.partList ?? []).filter((part) => !part.loaded).map((part) => part.start);
    const target = seekToUnloadedPart(this.video.currentTime, this.bufferedEnd(), starts, details.partTarget);
    if (target === null) return;
    this.unloadedPartSeeks++;
    this.video.currentTime = target;
  }

  /** The end of the buffered range the playhead is in (or at), or null. */
  private bufferedEnd(): number | null {
    return bufferedEndAt(this.video.buffered, this.video.currentTime, 0.01);
  }
}
