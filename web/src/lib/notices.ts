// The page's messages to the person, in one place: the banner error (#error: a failure, or the server unreachable),
// a server-reported session error that clears itself, the fading notice (#notice: something handled), the reason
// next to the input (#input-error), and the last of them for the test hook. Kept apart from the session logic so that
// which message wins and how long each lasts are decided once (notices.test.ts).
import { UNREACHABLE_MESSAGE } from "./errors";
import type { RestartReason } from "./session-failures";
import { StallThrottle, type Stall } from "./stalls";

/** A notice fades after this long. */
export const NOTICE_MS = 7000;
/** A session error reported by the server (WatchSession `error`) shows this long unless speech resumes sooner. */
export const SESSION_ERROR_MS = 10000;

export class Notices {
  private unreachable = false;
  private error = "";
  private sessionError = "";
  private sessionErrorAt = 0;
  private notice = "";
  private noticeAt = 0;
  private inputError = "";
  private last: string | null = null;
  // StreamStalled events: merged into one notice per episode, at most one every few seconds.
  private readonly stalls = new StallThrottle();

  /** `onChange`: a message changed (the page publishes a new snapshot); `now`: a monotonic clock in ms. */
  constructor(
    private readonly onChange: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Whether the server is unreachable (the page shows the connection banner and the "error" state). */
  get offline(): boolean {
    return this.unreachable;
  }

  /** The page's own error (not the server's session error): a session could not be made, a photo was refused. */
  get pageError(): string {
    return this.error;
  }

  /** What #error shows: the connection first, then the page's error, then the server's session error. */
  get bannerError(): string {
    return this.unreachable ? UNREACHABLE_MESSAGE : this.error || this.sessionError;
  }

  get currentNotice(): string {
    return this.notice;
  }

  get currentInputError(): string {
    return this.inputError;
  }

  /** The last failure shown anywhere (the test hook's lastError); null until there is one. */
  get lastError(): string | null {
    return this.last;
  }

  setOffline(down: boolean): void {
    if (down === this.unreachable) return;
    this.unreachable = down;
    if (down) this.last = UNREACHABLE_MESSAGE;
    this.onChange();
  }

  setError(message: string): void {
    this.error = message;
    if (message) this.last = message;
    this.onChange();
  }

  /** An error event from the server for this session (shown until speech resumes or SESSION_ERROR_MS pass). */
  setSessionError(message: string): void {
    this.sessionError = message;
    this.sessionErrorAt = this.now();
    this.last = message;
    this.onChange();
  }

  /** Speech started again: the server's session error is over. */
  clearSessionError(): void {
    if (!this.sessionError) return;
    this.sessionError = "";
    this.onChange();
  }

  setNotice(message: string): void {
    this.notice = message;
    this.noticeAt = this.now();
    this.onChange();
  }

  setInputError(message: string): void {
    this.inputError = message;
    if (message) this.last = message;
    this.onChange();
  }

  clearInputError(): void {
    if (this.inputError) this.setInputError("");
  }

  /** A StreamStalled event; its notice shows from `tick` once the episode settles. */
  addStall(stall: Stall): void {
    this.stalls.add(stall, this.now());
  }

  /** A new session is the page's: the old one's troubles are over; `reason` says why it changed (or "" for none). */
  sessionStarted(reason: RestartReason, what: { avatar: string; voice: string; isPortrait: boolean }): void {
    this.stalls.reset();
    this.setOffline(false);
    this.error = "";
    const notice = newSessionNotice(reason, what);
    if (notice) this.setNotice(notice);
    else this.onChange();
  }

  /** On the page's clock: shows a settled stall episode, fades the notice, ends the server's session error. */
  tick(): void {
    const now = this.now();
    const stallNotice = this.stalls.poll(now);
    if (stallNotice) this.setNotice(stallNotice);
    if (this.notice && now - this.noticeAt > NOTICE_MS) {
      this.notice = "";
      this.onChange();
    }
    if (this.sessionError && now - this.sessionErrorAt > SESSION_ERROR_MS) this.clearSessionError();
  }
}

/** The notice for a new session: why the old one went, and what the new one shows; "" when nothing to say. */
export function newSessionNotice(
  reason: RestartReason,
  { avatar, voice, isPortrait }: { avatar: string; voice: string; isPortrait: boolean },
): string {
  if (reason === "gone") return "The session ended — started a new one.";
  if (reason === "switch") return `Now: ${isPortrait ? "your photo" : `avatar “${avatar}”`}, voice “${voice}”.`;
  return "";
}
