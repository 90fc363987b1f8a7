// The page's brain, outside React: owns the session (create, watch, re-create), the player, the transcript and
// the error/recovery logic, and publishes immutable snapshots for the UI (useSyncExternalStore).
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  FinishReason,
  SessionState,
  type Session,
  type WatchSessionResponse,
} from "@/gen/avatar/v1/session_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import { createSessionClient, gatewaySessionSource, steering, type SessionClient } from "./api";
import { backoffMs, describeError, sessionLost, UNREACHABLE_MESSAGE, type ErrorInfo } from "./errors";
import { lowLatencyFromSearch } from "./playback";
import { Player, type PlaybackInfo, type PlayerStatus } from "./player";
import { BackendSessionSource, backendUrlFrom, type SessionSource } from "./session-source";
import { StallThrottle } from "./stalls";
import { addWord, newTurn, revealWords, shownWords, type Finish, type Mode, type Turn } from "./transcript";

export const MAX_TEXT_CHARS = 5000;
/** The server's limit for an uploaded portrait (CreateSession.portrait). */
export const MAX_PORTRAIT_BYTES = 8 * 1024 * 1024;
export const PORTRAIT_TYPES = ["image/jpeg", "image/png", "image/webp"];

export type UiState = "connecting" | "idle" | "thinking" | "rendering" | "speaking" | "error";

export interface LatencyReadout {
  firstSpeechMs: number | null;
  server: Turn["server"];
}

export interface Snapshot {
  state: UiState;
  sessionId: string;
  avatar: string;
  voice: string;
  avatarOptions: string[];
  voiceOptions: string[];
  turns: Turn[];
  /** A failure the person should know about (#error); empty when all is well. */
  error: string;
  /** Something that happened and was handled, e.g. a new session (#notice); fades. */
  notice: string;
  /** Why the last text was refused (shown next to the input). */
  inputError: string;
  sending: boolean;
  /** A photo is being uploaded and prepared. */
  uploading: boolean;
  playerStatus: PlayerStatus;
  /** How far the picture on screen is behind real time, in ms (media epoch + on-screen media time vs now). */
  behindLiveMs: number | null;
  /** What the player aims for, in ms (LL-HLS: the playlist's PART-HOLD-BACK); null while unknown. */
  targetLatencyMs: number | null;
  /** LL-HLS (parts) or the plain segments (`?ll=0`). */
  lowLatency: boolean;
  latency: LatencyReadout | null;
}

/** Test hook: window.__avatar. */
export interface AvatarTestHook {
  sessionId: string;
  avatar: string;
  state: UiState;
  words: string[];
  /** Each shown word's media start (µs), in the order of `words`. */
  wordStartsUs: number[];
  /** The session's control token (the page's own credential; for the benchmark's WatchSession and cleanup). */
  controlToken: string;
  lastError: string | null;
  mediaTimeUs: number | null;
  playlistUrl: string;
  latencies: number[];
  /** The player: LL mode, hls.js latency and target, stall/rebuffer/reload counts. */
  playback: PlaybackInfo;
  /** How far the picture on screen is behind real time (ms), as the page shows it. */
  behindLiveMs: number | null;
}

declare global {
  interface Window {
    __avatar?: AvatarTestHook;
  }
}

const STATE_NAMES: Record<number, "idle" | "thinking" | "rendering" | "speaking" | "ended"> = {
  [SessionState.IDLE]: "idle",
  [SessionState.THINKING]: "thinking",
  [SessionState.RENDERING]: "rendering",
  [SessionState.SPEAKING]: "speaking",
  [SessionState.ENDED]: "ended",
};

const FINISH_NAMES: Record<number, Finish> = {
  [FinishReason.COMPLETED]: "completed",
  [FinishReason.INTERRUPTED]: "interrupted",
  [FinishReason.FAILED]: "failed",
};

/** State changes wait for the screen to reach them, at most this long. */
const STATE_MAX_HOLD_MS = 4000;
/** Events of an utterance whose Say/Chat reply has not come back yet wait this long for it. */
const ORPHAN_WAIT_MS = 2000;
const NOTICE_MS = 7000;
/** The first segment (960 ms of media) is on the playlist a little before media time 960 ms. */
const FIRST_SEGMENT_DELAY_MS = 950;
const SESSION_ERROR_MS = 10000;

interface PendingState {
  state: "idle" | "thinking" | "rendering" | "speaking" | "ended";
  atUs: number;
  receivedAt: number;
}

type RestartReason = "gone" | "switch" | "";

function unique(values: string[]): string[] {
  return [...new Set(values.filter(Boolean))];
}

export function charCount(text: string): number {
  // The server counts code points (Python len), not UTF-16 units.
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** Embedded mode when the page names a backend (`?backend=<url>`, or NEXT_PUBLIC_SESSION_BACKEND at build time);
 * standalone otherwise. */
function defaultSessionSource(client: SessionClient): SessionSource {
  let backend: string | null;
  try {
    backend = backendUrlFrom(window.location.search, process.env.NEXT_PUBLIC_SESSION_BACKEND);
  } catch (error) {
    const refusal = new ConnectError(String(error instanceof Error ? error.message : error), Code.InvalidArgument);
    return { kind: "backend", create: () => Promise.reject(refusal) };
  }
  return backend ? new BackendSessionSource(backend) : gatewaySessionSource(client);
}

export class Controller {
  private readonly client: SessionClient;
  private readonly endClient: SessionClient;
  // Who creates the page's sessions: the gateway (standalone) or the app's backend (embedded, `?backend=`).
  private readonly source: SessionSource;
  private readonly player: Player;
  private readonly listeners = new Set<() => void>();
  private snapshot: Snapshot;

  private disposed = false;
  private session: Session | null = null;
  private epochMs = 0;
  private playlistUrl = "";
  private choice = { avatar: "", voice: "" };
  // The uploaded photo the session animates (kept to re-create the session after it expires); null: a named avatar.
  private portrait: { bytes: Uint8Array; avatar: string } | null = null;
  private uploading = false;
  // What the server offers (GetCatalog), fetched with each new session.
  private catalog = { avatars: [] as string[], voices: [] as string[] };
  private restartReason: RestartReason = "";
  private watchAbort: AbortController | null = null;
  private wakeLoop: (() => void) | null = null;
  private sessionWaiters: Array<() => void> = [];

  private watching = false;
  private unreachable = false;
  private serverState: PendingState["state"] = "idle";
  private pendingStates: PendingState[] = [];
  private turns: Turn[] = [];
  private inflight = 0;
  private orphans = new Map<string, { at: number; events: WatchSessionResponse[] }>();

  private error = "";
  private sessionError = "";
  private sessionErrorAt = 0;
  private notice = "";
  private noticeAt = 0;
  // StreamStalled events: merged into one notice per episode, at most one every few seconds.
  private readonly stalls = new StallThrottle();
  private inputError = "";
  private lastError: string | null = null;
  private playerStatus: PlayerStatus = "idle";
  private onScreenUs: number | null = null;
  private behindLiveMs: number | null = null;
  private targetLatencyMs: number | null = null;
  private readonly lowLatency: boolean;
  private lastBehindEmit = 0;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private dirty = false;

  constructor(video: HTMLVideoElement, baseUrl: string = window.location.origin, source?: SessionSource) {
    this.client = createSessionClient(baseUrl);
    // EndSession on page exit must outlive the page: keepalive fetch.
    this.endClient = createSessionClient(baseUrl, true);
    this.source = source ?? defaultSessionSource(this.client);
    // `?ll=0` plays the plain segments instead of LL-HLS (for comparison; read once, not in the UI).
    this.lowLatency = lowLatencyFromSearch(window.location.search);
    this.player = new Player(
      video,
      {
        onStatus: (status) => {
          this.playerStatus = status;
          this.changed();
        },
      },
      { lowLatency: this.lowLatency },
    );
    this.snapshot = this.buildSnapshot();
    this.publishHook();
  }

  // -- public API ---------------------------------------------------------------------------------------------

  start(): void {
    this.ticker = setInterval(() => this.tick(), 40);
    void this.loop();
  }

  dispose(): void {
    this.disposed = true;
    if (this.ticker) clearInterval(this.ticker);
    this.watchAbort?.abort();
    this.wakeLoop?.();
    this.player.destroy();
    this.endCurrentSession();
  }

  /** Best effort: ends the session so the server frees it now rather than at its idle timeout. */
  endCurrentSession(): void {
    const session = this.session;
    if (!session) return;
    this.endClient.endSession({ sessionId: session.sessionId }, steering(session)).catch(() => undefined);
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): Snapshot => this.snapshot;

  /** Sends text; resolves true when the server accepted it (the input can be cleared). */
  async send(rawText: string, mode: Mode): Promise<boolean> {
    const text = rawText.trim();
    if (!text) {
      this.setInputError("Type something for the avatar to say.");
      return false;
    }
    // Over MAX_TEXT_CHARS the page warns (counter) but lets the server decide: its INVALID_ARGUMENT message, which
    // names the limit it enforces, shows next to the input.
    this.setInputError("");
    const turn = newTurn({ mode, userText: text, sentAt: performance.now() });
    this.turns.push(turn);
    this.inflight++;
    this.changed();
    try {
      for (let tries = 0; ; tries++) {
        const session = this.session ?? (await this.waitForSession(8000));
        if (!session) {
          turn.error = "Not sent: not connected to the server yet.";
          this.setInputError("Not connected yet — try again in a moment.");
          return false;
        }
        try {
          const request = { sessionId: session.sessionId, text };
          const reply =
            mode === "chat"
              ? await this.client.chat(request, { timeoutMs: 15000, ...steering(session) })
              : await this.client.say(request, { timeoutMs: 15000, ...steering(session) });
          turn.utteranceId = reply.utteranceId;
          this.adoptOrphans(turn);
          return true;
        } catch (err) {
          const info = describeError(err);
          if (sessionLost(info) && tries === 0) {
            // The session expired under us: make a new one and send again, once.
            if (this.session === session) this.restart("gone");
            continue;
          }
          this.failSend(turn, info);
          return false;
        }
      }
    } finally {
      this.inflight--;
      this.changed();
    }
  }

  async interrupt(): Promise<void> {
    const session = this.session;
    if (!session) return;
    try {
      await this.client.interrupt({ sessionId: session.sessionId }, { timeoutMs: 10000, ...steering(session) });
    } catch (err) {
      const info = describeError(err);
      if (sessionLost(info)) {
        if (this.session === session) this.restart("gone");
      } else if (info.kind === "unreachable") {
        this.setConnectionError(true);
      } else if (info.kind !== "cancelled") {
        this.setInputError(info.message);
      }
    }
  }

  /** Picks another avatar or voice: a new session with it. */
  choose(avatar: string, voice: string): void {
    if (this.session && avatar === this.session.avatar && voice === this.session.voice) return;
    if (this.portrait && avatar !== this.portrait.avatar) this.portrait = null;
    this.choice = { avatar, voice };
    this.restart("switch");
  }

  /** Animates a photo: a new session with it replaces the current one, which plays on if the photo is refused.
   * Resolves true when the new session is live. */
  async usePortrait(file: File): Promise<boolean> {
    if (file.size > MAX_PORTRAIT_BYTES) {
      this.setError(
        `That photo is ${(file.size / 2 ** 20).toFixed(1)} MiB; the limit is ${MAX_PORTRAIT_BYTES / 2 ** 20} MiB.`,
      );
      return false;
    }
    this.uploading = true;
    this.setError("");
    this.setNotice("Preparing your photo…");
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const session = await this.source.create({ avatar: "", voice: this.choice.voice, portrait: bytes }, 60000);
      if (this.disposed) {
        this.endClient.endSession({ sessionId: session.sessionId }, steering(session)).catch(() => undefined);
        return false;
      }
      const old = this.session;
      this.portrait = { bytes, avatar: session.avatar };
      this.adopt(session, "");
      this.setNotice("Now animating your photo.");
      if (old) this.endClient.endSession({ sessionId: old.sessionId }, steering(old)).catch(() => undefined);
      // Watch the new session: the loop is watching the old one.
      this.watching = false;
      this.watchAbort?.abort();
      this.wakeLoop?.();
      return true;
    } catch (err) {
      const info = describeError(err);
      this.setNotice("");
      if (info.kind === "invalid") this.setError(`Your photo can't be used: ${info.detail}`);
      else if (info.kind === "unreachable") this.setError("Can't reach the server — your photo was not sent.");
      else if (info.kind === "busy") this.setError(`${info.message} (your photo was not used)`);
      else this.setError(info.message || `Your photo can't be used: ${info.detail}`);
      return false;
    } finally {
      this.uploading = false;
      this.changed();
    }
  }

  clearInputError(): void {
    if (this.inputError) this.setInputError("");
  }

  // -- session loop ---------------------------------------------------------------------------------------------

  private async loop(): Promise<void> {
    let attempt = 0;
    while (!this.disposed) {
      if (!this.session) {
        const ok = await this.createSession();
        if (this.disposed) return;
        if (!ok) {
          await this.sleep(backoffMs(attempt++));
          continue;
        }
        attempt = 0;
      }
      const outcome = await this.watch();
      if (this.disposed) return;
      switch (outcome) {
        case "connected-then-lost":
          attempt = 0;
          await this.sleep(backoffMs(attempt++));
          break;
        case "retry":
          await this.sleep(backoffMs(attempt++));
          break;
        case "now":
          break;
      }
    }
  }

  private loadCatalog(): void {
    this.client
      .getCatalog({}, { timeoutMs: 10000 })
      .then((reply) => {
        this.catalog = { avatars: reply.avatars.map((a) => a.name), voices: reply.voices.map((v) => v.name) };
        this.changed();
      })
      .catch(() => undefined); // the pickers keep the session's own values
  }

  private async createSession(): Promise<boolean> {
    const reason = this.restartReason;
    const portrait = this.portrait;
    try {
      const session = await this.source.create(
        { avatar: portrait ? "" : this.choice.avatar, voice: this.choice.voice, portrait: portrait?.bytes },
        portrait ? 60000 : 15000,
      );
      this.loadCatalog();
      if (this.disposed || this.session) {
        // Disposed, or a photo upload made a session meanwhile.
        this.endClient.endSession({ sessionId: session.sessionId }, steering(session)).catch(() => undefined);
        return !this.disposed;
      }
      this.adopt(session, reason);
      return true;
    } catch (err) {
      const info = describeError(err);
      if (info.kind === "unreachable") {
        this.setConnectionError(true);
      } else if (info.kind === "busy") {
        // No room on the server now (sessions, video workers): its own sentence; the loop retries with backoff and
        // the session is created once room frees up.
        this.setError(`${info.message} — retrying…`);
      } else if (info.kind === "rate-limited") {
        this.setError(`The server is busy: ${info.detail} — retrying…`);
      } else if (info.kind === "invalid" && (this.choice.avatar || this.choice.voice || this.portrait)) {
        // An avatar, voice or photo this server does not take (any more): say so, and fall back to its defaults.
        this.setError(info.detail);
        this.choice = { avatar: "", voice: "" };
        this.portrait = null;
      } else {
        this.setError(info.message || "Could not start a session — retrying…");
      }
      return false;
    }
  }

  /** Makes `session` the page's session: its playlist plays, its events are watched next. */
  private adopt(session: Session, reason: RestartReason): void {
    this.session = session;
    this.epochMs = session.mediaEpoch ? timestampMs(session.mediaEpoch) : 0;
    this.choice = { avatar: session.avatar, voice: session.voice };
    this.restartReason = "";
    this.serverState = "idle";
    this.pendingStates = [];
    this.orphans.clear();
    this.stalls.reset();
    this.onScreenUs = null;
    this.setConnectionError(false);
    if (this.error) this.error = "";
    if (reason === "gone") this.setNotice("The session ended — started a new one.");
    else if (reason === "switch") {
      const avatar = this.portrait?.avatar === session.avatar ? "your photo" : `avatar “${session.avatar}”`;
      this.setNotice(`Now: ${avatar}, voice “${session.voice}”.`);
    }
    const path = session.playlistPath || session.playlistUrl;
    this.playlistUrl = new URL(path, window.location.origin).href;
    this.player.load(this.playlistUrl, this.epochMs ? this.epochMs + FIRST_SEGMENT_DELAY_MS : 0);
    for (const resolve of this.sessionWaiters.splice(0)) resolve();
    this.changed();
  }

  /** Watches the session until the stream breaks; says what to do next. */
  private async watch(): Promise<"connected-then-lost" | "retry" | "now"> {
    const session = this.session;
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
          this.watching = true;
          this.setConnectionError(false);
          if (this.error) this.setError("");
          this.pendingStates = [];
        }
        this.handleEvent(event, first);
      }
      // The stream finished cleanly: the session ended (or a proxy closed it). Watch again to find out which.
      this.watching = false;
      this.changed();
      return connected ? "now" : "retry";
    } catch (err) {
      this.watching = false;
      if (abort.signal.aborted || this.disposed) {
        this.changed();
        return "now";
      }
      const info = describeError(err);
      if (sessionLost(info)) {
        if (this.session === session) this.restart("gone");
        return "now";
      }
      if (info.kind === "unreachable") {
        this.setConnectionError(true);
      } else if (info.kind === "rate-limited") {
        this.setError(`${info.detail} — retrying…`);
      } else if (info.kind === "invalid") {
        // A session id the server does not accept: start over.
        if (this.session === session) this.restart("gone");
        return "now";
      } else {
        this.setError(info.message ? `${info.message} — retrying…` : UNREACHABLE_MESSAGE);
      }
      this.changed();
      return connected ? "connected-then-lost" : "retry";
    } finally {
      if (this.watchAbort === abort) this.watchAbort = null;
    }
  }

  private restart(reason: RestartReason): void {
    const old = this.session;
    this.session = null;
    this.watching = false;
    this.restartReason = reason;
    if (old && reason === "switch") {
      this.endClient.endSession({ sessionId: old.sessionId }, steering(old)).catch(() => undefined);
    }
    this.watchAbort?.abort();
    this.wakeLoop?.();
    this.changed();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeLoop = () => {
        this.wakeLoop = null;
        done();
      };
    });
  }

  private waitForSession(timeoutMs: number): Promise<Session | null> {
    if (this.session) return Promise.resolve(this.session);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(this.session), timeoutMs);
      this.sessionWaiters.push(() => {
        clearTimeout(timer);
        resolve(this.session);
      });
    });
  }

  // -- events ---------------------------------------------------------------------------------------------------

  private handleEvent(event: WatchSessionResponse, immediate: boolean): void {
    const now = performance.now();
    const atUs = Number(event.mediaTimeUs);
    const e = event.event;
    switch (e.case) {
      case "stateChanged": {
        const state = STATE_NAMES[e.value.state];
        if (!state) break;
        if (state === "ended") {
          this.serverState = "ended";
          this.pendingStates = [];
        } else if (immediate || state === "thinking" || state === "rendering") {
          // The first event (current state), and "thinking" (feedback for the person who just pressed Send),
          // show at once; anything queued before them is history.
          this.pendingStates = [];
          this.serverState = state;
        } else {
          this.pendingStates.push({ state, atUs, receivedAt: now });
        }
        break;
      }
      case "speechStarted": {
        const turn = this.turnFor(e.value.utteranceId, event);
        if (!turn) break;
        turn.speechStartUs = Number(e.value.startUs);
        if (this.sessionError) this.clearSessionError();
        break;
      }
      case "wordSpoken": {
        const turn = this.turnFor(e.value.utteranceId, event);
        if (!turn) break;
        addWord(turn, { index: e.value.wordIndex, text: e.value.word, startUs: Number(e.value.startUs), receivedAt: now });
        break;
      }
      case "speechFinished": {
        const turn = this.turnFor(e.value.utteranceId, event);
        if (!turn) break;
        turn.finish = FINISH_NAMES[e.value.reason] ?? "completed";
        turn.spokenText = e.value.spokenText;
        break;
      }
      case "latency": {
        const turn = this.turnFor(e.value.utteranceId, event);
        if (!turn) break;
        turn.server = {
          firstClauseMs: Number(e.value.firstClauseUs) / 1000,
          firstAudioMs: Number(e.value.firstAudioUs) / 1000,
          firstSpeechFrameMs: Number(e.value.firstSpeechFrameUs) / 1000,
          firstSpeechSegmentMs: Number(e.value.firstSpeechSegmentUs) / 1000,
        };
        break;
      }
      case "error": {
        const component = e.value.component ? `${e.value.component}: ` : "";
        const message = `${component}${e.value.message}`;
        if (e.value.utteranceId) {
          const turn = this.turnFor(e.value.utteranceId, event);
          if (turn) turn.error = e.value.message;
        }
        this.sessionError = `Problem on the server — ${message}`;
        this.sessionErrorAt = now;
        this.lastError = this.sessionError;
        break;
      }
      case "voiceDegraded": {
        const fallback = e.value.fallbackEngine ? ` (${e.value.fallbackEngine})` : "";
        this.setNotice(`The voice's provider failed; the offline voice${fallback} finishes this answer.`);
        break;
      }
      case "stalled": {
        // Shown by tick() once the episode settles (and not more often than every few seconds).
        this.stalls.add(
          { startUs: Number(e.value.startUs), endUs: Number(e.value.endUs), reason: e.value.reason },
          now,
        );
        break;
      }
      default:
        break;
    }
    this.changed();
  }

  /** The turn of an utterance; events of one we have no turn for wait a moment for a Say/Chat reply in flight. */
  private turnFor(utteranceId: string, event: WatchSessionResponse): Turn | null {
    if (!utteranceId) return null;
    const found = this.turns.find((t) => t.utteranceId === utteranceId);
    if (found) return found;
    if (this.inflight > 0) {
      const orphan = this.orphans.get(utteranceId) ?? { at: performance.now(), events: [] };
      orphan.events.push(event);
      this.orphans.set(utteranceId, orphan);
      return null;
    }
    const turn = newTurn({ utteranceId });
    this.turns.push(turn);
    return turn;
  }

  private adoptOrphans(turn: Turn): void {
    const orphan = this.orphans.get(turn.utteranceId);
    if (!orphan) return;
    this.orphans.delete(turn.utteranceId);
    for (const event of orphan.events) this.handleEvent(event, false);
  }

  private failSend(turn: Turn, info: ErrorInfo): void {
    if (info.kind === "invalid" || info.kind === "rate-limited" || info.kind === "busy") {
      // Refused: take the turn back; the text stays in the box with the reason next to it (busy: the server's own
      // sentence; Send again once a speaking session finishes).
      this.turns = this.turns.filter((t) => t !== turn);
      this.setInputError(info.kind === "invalid" ? info.detail : info.message);
      return;
    }
    if (info.kind === "unreachable") {
      turn.error = "Not sent: can't reach the server.";
      this.setConnectionError(true);
      this.setInputError("Not sent: can't reach the server. Your text is still here.");
      return;
    }
    turn.error = `Not sent: ${info.message || info.detail}`;
    this.setInputError(turn.error);
  }

  // -- clock: words, states and latency follow the picture ------------------------------------------------------

  private tick(): void {
    const now = performance.now();
    const onScreen = this.epochMs ? this.player.onScreenMediaUs(this.epochMs) : null;
    this.onScreenUs = onScreen;

    if (revealWords(this.turns, onScreen, now)) this.dirty = true;

    while (this.pendingStates.length) {
      const head = this.pendingStates[0];
      const age = now - head.receivedAt;
      const due = onScreen !== null ? head.atUs <= onScreen : age >= 1500;
      if (!due && age < STATE_MAX_HOLD_MS) break;
      this.pendingStates.shift();
      this.serverState = head.state;
      this.dirty = true;
    }

    for (const turn of this.turns) {
      if (turn.firstSpeechMs === null && turn.sentAt && turn.speechStartUs !== null && onScreen !== null) {
        if (onScreen >= turn.speechStartUs) {
          turn.firstSpeechMs = now - turn.sentAt;
          this.dirty = true;
        }
      }
    }

    for (const [utteranceId, orphan] of this.orphans) {
      if (now - orphan.at > ORPHAN_WAIT_MS) {
        this.orphans.delete(utteranceId);
        this.turns.push(newTurn({ utteranceId }));
        for (const event of orphan.events) this.handleEvent(event, false);
      }
    }

    const stallNotice = this.stalls.poll(now);
    if (stallNotice) this.setNotice(stallNotice);

    if (this.notice && now - this.noticeAt > NOTICE_MS) {
      this.notice = "";
      this.dirty = true;
    }
    if (this.sessionError && now - this.sessionErrorAt > SESSION_ERROR_MS) this.clearSessionError();

    if (now - this.lastBehindEmit > 500) {
      this.lastBehindEmit = now;
      const behind = onScreen !== null ? Date.now() - (this.epochMs + onScreen / 1000) : null;
      const rounded = behind !== null ? Math.round(behind / 10) * 10 : null;
      if (rounded !== this.behindLiveMs) {
        this.behindLiveMs = rounded;
        this.dirty = true;
      }
      const target = this.player.info.targetLatencyS;
      const targetMs = target !== null ? Math.round(target * 1000) : null;
      if (targetMs !== this.targetLatencyMs) {
        this.targetLatencyMs = targetMs;
        this.dirty = true;
      }
      this.publishHook();
    }

    if (this.dirty) this.emit();
  }

  // -- messages -------------------------------------------------------------------------------------------------

  private setConnectionError(down: boolean): void {
    if (down === this.unreachable) return;
    this.unreachable = down;
    if (down) this.lastError = UNREACHABLE_MESSAGE;
    this.changed();
  }

  private setError(message: string): void {
    this.error = message;
    if (message) this.lastError = message;
    this.changed();
  }

  private clearSessionError(): void {
    this.sessionError = "";
    this.changed();
  }

  private setNotice(message: string): void {
    this.notice = message;
    this.noticeAt = performance.now();
    this.changed();
  }

  private setInputError(message: string): void {
    this.inputError = message;
    if (message) this.lastError = message;
    this.changed();
  }

  // -- snapshots ------------------------------------------------------------------------------------------------

  private uiState(): UiState {
    if (this.unreachable || (this.error && !this.session)) return "error";
    if (!this.session || !this.watching || this.serverState === "ended") return "connecting";
    return this.serverState;
  }

  private buildSnapshot(): Snapshot {
    const session = this.session;
    const avatar = session?.avatar ?? this.choice.avatar;
    const voice = session?.voice ?? this.choice.voice;
    const error = this.unreachable ? UNREACHABLE_MESSAGE : this.error || this.sessionError;
    let latency: LatencyReadout | null = null;
    for (let i = this.turns.length - 1; i >= 0; i--) {
      const turn = this.turns[i];
      if (turn.firstSpeechMs !== null || turn.server) {
        latency = { firstSpeechMs: turn.firstSpeechMs, server: turn.server };
        break;
      }
    }
    return {
      state: this.uiState(),
      sessionId: session?.sessionId ?? "",
      avatar,
      voice,
      avatarOptions: unique([...this.catalog.avatars, avatar]),
      voiceOptions: unique([...this.catalog.voices, voice]),
      turns: this.turns.slice(),
      error,
      notice: this.notice,
      inputError: this.inputError,
      sending: this.inflight > 0,
      uploading: this.uploading,
      playerStatus: this.playerStatus,
      behindLiveMs: this.behindLiveMs,
      targetLatencyMs: this.targetLatencyMs,
      lowLatency: this.lowLatency,
      latency,
    };
  }

  private changed(): void {
    this.dirty = true;
    if (!this.ticker) this.emit();
  }

  private emit(): void {
    this.dirty = false;
    this.snapshot = this.buildSnapshot();
    this.publishHook();
    for (const listener of this.listeners) listener();
  }

  private publishHook(): void {
    window.__avatar = {
      sessionId: this.snapshot.sessionId,
      controlToken: this.session?.controlToken ?? "",
      avatar: this.snapshot.avatar,
      state: this.snapshot.state,
      words: shownWords(this.turns),
      wordStartsUs: this.turns.flatMap((t) => t.words.filter((w) => w.shown).map((w) => w.startUs)),
      lastError: this.lastError,
      mediaTimeUs: this.onScreenUs,
      playlistUrl: this.playlistUrl,
      latencies: this.turns.filter((t) => t.firstSpeechMs !== null).map((t) => t.firstSpeechMs as number),
      playback: this.player.info,
      behindLiveMs: this.behindLiveMs,
    };
  }
}
