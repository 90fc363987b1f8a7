// Live HLS playback of a session's playlist: hls.js in LL-HLS mode (160 ms parts, blocking playlist reload; the plain
// segments with `lowLatency: false`), Safari: native HLS; retrying the playlist until its first segment exists,
// recovering from network and media errors by itself, catching up after a stall, and telling the page which session
// media time is on screen (EXT-X-PROGRAM-DATE-TIME = Session.media_epoch + media time).
import Hls, { ErrorDetails, ErrorTypes, Events, type ErrorData } from "hls.js";
import { backoffMs } from "./errors";
import {
  catchUpRate,
  chunkSeconds,
  hlsConfig,
  liveSyncSeconds,
  parsePlaylistTiming,
  readyToStart,
  relaxedTarget,
  type PlaylistTiming,
} from "./playback";
import { BackBufferTrimmer } from "./back-buffer";
import { bufferedEndAt } from "./buffered";
import { Unsticker } from "./unstick";

export type PlayerStatus = "idle" | "loading" | "playing" | "stalled" | "retrying" | "ended";

export interface PlayerCallbacks {
  onStatus(status: PlayerStatus, detail?: string): void;
}

export interface PlayerOptions {
  /** LL-HLS (parts, blocking reload); false plays the plain segments. Default true. */
  lowLatency?: boolean;
}

/** What the player knows about its playback, for the page's readout and the tests/bench (window.__avatar). */
export interface PlaybackInfo {
  /** Asked for LL-HLS (the page's `?ll=` switch). */
  lowLatency: boolean;
  /** hls.js runs with lowLatencyMode (false: native HLS, or the plain segments). */
  lowLatencyMode: boolean;
  /** The playlist announces parts (EXT-X-PART-INF). */
  parts: boolean;
  /** hls.js's live latency (s): live edge (wall clock) minus the playhead; null while unknown or native HLS. */
  latencyS: number | null;
  /** What hls.js aims for (s): PART-HOLD-BACK in LL mode, plus any increase after stalls. */
  targetLatencyS: number | null;
  playbackRate: number;
  /** hls.js BUFFER_STALLED_ERROR events (the playhead ran out of buffer). */
  bufferStalls: number;
  /** `waiting` events on the <video> (rebuffering) after it first played. */
  waiting: number;
  /** Times hls.js was torn down and restarted (stall watchdog, fatal errors). */
  reloads: number;
  /** hls.js errors it recovered from by itself, by detail (e.g. fragParsingError), since the page loaded. */
  recoveredErrors: Record<string, number>;
  /** Seeks past a finished segment's last few ms, where hls.js would otherwise stop loading (seekPastSegmentEnd). */
  segmentEndSeeks: number;
  /** Seeks to a listed part hls.js left unloaded while playback stood at its buffer's end (seekToUnloadedPart). */
  unloadedPartSeeks: number;
  /** Times the page trimmed the media already played (back-buffer.ts). */
  backBufferTrims: number;
}

const STALL_RELOAD_MS = 8000;
const STARTUP_MS = 3000;

export class Player {
  private hls: Hls | null = null;
  private url = "";
  private generation = 0;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private lastMediaErrorAt = 0;
  private lastProgressAt = 0;
  private lastTime = -1;
  private nativeStartDateMs: number | null = null;
  private notBeforeMs = 0;
  private status: PlayerStatus = "idle";
  private readonly lowLatency: boolean;
  private timing: PlaylistTiming | null = null;
  private bufferStalls = 0;
  private waiting = 0;
  private reloads = 0;
  private readonly recoveredErrors: Record<string, number> = {};
  private backBufferTrims = 0;
  private readonly unsticker: Unsticker;
  private playedOnce = false;
  private firstPlayingAt = 0;
  private lastStallAt = -Infinity;
  private readonly onWaiting = () => {
    if (this.playedOnce) this.waiting++;
    this.unsticker.onStall();
  };
  private readonly onPlaying = () => {
    if (!this.playedOnce) this.firstPlayingAt = performance.now();
    this.playedOnce = true;
  };
  private readonly onNativeError = () => this.scheduleReload("video error");
  private readonly onEnded = () => this.setStatus("ended");
  private readonly onTimeUpdate = () => {
    if (!this.video.paused && this.video.currentTime > 0 && this.status !== "ended") {
      this.lastTime = this.video.currentTime;
      this.lastProgressAt = performance.now();
      this.setStatus("playing");
      this.catchUp();
    }
  };

  constructor(
    private readonly video: HTMLVideoElement,
    private readonly callbacks: PlayerCallbacks,
    options: PlayerOptions = {},
  ) {
    this.lowLatency = options.lowLatency ?? true;
    this.unsticker = new Unsticker(video, () => this.hls);
  }

  /**
   * Starts playing `url` (replacing whatever played before). `firstSegmentAtMs`: wall-clock time when the first
   * segment should be on the playlist, so that the page does not ask for it (and log a 404) much earlier.
   */
  load(url: string, firstSegmentAtMs = 0): void {
    this.url = url;
    this.attempt = 0;
    this.notBeforeMs = firstSegmentAtMs;
    this.start();
  }

  /** The session media time (µs) of the frame on screen, or null while unknown. */
  onScreenMediaUs(mediaEpochMs: number): number | null {
    if (!this.url) return null;
    let dateMs: number | null = null;
    if (this.hls) {
      const date = this.hls.playingDate;
      dateMs = date ? date.getTime() : null;
    } else if (this.nativeStartDateMs !== null) {
      dateMs = this.nativeStartDateMs + this.video.currentTime * 1000;
    } else {
      const getStartDate = (this.video as HTMLVideoElement & { getStartDate?: () => Date }).getStartDate;
      const start = getStartDate?.call(this.video)?.getTime();
      if (start !== undefined && Number.isFinite(start)) {
        this.nativeStartDateMs = start;
        dateMs = start + this.video.currentTime * 1000;
      }
    }
    if (dateMs === null || !Number.isFinite(dateMs)) return null;
    return Math.round((dateMs - mediaEpochMs) * 1000);
  }

  /** Seconds between the live edge and what is on screen, as hls.js sees it. */
  get latencySeconds(): number | null {
    const latency = this.hls?.latency;
    return latency !== undefined && Number.isFinite(latency) && latency > 0 ? latency : null;
  }

  get info(): PlaybackInfo {
    const target = this.hls?.targetLatency;
    return {
      lowLatency: this.lowLatency,
      lowLatencyMode: !!this.hls && this.hls.lowLatencyMode,
      parts: (this.timing?.partTarget ?? 0) > 0,
      latencyS: this.latencySeconds,
      targetLatencyS: target !== undefined && target !== null && Number.isFinite(target) ? target : null,
      playbackRate: this.video.playbackRate,
      bufferStalls: this.bufferStalls,
      waiting: this.waiting,
      reloads: this.reloads,
      recoveredErrors: { ...this.recoveredErrors },
      segmentEndSeeks: this.unsticker.segmentEndSeeks,
      unloadedPartSeeks: this.unsticker.unloadedPartSeeks,
      backBufferTrims: this.backBufferTrims,
    };
  }

  get playing(): boolean {
    return this.status === "playing";
  }

  destroy(): void {
    this.generation++;
    this.url = "";
    this.teardown();
    this.setStatus("idle");
  }

  // -- internals ------------------------------------------------------------------------------------------------

  /** Plays a little faster while behind the aim (after a stall, or a slow start), and forgets old stalls' extra. */
  private catchUp(): void {
    const hls = this.hls;
    const video = this.video;
    if (!hls || !this.timing) return;
    const base = liveSyncSeconds(this.lowLatency, this.timing);
    const relaxed = relaxedTarget(hls.targetLatency, base, performance.now() - this.lastStallAt);
    if (relaxed !== null) hls.targetLatency = relaxed;
    const ahead = (bufferedEndAt(video.buffered, video.currentTime, 0.1) ?? video.currentTime) - video.currentTime;
    const rate = catchUpRate(this.latencySeconds, hls.targetLatency, ahead, chunkSeconds(this.lowLatency, this.timing));
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }

  private setStatus(status: PlayerStatus, detail?: string): void {
    if (status === this.status && !detail) return;
    this.status = status;
    this.callbacks.onStatus(status, detail);
  }

  private teardown(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.unsticker.cancel();
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    this.video.removeEventListener("error", this.onNativeError);
    this.video.removeEventListener("ended", this.onEnded);
    this.video.removeEventListener("timeupdate", this.onTimeUpdate);
    this.video.removeEventListener("waiting", this.onWaiting);
    this.video.removeEventListener("playing", this.onPlaying);
    this.playedOnce = false;
    this.lastStallAt = -Infinity;
    if (this.video.playbackRate !== 1) this.video.playbackRate = 1;
    this.nativeStartDateMs = null;
  }

  private start(): void {
    const generation = ++this.generation;
    this.teardown();
    this.setStatus("loading");
    void this.waitForPlaylist(generation).then((text) => {
      if (text === null || generation !== this.generation) return;
      this.timing = parsePlaylistTiming(text);
      this.attach(generation, this.timing);
    });
  }

  /** The playlist 404s until the session's first segment exists (about a second; the plain segments wait for two):
   * poll for it; its text. */
  private async waitForPlaylist(generation: number): Promise<string | null> {
    const wait = Math.min(1500, this.notBeforeMs - Date.now());
    this.notBeforeMs = 0;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    for (let i = 0; generation === this.generation; i++) {
      try {
        const response = await fetch(this.url, { cache: "no-store" });
        if (response.ok) {
          const text = await response.text();
          if (readyToStart(text, this.lowLatency)) return text;
        }
      } catch {
        // network error: keep trying
      }
      if (generation !== this.generation) return null;
      if (i > 20) this.setStatus("retrying", "waiting for the stream");
      await new Promise((resolve) => setTimeout(resolve, i < 20 ? 200 : backoffMs(i - 20)));
    }
    return null;
  }

  private attach(generation: number, timing: PlaylistTiming): void {
    const video = this.video;
    this.lastProgressAt = performance.now();
    this.lastTime = -1;
    if (Hls.isSupported()) {
      const hls = new Hls(hlsConfig(this.lowLatency, timing));
      this.hls = hls;
      const trimmer = new BackBufferTrimmer(video, () => hls.latestLevelDetails, hls.lowLatencyMode, (end) => {
        this.backBufferTrims++;
        hls.trigger(Events.BUFFER_FLUSHING, { startOffset: 0, endOffset: end, type: null });
      });
      hls.on(Events.MANIFEST_PARSED, () => this.play());
      hls.on(Events.FRAG_BUFFERED, (_event, data) => {
        this.attempt = 0;
        trimmer.onBuffered(data);
      });
      hls.on(Events.ERROR, (_event, data) => this.onHlsError(generation, data));
      hls.attachMedia(video);
      hls.loadSource(this.url);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.addEventListener("error", this.onNativeError);
      video.src = this.url;
      this.play();
    } else {
      this.setStatus("retrying", "this browser cannot play HLS");
      return;
    }
    video.addEventListener("ended", this.onEnded);
    video.addEventListener("timeupdate", this.onTimeUpdate);
    video.addEventListener("waiting", this.onWaiting);
    video.addEventListener("playing", this.onPlaying);
    this.watchdog = setInterval(() => this.checkProgress(), 1000);
  }

  private play(): void {
    this.video.play().catch(() => {
      // Autoplay refused even muted (power saving, policy): the unmute button starts it with a gesture.
    });
  }

  private checkProgress(): void {
    const now = performance.now();
    const time = this.video.currentTime;
    if (time !== this.lastTime) {
      this.lastTime = time;
      this.lastProgressAt = now;
      if (!this.video.paused) this.setStatus("playing");
      return;
    }
    if (this.video.ended || this.status === "ended") return;
    if (this.video.paused && this.video.readyState >= 2) {
      this.play();
      return;
    }
    if (now - this.lastProgressAt > STALL_RELOAD_MS) {
      this.scheduleReload("playback stalled");
    } else if (now - this.lastProgressAt > 2000) {
      this.setStatus("stalled");
    }
  }

  private onHlsError(generation: number, data: ErrorData): void {
    if (generation !== this.generation || !this.hls) return;
    if (data.details === ErrorDetails.BUFFER_STALLED_ERROR && !data.fatal) {
      this.bufferStalls++;
      this.unsticker.onStall();
      // hls.js raises its aim after every stall; one in the first seconds (a start on a thin buffer) is forgotten
      // at once, later ones after STALL_FORGET_MS.
      const now = performance.now();
      if (this.playedOnce && now - this.firstPlayingAt > STARTUP_MS) this.lastStallAt = now;
    }
    if (!data.fatal) {
      this.recoveredErrors[data.details] = (this.recoveredErrors[data.details] ?? 0) + 1;
      return;
    }
    const hls = this.hls;
    if (data.type === ErrorTypes.MEDIA_ERROR) {
      const now = performance.now();
      if (now - this.lastMediaErrorAt > 3000) {
        this.lastMediaErrorAt = now;
        hls.recoverMediaError();
      } else {
        this.lastMediaErrorAt = now;
        hls.swapAudioCodec();
        hls.recoverMediaError();
      }
      return;
    }
    if (
      data.type === ErrorTypes.NETWORK_ERROR &&
      data.details !== ErrorDetails.MANIFEST_LOAD_ERROR &&
      data.details !== ErrorDetails.MANIFEST_LOAD_TIMEOUT &&
      data.details !== ErrorDetails.MANIFEST_PARSING_ERROR
    ) {
      // Level or fragment loading gave up: restart loading where we are, after a pause.
      this.setStatus("retrying", data.details);
      const delay = backoffMs(this.attempt++);
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        if (generation !== this.generation || !this.hls) return;
        if (this.attempt > 4) {
          this.reloads++;
          this.start();
        } else {
          this.hls.startLoad(-1);
        }
      }, delay);
      return;
    }
    this.scheduleReload(data.details);
  }

  /** Tears hls.js down and starts over on the same playlist, with backoff. */
  private scheduleReload(reason: string): void {
    if (!this.url) return;
    const generation = this.generation;
    this.setStatus("retrying", reason);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    const delay = backoffMs(this.attempt++);
    this.retryTimer = setTimeout(() => {
      if (generation !== this.generation || !this.url) return;
      this.reloads++;
      this.start();
    }, delay);
  }
}
