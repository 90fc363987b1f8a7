// What a failed call means for the page: a message a person understands, and what to do next.
import { Code, ConnectError } from "@connectrpc/connect";

export type ErrorKind =
  | "unreachable" // gateway or session service down: retry with backoff
  | "session-gone" // NOT_FOUND: the session ended or expired: create a new one
  | "invalid" // INVALID_ARGUMENT: show the server's message next to the input
  | "rate-limited" // RESOURCE_EXHAUSTED
  | "cancelled"
  | "other";

export interface ErrorInfo {
  kind: ErrorKind;
  code: Code;
  /** The server's message (grpc-message), or the transport's. */
  detail: string;
  /** What to show to a person. */
  message: string;
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
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return { kind: "invalid", code: err.code, detail, message: detail };
    case Code.ResourceExhausted:
      return {
        kind: "rate-limited",
        code: err.code,
        detail,
        message: `Slow down: ${detail || "too many requests"}`,
      };
    case Code.Canceled:
      return { kind: "cancelled", code: err.code, detail, message: "" };
    default:
      return { kind: "other", code: err.code, detail, message: detail || String(error) };
  }
}

/** Exponential backoff: 0.5 s, 1 s, 2 s, 4 s, then 5 s, with a little jitter. */
export function backoffMs(attempt: number, baseMs = 500, maxMs = 5000): number {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(raw * (0.85 + Math.random() * 0.15));
}
