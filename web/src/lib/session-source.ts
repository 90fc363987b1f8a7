// Where the page's session comes from. Standalone, the page calls CreateSession itself through the gateway (a
// server without API keys). Embedded, an app's backend holds the API key and creates the session for its user: the
// page asks that backend (`?backend=<url>`, or NEXT_PUBLIC_SESSION_BACKEND at build time) and gets only the session
// id, its control token and the view-only playlist URL; every later call (Say, Watch, Interrupt, End) goes to the
// gateway with that token, exactly as in standalone mode.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { SessionSchema, type Session } from "../gen/avatar/v1/session_pb";

export interface SessionRequest {
  avatar: string;
  voice: string;
  /** A photo to animate (standalone only: an embedding backend decides what its users may create). */
  portrait?: Uint8Array;
}

export interface SessionSource {
  /** "backend" when an app's backend hands out the sessions (embedded mode). */
  readonly kind: "gateway" | "backend";
  /** A new session; failures are ConnectErrors, as from the API itself (describeError reads them). */
  create(request: SessionRequest, timeoutMs: number): Promise<Session>;
}

/** The embedding backend's URL from the page's query (`?backend=`) or the build's setting; null: standalone. */
export function backendUrlFrom(search: string, built: string | undefined): string | null {
  const fromQuery = new URLSearchParams(search).get("backend");
  const url = (fromQuery ?? built ?? "").trim();
  if (!url) return null;
  const parsed = new URL(url, "http://placeholder.invalid");
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new Error(`backend URL ${url} is not http(s)`);
  return url.replace(/\/+$/, "");
}

/** The JSON an embedding backend answers POST /api/session with: exactly what the page needs, no API key. */
export interface SessionGrant {
  sessionId: string;
  controlToken: string;
  playlistUrl: string;
  /** ISO 8601 time of media time 0 (optional: without it, words show as they arrive instead of with the picture). */
  mediaEpoch?: string;
  avatar?: string;
  voice?: string;
}

/** A grant as the page's Session (the fields the page uses); avatar and voice default to what was asked for. */
export function sessionFromGrant(grant: unknown, asked: SessionRequest = { avatar: "", voice: "" }): Session {
  const g = (grant ?? {}) as Partial<Record<keyof SessionGrant, unknown>>;
  for (const field of ["sessionId", "controlToken", "playlistUrl"] as const) {
    if (typeof g[field] !== "string" || !g[field]) {
      throw new ConnectError(`the backend's session has no ${field}`, Code.Internal);
    }
  }
  const epochMs = typeof g.mediaEpoch === "string" ? Date.parse(g.mediaEpoch) : NaN;
  return create(SessionSchema, {
    sessionId: g.sessionId as string,
    controlToken: g.controlToken as string,
    playlistUrl: g.playlistUrl as string,
    avatar: typeof g.avatar === "string" ? g.avatar : asked.avatar,
    voice: typeof g.voice === "string" ? g.voice : asked.voice,
    mediaEpoch: Number.isFinite(epochMs) ? timestampFromMs(epochMs) : undefined,
  });
}

/** An HTTP status from the backend as the gRPC code the page's error handling understands. */
export function codeForStatus(status: number): Code {
  if (status === 400 || status === 422) return Code.InvalidArgument;
  if (status === 401) return Code.Unauthenticated;
  if (status === 403) return Code.PermissionDenied;
  if (status === 404) return Code.Unimplemented; // no such endpoint: a misconfigured backend URL
  if (status === 429) return Code.ResourceExhausted;
  if (status === 503 || status === 502 || status === 504) return Code.Unavailable;
  return Code.Internal;
}

export class BackendSessionSource implements SessionSource {
  readonly kind = "backend";

  constructor(
    private readonly backendUrl: string,
    private readonly fetchFn: typeof fetch = (input, init) => globalThis.fetch(input, init),
  ) {}

  async create(request: SessionRequest, timeoutMs: number): Promise<Session> {
    if (request.portrait) {
      const sentence = "this page's sessions come from its app, which does not take photos";
      throw new ConnectError(sentence, Code.FailedPrecondition);
    }
    let response: Response;
    try {
      response = await this.fetchFn(`${this.backendUrl}/api/session`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ avatar: request.avatar, voice: request.voice }),
        // The backend knows its user by its own cookie (same site) or header; nothing of the page's is sent.
        credentials: "include",
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      throw new ConnectError(`can't reach the app's backend: ${String(error)}`, Code.Unavailable);
    }
    const body: unknown = await response.json().catch(() => null);
    if (!response.ok) {
      // The backend's error: {"code": "RESOURCE_EXHAUSTED", "message": "..."} (the API's own, passed on) or plain.
      const e = (body ?? {}) as { code?: unknown; message?: unknown };
      const named = typeof e.code === "string" ? codeFromName(e.code) : undefined;
      const message = typeof e.message === "string" ? e.message : `the app's backend answered ${response.status}`;
      throw new ConnectError(message, named ?? codeForStatus(response.status));
    }
    return sessionFromGrant(body, request);
  }
}

/** "RESOURCE_EXHAUSTED" → Code.ResourceExhausted. */
function codeFromName(name: string): Code | undefined {
  const camel = name.toLowerCase().replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase());
  const code = (Code as unknown as Record<string, Code>)[camel];
  return typeof code === "number" ? code : undefined;
}

/** The page's source: embedded when the page names a backend (`search`'s `?backend=<url>`, or `built`, the build's
 * NEXT_PUBLIC_SESSION_BACKEND), standalone (`gateway()`) otherwise. A backend URL that is not http(s) gives a source
 * that refuses every session with the reason (INVALID_ARGUMENT, shown in the banner). */
export function pageSessionSource(
  search: string,
  built: string | undefined,
  gateway: () => SessionSource,
): SessionSource {
  let backend: string | null;
  try {
    backend = backendUrlFrom(search, built);
  } catch (error) {
    const refusal = new ConnectError(String(error instanceof Error ? error.message : error), Code.InvalidArgument);
    return { kind: "backend", create: () => Promise.reject(refusal) };
  }
  return backend ? new BackendSessionSource(backend) : gateway();
}
