// A backoff pause that something else can cut short: the session loop sleeps between retries, and a restart (new
// avatar, lost session, page closing) wakes it at once instead of waiting out the backoff (wakeable-sleep.test.ts).

export class WakeableSleep {
  private waker: (() => void) | null = null;

  /** Resolves after `ms`, or sooner on `wake`. One sleeper at a time (a new sleep takes over the wake). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.waker === done) this.waker = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waker = done;
    });
  }

  /** Ends the current sleep now; nothing when none is going on. */
  wake(): void {
    this.waker?.();
  }
}
