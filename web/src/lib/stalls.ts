// WatchSession's `stalled` events (StreamStalled): rendered pictures that were not ready in time, so the idle loop
// showed while the audio played on. Pure helpers (unit-tested): the notice's wording, and a throttle that merges the
// chunks of one episode into one notice and shows at most one notice every few seconds.

export interface Stall {
  startUs: number;
  endUs: number;
  /** "late", "lost" or "unusable" (PackagerService's ChunkStalled). */
  reason: string;
}

const REASONS: Record<string, string> = {
  late: "the server is busy",
  lost: "the video renderer's stream was lost",
  unusable: "a rendered piece could not be used",
};

/** "0.5 s", "1.3 s", "12 s". */
export function formatSeconds(us: number): string {
  const s = Math.max(0, us) / 1e6;
  if (s >= 10) return `${Math.round(s)} s`;
  return `${Math.max(0.1, Math.round(s * 10) / 10).toFixed(1)} s`;
}

/** The notice for `totalUs` of stalled pictures, mostly for `reason`. */
export function stallNotice(totalUs: number, reason: string): string {
  const why = REASONS[reason];
  return `The picture fell behind for ${formatSeconds(totalUs)}${why ? ` (${why})` : ""}; the avatar idled while speaking.`;
}

export interface StallThrottleOptions {
  /** An episode is over when no stall came for this long: its notice shows then. */
  settleMs?: number;
  /** A long episode is reported after this long anyway. */
  maxHoldMs?: number;
  /** At most one notice per this long; stalls in between are added to the next one. */
  minGapMs?: number;
}

/** Collects stalls (`add`) and says when to show a notice for them (`poll`, called on a timer). Times are in ms of
 * any monotonic clock (performance.now()). */
export class StallThrottle {
  private readonly settleMs: number;
  private readonly maxHoldMs: number;
  private readonly minGapMs: number;
  private byReason = new Map<string, number>();
  private totalUs = 0;
  private pending = 0;
  private firstAt = 0;
  private lastAt = 0;
  private shownAt = -Infinity;

  constructor(options: StallThrottleOptions = {}) {
    this.settleMs = options.settleMs ?? 1000;
    this.maxHoldMs = options.maxHoldMs ?? 3000;
    this.minGapMs = options.minGapMs ?? 5000;
  }

  add(stall: Stall, now: number): void {
    const us = Math.max(0, stall.endUs - stall.startUs);
    if (!this.pending) this.firstAt = now;
    this.pending++;
    this.lastAt = now;
    this.totalUs += us;
    this.byReason.set(stall.reason, (this.byReason.get(stall.reason) ?? 0) + us);
  }

  /** The notice to show now, or null (nothing pending, the episode still going on, or one shown too recently). */
  poll(now: number): string | null {
    if (!this.pending) return null;
    const settled = now - this.lastAt >= this.settleMs || now - this.firstAt >= this.maxHoldMs;
    if (!settled || now - this.shownAt < this.minGapMs) return null;
    let reason = "";
    let most = -1;
    for (const [r, us] of this.byReason) {
      if (us > most) {
        most = us;
        reason = r;
      }
    }
    const notice = stallNotice(this.totalUs, reason);
    this.shownAt = now;
    this.reset();
    return notice;
  }

  /** Forgets pending stalls (a new session). */
  reset(): void {
    this.pending = 0;
    this.totalUs = 0;
    this.byReason.clear();
  }
}
