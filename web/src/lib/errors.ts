// What a failed call means for the page: a message a person understands, and what to do next.
import { Code, ConnectError } from "@connectrpc/connect";
import { QuotaFailureSchema } from "../gen/google/rpc/error_details_pb";

export type ErrorKind =
  | "unreachable" // gateway or session service down: retry with backoff
  | "session-gone" // NOT_FOUND: the session ended or expired: create a new one
  | "denied" // UNAUTHENTICATED / PERMISSION_DENIED: no API key for CreateSession, or a control token the server no
  //            longer knows for this session (e.g. it restarted): for a session call, create a new session
  | "invalid" // INVALID_ARGUMENT: show the server's message next to the input
  | "rate-limited" // RESOURCE_EXHAUSTED for this session or watcher: too many requests or watchers; slow down
  | "busy" // RESOURCE_EXHAUSTED for the server: no room for a session, or for one more speaking avatar; try later
  | "cancelled"
  | "other";

export interface ErrorInfo {
  kind: ErrorKind;
  code: Code;
  /** The server's message (grpc-message), or the transport's. */
  detail: string;
  /** What to show to a person. */
  message: string;
  /** RESOURCE_EXHAUSTED: the google.rpc.QuotaFailure violation's subject ("session:<id>", "sessions",
   * "video.workers", "video.speaking", ...); "" when there is none. */
  quotaSubject?: string;
}

export const UNREACHABLE_MESSAGE = "Can't reach the server — retrying…";

export function describeError(error: unknown): ErrorInfo {
  const err = ConnectError.from(error);
  const detail = err.rawMessage || err.message;
  switch (err.code) {
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Internal:
    case Code.Unimplemented: // gateway up, route or upstream missing
      return { kind: "unreachable", code: err.code, detail, message: UNREACHABLE_MESSAGE };
    case Code.Unknown:
      // fetch() failing (gateway down, network gone) surfaces as Unknown/"Failed to fetch"; an HTTP error page
      // from a proxy as Unknown too.
      return { kind: "unreachable", code: err.code, detail, message: UNREACHABLE_MESSAGE };
    case Code.NotFound:
      return { kind: "session-gone", code: err.code, detail, message: "The session ended — starting a new one…" };
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return { kind: "denied", code: err.code, detail, message: detail };
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return { kind: "invalid", code: err.code, detail, message: detail };
    case Code.ResourceExhausted: {
      const quotaSubject = quotaSubjectOf(err);
      if (isBusyRefusal(quotaSubject, detail)) {
        return { kind: "busy", code: err.code, detail, message: busyMessage(detail), quotaSubject };
      }
      return {
        kind: "rate-limited",
        code: err.code,
        detail,
        message: `Slow down: ${detail || "too many requests"}`,
        quotaSubject,
      };
    }
    case Code.Canceled:
      return { kind: "cancelled", code: err.code, detail, message: "" };
    default:
      return { kind: "other", code: err.code, detail, message: detail || String(error) };
  }
}

/** The subject of the first google.rpc.QuotaFailure violation the error carries (grpc-status-details-bin, which
 * gRPC-Web passes on: in the trailers, or in the headers of a trailers-only response); "" when there is none. */
export function quotaSubjectOf(err: ConnectError): string {
  try {
    for (const failure of err.findDetails(QuotaFailureSchema)) {
      for (const violation of failure.violations) {
        if (violation.subject) return violation.subject;
      }
    }
  } catch {
    // undecodable details: fall back to the message
  }
  return "";
}

/** Whether a RESOURCE_EXHAUSTED refusal is the server at capacity (try again later) rather than this session's own
 * rate or watcher limit (slow down). By the QuotaFailure subject when there is one: per-session limits are
 * "session:<id>" (requests, watchers) and "watcher" (fell behind); anything else is a shared resource ("sessions",
 * "video.workers", "video.speaking", "portraits"). Without one, by the server's sentence. */
export function isBusyRefusal(quotaSubject: string, message: string): boolean {
  if (quotaSubject) return !(quotaSubject.startsWith("session:") || quotaSubject === "watcher");
  if (/too many (requests|watchers)|per second|fell too far behind/i.test(message)) return false;
  return /capacity|as many as it can|no room|server is full|at once/i.test(message);
}

/** A busy refusal as the server put it (its own sentence, first letter capitalised). */
export function busyMessage(detail: string): string {
  const sentence = detail.trim();
  if (!sentence) return "The server is busy; try again in a moment.";
  return sentence[0].toUpperCase() + sentence.slice(1);
}

/** Exponential backoff: 0.5 s, 1 s, 2 s, 4 s, then 5 s, with a little jitter. */
export function backoffMs(attempt: number, baseMs = 500, maxMs = 5000): number {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(raw * (0.85 + Math.random() * 0.15));
}

/** For a call on the page's own session: the server no longer has it for us (ended, expired, or unknown with our
 * control token): start a new one. */
export function sessionLost(info: ErrorInfo): boolean {
  return info.kind === "session-gone" || info.kind === "denied";
}
