// The page's brain, outside React: a thin coordinator that wires the session keeper (create, watch, re-create), the
// player, the conversation, the state clock and the notices together, runs the page's clock (words, states and
// latency follow the picture on screen), and publishes immutable snapshots for the UI (useSyncExternalStore) and the
// test hook (window.__avatar). Each part has its own module; this one only says when each is called.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Session, WatchSessionResponse } from "../gen/avatar/v1/session_pb";
import { createSessionClient, gatewaySessionSource } from "./api";
import { AvatarRequests } from "./avatar-requests";
import { Conversation } from "./conversation";
import { describeError } from "./errors";
import { portraitSizeRefusal } from "./limits";
import { Notices } from "./notices";
import { lowLatencyFromSearch } from "./playback";
import { Player, type PlayerStatus } from "./player";
import { portraitFailure } from "./session-failures";
import { applySessionEvent } from "./session-events";
import { SessionKeeper } from "./session-keeper";
import { pageSessionSource, type SessionSource } from "./session-source";
import { behindLiveMs, pickerOptions, targetLatencyMs, uiState, type Snapshot } from "./snapshot";
import { StateClock } from "./state-clock";
import { publishTestHook } from "./test-hook";
import type { Mode } from "./transcript";

// The names the page and tests import from here (each now lives in its own module).
export { charCount, MAX_PORTRAIT_BYTES, MAX_TEXT_CHARS, PORTRAIT_TYPES } from "./limits";
export type { LatencyReadout, Snapshot, UiState } from "./snapshot";
export type { AvatarTestHook } from "./test-hook";

/** The first segment (960 ms of media) is on the playlist a little before media time 960 ms. */
const FIRST_SEGMENT_DELAY_MS = 950;
/** The page's clock: words, states and latency are checked against the picture this often. */
const TICK_MS = 40;
/** The behind-live readout and the test hook are refreshed this often. */
const READOUT_MS = 500;

export class Controller {
  private readonly keeper: SessionKeeper;
  private readonly requests: AvatarRequests;
  private readonly player: Player;
  private readonly notices = new Notices(() => this.changed());
  private readonly conversation = new Conversation<WatchSessionResponse>();
  private readonly states = new StateClock();
  private readonly listeners = new Set<() => void>();
  private snapshot: Snapshot;

  private epochMs = 0;
  private playlistUrl = "";
  private uploading = false;
  private playerStatus: PlayerStatus = "idle";
  private onScreenUs: number | null = null;
  private behindLiveMs: number | null = null;
  private targetLatencyMs: number | null = null;
  private readonly lowLatency: boolean;
  private lastReadoutAt = 0;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private dirty = false;

  constructor(video: HTMLVideoElement, baseUrl: string = window.location.origin, source?: SessionSource) {
    const client = createSessionClient(baseUrl);
    // EndSession on page exit must outlive the page: keepalive fetch.
    const endClient = createSessionClient(baseUrl, true);
    // Who creates the page's sessions: the gateway (standalone) or the app's backend (embedded, `?backend=`).
    source ??= pageSessionSource(window.location.search, process.env.NEXT_PUBLIC_SESSION_BACKEND, () =>
      gatewaySessionSource(client),
    );
    this.keeper = new SessionKeeper(client, endClient, source, this.notices, {
      adopted: (session) => this.adopted(session),
      event: (event, first) => this.onEvent(event, first),
      changed: () => this.changed(),
    });
    this.requests = new AvatarRequests({
      client,
      keeper: this.keeper,
      conversation: this.conversation,
      notices: this.notices,
      replay: (event) => this.onEvent(event, false),
      changed: () => this.changed(),
    });
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
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    void this.keeper.run();
  }

  dispose(): void {
    if (this.ticker) clearInterval(this.ticker);
    this.player.destroy();
    this.keeper.dispose();
  }

  /** Best effort: ends the session so the server frees it now rather than at its idle timeout. */
  endCurrentSession(): void {
    this.keeper.endCurrent();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): Snapshot => this.snapshot;

  /** Sends text; resolves true when the server accepted it (the input can be cleared). */
  send(text: string, mode: Mode): Promise<boolean> {
    return this.requests.send(text, mode);
  }

  interrupt(): Promise<void> {
    return this.requests.interrupt();
  }

  /** Picks another avatar or voice: a new session with it. */
  choose(avatar: string, voice: string): void {
    this.keeper.choose(avatar, voice);
  }

  /** Animates a photo: a new session with it replaces the current one, which plays on if the photo is refused.
   * Resolves true when the new session is live. */
  async usePortrait(file: File): Promise<boolean> {
    const tooLarge = portraitSizeRefusal(file.size);
    if (tooLarge) {
      this.notices.setError(tooLarge);
      return false;
    }
    this.uploading = true;
    this.notices.setError("");
    this.notices.setNotice("Preparing your photo…");
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      if (!(await this.keeper.replaceWithPortrait(bytes))) return false;
      this.notices.setNotice("Now animating your photo.");
      return true;
    } catch (err) {
      this.notices.setNotice("");
      this.notices.setError(portraitFailure(describeError(err)));
      return false;
    } finally {
      this.uploading = false;
      this.changed();
    }
  }

  clearInputError(): void {
    this.notices.clearInputError();
  }

  // -- the session keeper's hooks -------------------------------------------------------------------------------

  /** A new session: its playlist plays from its first segment; the old one's states and waiting events go. */
  private adopted(session: Session): void {
    this.epochMs = session.mediaEpoch ? timestampMs(session.mediaEpoch) : 0;
    this.states.reset();
    this.conversation.forgetWaiting();
    this.onScreenUs = null;
    const path = session.playlistPath || session.playlistUrl;
    this.playlistUrl = new URL(path, window.location.origin).href;
    this.player.load(this.playlistUrl, this.epochMs ? this.epochMs + FIRST_SEGMENT_DELAY_MS : 0);
    this.changed();
  }

  private onEvent(event: WatchSessionResponse, first: boolean): void {
    // A (re)connected watch starts with the current state: changes queued before it are history.
    if (first) this.states.dropPending();
    const parts = { states: this.states, conversation: this.conversation, notices: this.notices };
    applySessionEvent(event, first, parts, performance.now());
    this.changed();
  }

  // -- clock: words, states and latency follow the picture ------------------------------------------------------

  private tick(): void {
    const now = performance.now();
    const onScreen = this.epochMs ? this.player.onScreenMediaUs(this.epochMs) : null;
    this.onScreenUs = onScreen;

    if (this.conversation.follow(onScreen)) this.dirty = true;
    if (this.states.advance(onScreen, now)) this.dirty = true;
    this.conversation.adoptStale((event) => this.onEvent(event, false));
    this.notices.tick();

    if (now - this.lastReadoutAt > READOUT_MS) {
      this.lastReadoutAt = now;
      const behind = behindLiveMs(this.epochMs, onScreen, Date.now());
      if (behind !== this.behindLiveMs) {
        this.behindLiveMs = behind;
        this.dirty = true;
      }
      const target = targetLatencyMs(this.player.info.targetLatencyS);
      if (target !== this.targetLatencyMs) {
        this.targetLatencyMs = target;
        this.dirty = true;
      }
      this.publishHook();
    }

    if (this.dirty) this.emit();
  }

  // -- snapshots ------------------------------------------------------------------------------------------------

  private buildSnapshot(): Snapshot {
    const session = this.keeper.session;
    const { avatar, voice } = this.keeper;
    const notices = this.notices;
    return {
      state: uiState({
        offline: notices.offline,
        error: notices.pageError,
        hasSession: session !== null,
        watching: this.keeper.watching,
        serverState: this.states.state,
      }),
      sessionId: session?.sessionId ?? "",
      avatar,
      voice,
      avatarOptions: pickerOptions(this.keeper.catalog.avatars, avatar),
      voiceOptions: pickerOptions(this.keeper.catalog.voices, voice),
      turns: this.conversation.turns.slice(),
      error: notices.bannerError,
      notice: notices.currentNotice,
      inputError: notices.currentInputError,
      sending: this.conversation.sending,
      uploading: this.uploading,
      playerStatus: this.playerStatus,
      behindLiveMs: this.behindLiveMs,
      targetLatencyMs: this.targetLatencyMs,
      lowLatency: this.lowLatency,
      latency: this.conversation.latestLatency(),
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
    publishTestHook({
      sessionId: this.snapshot.sessionId,
      controlToken: this.keeper.session?.controlToken ?? "",
      avatar: this.snapshot.avatar,
      state: this.snapshot.state,
      words: this.conversation.shownWords(),
      wordStartsUs: this.conversation.shownWordStartsUs(),
      lastError: this.notices.lastError,
      mediaTimeUs: this.onScreenUs,
      playlistUrl: this.playlistUrl,
      latencies: this.conversation.firstSpeechLatencies(),
      playback: this.player.info,
      behindLiveMs: this.behindLiveMs,
    });
  }
}
