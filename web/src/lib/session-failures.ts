// What a failed call means for the page, per call: the session is gone (make a new one), the server is unreachable
// (the connection banner), or a message and where it shows. Pure decisions on describeError's ErrorInfo, kept apart
// from the code that makes the calls so that each rule reads in one place (session-failures.test.ts).
import { sessionLost, UNREACHABLE_MESSAGE, type ErrorInfo } from "./errors";

/** Why the page's session is being replaced: it ended under us ("gone"), the person picked another avatar or voice
 * ("switch"), or nothing to tell (""). */
export type RestartReason = "gone" | "switch" | "";

/** What to do about a failed session call. */
export type FailureAction =
  /** The server no longer has the session for us: make a new one (and say so). */
  | { kind: "new-session" }
  /** The server can't be reached: show the connection banner (the loop retries). */
  | { kind: "offline" }
  /** Show `message` in the banner (#error). `forgetChoice`: fall back to the server's default avatar and voice. */
  | { kind: "error"; message: string; forgetChoice?: boolean }
  /** Show `message` next to the input (#input-error). */
  | { kind: "input-error"; message: string }
  /** Nothing to show (the call was cancelled). */
  | { kind: "none" };

/** WatchSession broke. The loop then watches again (after a backoff unless the action is "new-session"). */
export function watchFailure(info: ErrorInfo): FailureAction {
  if (sessionLost(info)) return { kind: "new-session" };
  if (info.kind === "unreachable") return { kind: "offline" };
  if (info.kind === "rate-limited") return { kind: "error", message: `${info.detail} — retrying…` };
  // A session id the server does not accept: start over.
  if (info.kind === "invalid") return { kind: "new-session" };
  return { kind: "error", message: info.message ? `${info.message} — retrying…` : UNREACHABLE_MESSAGE };
}

/** CreateSession failed; `hasChoice`: the request named an avatar, a voice or a photo. The loop retries. */
export function createFailure(info: ErrorInfo, hasChoice: boolean): FailureAction {
  if (info.kind === "unreachable") return { kind: "offline" };
  // No room on the server now (sessions, video workers): its own sentence; the loop retries with backoff and the
  // session is created once room frees up.
  if (info.kind === "busy") return { kind: "error", message: `${info.message} — retrying…` };
  if (info.kind === "rate-limited") {
    return { kind: "error", message: `The server is busy: ${info.detail} — retrying…` };
  }
  // An avatar, voice or photo this server does not take (any more): say so, and fall back to its defaults.
  if (info.kind === "invalid" && hasChoice) return { kind: "error", message: info.detail, forgetChoice: true };
  return { kind: "error", message: info.message || "Could not start a session — retrying…" };
}

/** Interrupt failed. */
export function interruptFailure(info: ErrorInfo): FailureAction {
  if (sessionLost(info)) return { kind: "new-session" };
  if (info.kind === "unreachable") return { kind: "offline" };
  if (info.kind === "cancelled") return { kind: "none" };
  return { kind: "input-error", message: info.message };
}

/** What a refused or failed Say/Chat does to its turn and the input. */
export interface SendFailure {
  /** Refused: take the turn back out of the transcript (the text stays in the box). */
  withdraw: boolean;
  /** Shown in the turn (when not withdrawn). */
  turnError: string;
  /** Shown next to the input. */
  inputError: string;
  /** The server can't be reached (the connection banner). */
  offline: boolean;
}

/** Say/Chat failed (after the one retry on a new session, when the session was lost). */
export function sendFailure(info: ErrorInfo): SendFailure {
  if (info.kind === "invalid" || info.kind === "rate-limited" || info.kind === "busy") {
    // Refused: the reason shows next to the input (busy: the server's own sentence; Send again once a speaking
    // session finishes).
    const inputError = info.kind === "invalid" ? info.detail : info.message;
    return { withdraw: true, turnError: "", inputError, offline: false };
  }
  if (info.kind === "unreachable") {
    return {
      withdraw: false,
      turnError: "Not sent: can't reach the server.",
      inputError: "Not sent: can't reach the server. Your text is still here.",
      offline: true,
    };
  }
  const turnError = `Not sent: ${info.message || info.detail}`;
  return { withdraw: false, turnError, inputError: turnError, offline: false };
}

/** Why an uploaded photo was not used (the session on screen plays on). */
export function portraitFailure(info: ErrorInfo): string {
  if (info.kind === "invalid") return `Your photo can't be used: ${info.detail}`;
  if (info.kind === "unreachable") return "Can't reach the server — your photo was not sent.";
  if (info.kind === "busy") return `${info.message} (your photo was not used)`;
  return info.message || `Your photo can't be used: ${info.detail}`;
}
