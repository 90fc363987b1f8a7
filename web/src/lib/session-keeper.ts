// Keeps the page's session: creates it (through its SessionSource), watches its events, and replaces it when it
// ends or expires, when the person picks another avatar or voice, or when a photo's session is ready; while the
// server is away it retries with backoff. The rest of the page learns of it through three hooks (adopted, event,
// changed) and never touches the loop. Tested with a fake client (session-keeper.test.ts).
import type { Session, WatchSessionResponse } from "../gen/avatar/v1/session_pb";
import { endSessionQuietly, steering, type SessionClient } from "./api";
import { backoffMs, describeError } from "./errors";
import type { Notices } from "./notices";
import { createFailure, watchFailure, type FailureAction, type RestartReason } from "./session-failures";
import type { SessionSource } from "./session-source";
import { WakeableSleep } from "./wakeable-sleep";

/** A session made for an uploaded photo may take this long (the server prepares the photo first). */
const PORTRAIT_CREATE_TIMEOUT_MS = 60000;
const CREATE_TIMEOUT_MS = 15000;
const CATALOG_TIMEOUT_MS = 10000;

export interface SessionKeeperHooks {
  /** `session` is the page's now (play it, forget the old one's state; the notices already said so); `reason`: why
   * the old one went. */
  adopted(session: Session, reason: RestartReason): void;
  /** An event of the watched session; `first`: the first of a watch, which says the current state. */
  event(event: WatchSessionResponse, first: boolean): void;
  /** Something a snapshot shows changed (the session, whether it is watched, the catalog). */
  changed(): void;
}

/** What the loop does after a watch ended: back off from zero (it had connected), back off more, or go on now. */
type WatchOutcome = "connected-then-lost" | "retry" | "now";

export class SessionKeeper {
  private current: Session | null = null;
  private choice = { avatar: "", voice: "" };
  // The uploaded photo the session animates (kept to re-create the session after it expires); null: a named avatar.
  private portrait: { bytes: Uint8Array; avatar: string } | null = null;
  // What the server offers (GetCatalog), fetched with each new session.
  private offered = { avatars: [] as string[], voices: [] as string[] };
  private restartReason: RestartReason = "";
  private watchAbort: AbortController | null = null;
  private readonly pause = new WakeableSleep();
  private sessionWaiters: Array<() => void> = [];
  private isWatching = false;
  private disposed = false;

  /** `client` for the calls, `endClient` (keepalive) for EndSession, which may outlive the page. */
  constructor(
    private readonly client: SessionClient,
    private readonly endClient: SessionClient,
    private readonly source: SessionSource,
    private readonly notices: Notices,
    private readonly hooks: SessionKeeperHooks,
  ) {}

  get session(): Session | null {
    return this.current;
  }

  /** The session's avatar, or the one asked for while there is none. */
  get avatar(): string {
    return this.current?.avatar ?? this.choice.avatar;
  }

  get voice(): string {
    return this.current?.voice ?? this.choice.voice;
  }

  /** Whether the session's events are coming in (a watch is connected). */
  get watching(): boolean {
    return this.isWatching;
  }

  /** What the server offers (empty until GetCatalog answered: the pickers then show the session's own values). */
  get catalog(): { avatars: string[]; voices: string[] } {
    return this.offered;
  }

  /** Whether `avatar` is the uploaded photo's. */
  isPortrait(avatar: string): boolean {
    return this.portrait?.avatar === avatar;
  }

  /** Runs until `dispose`: makes a session when there is none, watches it, backs off while the server is away. */
  async run(): Promise<void> {
    let attempt = 0;
    while (!this.disposed) {
      if (!this.current) {
        const ok = await this.create();
        if (this.disposed) return;
        if (!ok) {
          await this.pause.sleep(backoffMs(attempt++));
          continue;
        }
        attempt = 0;
      }
      const outcome = await this.watch();
      if (this.disposed) return;
      if (outcome === "connected-then-lost") {
        attempt = 0;
        await this.pause.sleep(backoffMs(attempt++));
      } else if (outcome === "retry") {
        await this.pause.sleep(backoffMs(attempt++));
      }
    }
  }

  /** Stops the loop and ends the session. */
  dispose(): void {
    this.disposed = true;
    this.watchAbort?.abort();
    this.pause.wake();
    this.endCurrent();
  }

  /** Best effort: ends the session so the server frees it now rather than at its idle timeout. */
  endCurrent(): void {
    if (this.current) endSessionQuietly(this.endClient, this.current);
  }

  /** The session, waiting up to `timeoutMs` for one; null if none came. */
  waitForSession(timeoutMs: number): Promise<Session | null> {
    if (this.current) return Promise.resolve(this.current);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(this.current), timeoutMs);
      this.sessionWaiters.push(() => {
        clearTimeout(timer);
        resolve(this.current);
      });
    });
  }

  /** Picks another avatar or voice: a new session with it. */
  choose(avatar: string, voice: string): void {
    if (this.current && avatar === this.current.avatar && voice === this.current.voice) return;
    if (this.portrait && avatar !== this.portrait.avatar) this.portrait = null;
    this.choice = { avatar, voice };
    this.restart("switch");
  }

  /** Makes a session animating the photo `bytes` the page's, in place of the current one, which plays on if this
   * throws (the server refused the photo). Resolves false when the page closed meanwhile. */
  async replaceWithPortrait(bytes: Uint8Array): Promise<boolean> {
    const request = { avatar: "", voice: this.choice.voice, portrait: bytes };
    const session = await this.source.create(request, PORTRAIT_CREATE_TIMEOUT_MS);
    if (this.disposed) {
      endSessionQuietly(this.endClient, session);
      return false;
    }
    const old = this.current;
    this.portrait = { bytes, avatar: session.avatar };
    this.adopt(session, "");
    if (old) endSessionQuietly(this.endClient, old);
    // Watch the new session: the loop is watching the old one.
    this.isWatching = false;
    this.watchAbort?.abort();
    this.pause.wake();
    return true;
  }

  /** The session was lost under a call on `session` (ended, expired): a new one, unless that already happened. */
  lost(session: Session): void {
    if (this.current === session) this.restart("gone");
  }

  /** Acts on a failed call on `session` (null: none yet): a new session, the connection banner, or a message. */
  handleFailure(action: FailureAction, session: Session | null): void {
    switch (action.kind) {
      case "new-session":
        if (session) this.lost(session);
        break;
      case "offline":
        this.notices.setOffline(true);
        break;
      case "error":
        this.notices.setError(action.message);
        if (action.forgetChoice) {
          this.choice = { avatar: "", voice: "" };
          this.portrait = null;
        }
        break;
      case "input-error":
        this.notices.setInputError(action.message);
        break;
      case "none":
        break;
    }
  }

  private async create(): Promise<boolean> {
    const reason = this.restartReason;
    const portrait = this.portrait;
    try {
      const session = await this.source.create(
        { avatar: portrait ? "" : this.choice.avatar, voice: this.choice.voice, portrait: portrait?.bytes },
        portrait ? PORTRAIT_CREATE_TIMEOUT_MS : CREATE_TIMEOUT_MS,
      );
      this.loadCatalog();
      if (this.disposed || this.current) {
        // Disposed, or a photo upload made a session meanwhile.
        endSessionQuietly(this.endClient, session);
        return !this.disposed;
      }
      this.adopt(session, reason);
      return true;
    } catch (err) {
      const hasChoice = Boolean(this.choice.avatar || this.choice.voice || this.portrait);
      this.handleFailure(createFailure(describeError(err), hasChoice), null);
      return false;
    }
  }

  private loadCatalog(): void {
    this.client
      .getCatalog({}, { timeoutMs: CATALOG_TIMEOUT_MS })
      .then((reply) => {
        this.offered = { avatars: reply.avatars.map((a) => a.name), voices: reply.voices.map((v) => v.name) };
        this.hooks.changed();
      })
      .catch(() => undefined); // the pickers keep the session's own values
  }

  /** Makes `session` the page's: its playlist plays, its events are watched next. */
  private adopt(session: Session, reason: RestartReason): void {
    this.current = session;
    this.choice = { avatar: session.avatar, voice: session.voice };
    this.restartReason = "";
    const isPortrait = this.isPortrait(session.avatar);
    this.notices.sessionStarted(reason, { avatar: session.avatar, voice: session.voice, isPortrait });
    this.hooks.adopted(session, reason);
    for (const resolve of this.sessionWaiters.splice(0)) resolve();
  }

  /** Watches the session until the stream breaks; says what to do next. */
  private async watch(): Promise<WatchOutcome> {
    const session = this.current;
    if (!session) return "now";
    const abort = new AbortController();
    this.watchAbort = abort;
    let connected = false;
    try {
      const stream = this.client.watchSession(
        { sessionId: session.sessionId },
        { signal: abort.signal, ...steering(session) },
      );
      for await (const event of stream) {
        const first = !connected;
        if (first) {
          connected = true;
          this.isWatching = true;
          this.notices.setOffline(false);
          if (this.notices.pageError) this.notices.setError("");
        }
        this.hooks.event(event, first);
      }
      // The stream finished cleanly: the session ended (or a proxy closed it). Watch again to find out which.
      this.isWatching = false;
      this.hooks.changed();
      return connected ? "now" : "retry";
    } catch (err) {
      this.isWatching = false;
      if (abort.signal.aborted || this.disposed) {
        this.hooks.changed();
        return "now";
      }
      const action = watchFailure(describeError(err));
      this.handleFailure(action, session);
      if (action.kind === "new-session") return "now";
      this.hooks.changed();
      return connected ? "connected-then-lost" : "retry";
    } finally {
      if (this.watchAbort === abort) this.watchAbort = null;
    }
  }

  private restart(reason: RestartReason): void {
    const old = this.current;
    this.current = null;
    this.isWatching = false;
    this.restartReason = reason;
    if (old && reason === "switch") endSessionQuietly(this.endClient, old);
    this.watchAbort?.abort();
    this.pause.wake();
    this.hooks.changed();
  }
}
