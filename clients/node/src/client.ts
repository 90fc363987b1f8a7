// The common path in a few calls: connect (with the API key), create a session, say / chat / interrupt / end, and
// follow its events. The generated client stays reachable (`LiveClient.rpc`) for anything this does not cover.
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type CallOptions, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  Pacing,
  SessionSchema,
  SessionService,
  type GetCatalogResponse,
  type Session,
} from "./gen/avatar/v1/session_pb.js";
import { api, ApiError } from "./errors.js";
import { toEvent, type SessionEvent } from "./events.js";

export type TransportKind = "grpc" | "grpc-web";

export interface ConnectOptions {
  /** "grpc": the session service itself, e.g. "http://127.0.0.1:50051" (HTTP/2). "grpc-web": the gateway, e.g.
   * "http://127.0.0.1:8080", which also serves the playlists. */
  baseUrl: string;
  transport?: TransportKind;
  /** Sent as `authorization: Bearer <apiKey>` on CreateSession only, when the server has SESSION_API_KEYS. It never
   * leaves this process otherwise: a session is steered with its own control token. */
  apiKey?: string;
  /** Deadline for each unary call (default 30 s; WatchSession has none). */
  timeoutMs?: number;
}

export interface CreateSessionOptions {
  avatar?: string;
  voice?: string;
  /** A JPEG, PNG or WebP photo (at most 8 MiB) to animate instead of a named avatar. */
  portrait?: Uint8Array;
  /** "offline": as fast as the pipeline goes (rendering to a file; needs the key's `pacing` grant). */
  pacing?: "realtime" | "offline";
  persona?: string;
  llmProvider?: string;
  llmModel?: string;
}

/** What a backend hands its browser: enough to steer and watch one session, nothing more. */
export interface SessionGrant {
  sessionId: string;
  controlToken: string;
  playlistUrl: string;
  /** ISO 8601 wall-clock time of media time 0: lets a player show words (WordSpoken.start_us) with the picture. */
  mediaEpoch?: string;
}

export function connect(options: ConnectOptions): LiveClient {
  return new LiveClient(options);
}

export class LiveClient {
  /** The generated avatar.v1.SessionService client (errors are ConnectErrors there). */
  readonly rpc: Client<typeof SessionService>;
  readonly kind: TransportKind;
  private readonly baseUrl: string;
  private readonly apiKey: string;
  private readonly timeoutMs: number;
  private readonly http2: Http2SessionManager | null;

  constructor(options: ConnectOptions) {
    this.kind = options.transport ?? "grpc";
    this.baseUrl = options.baseUrl;
    this.apiKey = options.apiKey ?? "";
    this.timeoutMs = options.timeoutMs ?? 30_000;
    let transport: Transport;
    if (this.kind === "grpc") {
      // Our own session manager: one HTTP/2 connection for every call, which close() can end.
      this.http2 = new Http2SessionManager(options.baseUrl);
      transport = createGrpcTransport({ baseUrl: options.baseUrl, sessionManager: this.http2 });
    } else if (this.kind === "grpc-web") {
      this.http2 = null;
      // Binary gRPC-Web over HTTP/1.1, as browsers reach the gateway.
      transport = createGrpcWebTransport({ baseUrl: options.baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    } else {
      throw new TypeError(`transport must be "grpc" or "grpc-web", not ${JSON.stringify(options.transport)}`);
    }
    this.rpc = createClient(SessionService, transport);
  }

  /** Creates a session with the API key; the handle steers it with the session's own control token. */
  async createSession(options: CreateSessionOptions = {}): Promise<SessionHandle> {
    const headers: Record<string, string> = this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {};
    const reply = await api(() =>
      this.rpc.createSession(
        {
          avatar: options.avatar ?? "",
          voice: options.voice ?? "",
          portrait: options.portrait ?? new Uint8Array(),
          options: {
            pacing: options.pacing === "offline" ? Pacing.OFFLINE : Pacing.REALTIME,
            persona: options.persona ?? "",
            llmProvider: options.llmProvider ?? "",
            llmModel: options.llmModel ?? "",
          },
        },
        // A portrait is decoded and prepared before the reply: give it the gateway's own limit.
        { headers, timeoutMs: options.portrait ? Math.max(this.timeoutMs, 60_000) : this.timeoutMs },
      ),
    );
    if (!reply.session) throw new Error("CreateSession returned no session");
    return new SessionHandle(this, reply.session);
  }

  /** A handle on a session created elsewhere, from its id and control token (e.g. what a backend stored). */
  attach(grant: Pick<SessionGrant, "sessionId" | "controlToken"> & { playlistUrl?: string }): SessionHandle {
    const { sessionId, controlToken, playlistUrl = "" } = grant;
    return new SessionHandle(this, create(SessionSchema, { sessionId, controlToken, playlistUrl }));
  }

  /** The avatars and voices on offer (no credential needed). */
  catalog(): Promise<GetCatalogResponse> {
    return api(() => this.rpc.getCatalog({}, { timeoutMs: this.timeoutMs }));
  }

  /** Closes the HTTP/2 connection (gRPC) and any stream on it. */
  close(): void {
    this.http2?.abort();
  }

  /** The playlist's absolute URL: the server's, or the path resolved against the gateway (gRPC-Web). */
  playlistUrlOf(session: Session): string {
    if (session.playlistUrl) return session.playlistUrl;
    if (session.playlistPath && this.kind === "grpc-web") return new URL(session.playlistPath, this.baseUrl).href;
    return "";
  }

  /** @internal */
  callOptions(controlToken: string, extra: CallOptions = {}): CallOptions {
    return { timeoutMs: this.timeoutMs, ...extra, headers: { authorization: `Bearer ${controlToken}` } };
  }
}

export class SessionHandle {
  /** The session as CreateSession returned it (avatar, voice, size, media epoch, expiry...). */
  readonly session: Session;
  readonly sessionId: string;
  /** The session's secret: Say, Chat, Interrupt, EndSession and WatchSession carry it. Hand it to the browser
   * this session is for, never the API key. */
  readonly controlToken: string;
  /** View-only: lets one watch the video, nothing else. */
  readonly playlistUrl: string;

  constructor(
    private readonly client: LiveClient,
    session: Session,
  ) {
    this.session = session;
    this.sessionId = session.sessionId;
    this.controlToken = session.controlToken;
    this.playlistUrl = client.playlistUrlOf(session);
  }

  /** What a backend hands its browser: the id, the control token, the playlist URL (and the media epoch); never
   * the API key, which this object does not hold. */
  grant(): SessionGrant {
    const { sessionId, controlToken, playlistUrl } = this;
    const epoch = this.session.mediaEpoch;
    if (!epoch) return { sessionId, controlToken, playlistUrl };
    return { sessionId, controlToken, playlistUrl, mediaEpoch: timestampDate(epoch).toISOString() };
  }

  /** Speaks `text` verbatim, cutting any utterance in progress; resolves to the utterance id. */
  async say(text: string): Promise<string> {
    const reply = await api(() => this.client.rpc.say({ sessionId: this.sessionId, text }, this.options()));
    return reply.utteranceId;
  }

  /** Answers `text` through the LLM; resolves to the utterance id. */
  async chat(text: string): Promise<string> {
    const reply = await api(() => this.client.rpc.chat({ sessionId: this.sessionId, text }, this.options()));
    return reply.utteranceId;
  }

  /** Cuts the utterance in progress (utteranceId "" when there was none) at media time cutAtUs. */
  async interrupt(): Promise<{ utteranceId: string; cutAtUs: number }> {
    const reply = await api(() => this.client.rpc.interrupt({ sessionId: this.sessionId }, this.options()));
    return { utteranceId: reply.utteranceId, cutAtUs: Number(reply.cutAtUs) };
  }

  /** Ends the session; its playlist gets EXT-X-ENDLIST and the control token dies. */
  async end(): Promise<void> {
    await api(() => this.client.rpc.endSession({ sessionId: this.sessionId }, this.options()));
  }

  /** The session's events from now on, starting with its current state; ends when the session does. Stop early
   * with `break` or the signal. Errors are thrown as ApiError. */
  async *watch(options: { signal?: AbortSignal } = {}): AsyncGenerator<SessionEvent, void, undefined> {
    const abort = new AbortController();
    const stop = () => abort.abort();
    options.signal?.addEventListener("abort", stop);
    try {
      const stream = this.client.rpc.watchSession(
        { sessionId: this.sessionId },
        // No deadline: a watch lasts as long as the session (heartbeats every 15 s keep it alive).
        this.client.callOptions(this.controlToken, { signal: abort.signal, timeoutMs: undefined }),
      );
      for await (const raw of stream) yield toEvent(raw);
    } catch (error) {
      throw ApiError.from(error);
    } finally {
      options.signal?.removeEventListener("abort", stop);
      abort.abort(); // a consumer that stopped early: close the stream
    }
  }

  private options(): CallOptions {
    return this.client.callOptions(this.controlToken);
  }
}
