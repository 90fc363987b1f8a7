// The avatar's state (idle, thinking, rendering, speaking) as the person sees it: WatchSession reports a state change
// at a media time, and the page shows it when the picture on screen reaches that time, so "speaking" starts with the
// speech on screen rather than seconds before. Pure (state-clock.test.ts).

export type ServerState = "idle" | "thinking" | "rendering" | "speaking" | "ended";

/** State changes wait for the screen to reach them, at most this long. */
export const STATE_MAX_HOLD_MS = 4000;
/** Without a clock (the video not playing), a state change shows this long after it arrived. */
export const STATE_HOLD_WITHOUT_CLOCK_MS = 1500;

interface PendingState {
  state: ServerState;
  atUs: number;
  receivedAt: number;
}

export class StateClock {
  private shown: ServerState = "idle";
  private pending: PendingState[] = [];

  /** The state the page shows now. */
  get state(): ServerState {
    return this.shown;
  }

  /** A new session: idle, nothing queued. */
  reset(): void {
    this.shown = "idle";
    this.pending = [];
  }

  /** Forgets queued changes (a reconnect: the first event says the current state). */
  dropPending(): void {
    this.pending = [];
  }

  /** A state change at media time `atUs`, received at `now` (ms). `immediate`: the first event of a watch (the current
   * state). */
  receive(state: ServerState, atUs: number, immediate: boolean, now: number): void {
    if (state === "ended") {
      this.shown = "ended";
      this.pending = [];
    } else if (immediate || state === "thinking" || state === "rendering") {
      // The first event (current state), and "thinking" (feedback for the person who just pressed Send), show at
      // once; anything queued before them is history.
      this.pending = [];
      this.shown = state;
    } else {
      this.pending.push({ state, atUs, receivedAt: now });
    }
  }

  /** Shows the queued changes the screen has reached (`onScreenUs`, null: no clock) or that waited long enough.
   * Returns whether the shown state changed. */
  advance(onScreenUs: number | null, now: number): boolean {
    let changed = false;
    while (this.pending.length) {
      const head = this.pending[0];
      const age = now - head.receivedAt;
      const due = onScreenUs !== null ? head.atUs <= onScreenUs : age >= STATE_HOLD_WITHOUT_CLOCK_MS;
      if (!due && age < STATE_MAX_HOLD_MS) break;
      this.pending.shift();
      this.shown = head.state;
      changed = true;
    }
    return changed;
  }
}
