// Live HLS playback of a session's playlist: hls.js tuned for low latency (Safari: native HLS), retrying the
// playlist until its first segment exists, recovering from network and media errors by itself, and telling the
// page which session media time is on screen (EXT-X-PROGRAM-DATE-TIME = Session.media_epoch + media time).
import Hls, { ErrorDetails, ErrorTypes, Events, type ErrorData, type HlsConfig, type RetryConfig } from "hls.js";
import { backoffMs } from "./errors";

export type PlayerStatus = "idle" | "loading" | "playing" | "stalled" | "retrying" | "ended";

export interface PlayerCallbacks {
  onStatus(status: PlayerStatus, detail?: string): void;
}

/** 404 means "not yet" for a live playlist or a segment a moment ahead: retry it like a server error. */
function retry404(
  retryConfig: RetryConfig | null | undefined,
  retryCount: number,
  _isTimeout: boolean,
  response: { code?: number } | undefined,
  retry: boolean,
): boolean {
  return retry || (!!retryConfig && response?.code === 404 && retryCount < retryConfig.maxNumRetry);
}

function policy(maxNumRetry: number, maxLoadTimeMs: number) {
  return {
    default: {
      maxTimeToFirstByteMs: 8000,
      maxLoadTimeMs,
      timeoutRetry: { maxNumRetry: 3, retryDelayMs: 0, maxRetryDelayMs: 0 },
      errorRetry: { maxNumRetry, retryDelayMs: 250, maxRetryDelayMs: 2000, shouldRetry: retry404 },
    },
  };
}

export const HLS_CONFIG: Partial<HlsConfig> = {
  lowLatencyMode: true,
  // Segments are 480 ms: keep about a second behind the live edge, catch up gently, jump when far behind.
  liveSyncDuration: 1.0,
  liveMaxLatencyDuration: 4.0,
  maxLiveSyncPlaybackRate: 1.1,
  liveDurationInfinity: true,
  maxBufferLength: 4,
  maxMaxBufferLength: 8,
  backBufferLength: 4,
  startFragPrefetch: true,
  enableWorker: true,
  manifestLoadPolicy: policy(12, 10000),
  playlistLoadPolicy: policy(8, 10000),
  fragLoadPolicy: policy(8, 15000),
};

const STALL_RELOAD_MS = 8000;

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
  private readonly onNativeError = () => this.scheduleReload("video error");
  private readonly onEnded = () => this.setStatus("ended");
  private readonly onTimeUpdate = () => {
    if (!this.video.paused && this.video.currentTime > 0 && this.status !== "ended") {
      this.lastTime = this.video.currentTime;
      this.lastProgressAt = performance.now();
      this.setStatus("playing");
    }
  };

  constructor(
    private readonly video: HTMLVideoElement,
    private readonly callbacks: PlayerCallbacks,
  ) {}

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

  private setStatus(status: PlayerStatus, detail?: string): void {
    if (status === this.status && !detail) return;
    this.status = status;
    this.callbacks.onStatus(status, detail);
  }

  private teardown(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    this.video.removeEventListener("error", this.onNativeError);
    this.video.removeEventListener("ended", this.onEnded);
    this.video.removeEventListener("timeupdate", this.onTimeUpdate);
    this.nativeStartDateMs = null;
  }

  private start(): void {
    const generation = ++this.generation;
    this.teardown();
    this.setStatus("loading");
    void this.waitForPlaylist(generation).then((ready) => {
      if (!ready || generation !== this.generation) return;
      this.attach(generation);
    });
  }

  /** The playlist 404s until the session's first segment exists (about half a second): poll for it. */
  private async waitForPlaylist(generation: number): Promise<boolean> {
    const wait = Math.min(1500, this.notBeforeMs - Date.now());
    this.notBeforeMs = 0;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    for (let i = 0; generation === this.generation; i++) {
      try {
        const response = await fetch(this.url, { cache: "no-store" });
        if (response.ok && (await response.text()).includes("#EXTINF")) return true;
      } catch {
        // network error: keep trying
      }
      if (generation !== this.generation) return false;
      if (i > 20) this.setStatus("retrying", "waiting for the stream");
      await new Promise((resolve) => setTimeout(resolve, i < 20 ? 200 : backoffMs(i - 20)));
    }
    return false;
  }

  private attach(generation: number): void {
    const video = this.video;
    this.lastProgressAt = performance.now();
    this.lastTime = -1;
    if (Hls.isSupported()) {
      const hls = new Hls(HLS_CONFIG);
      this.hls = hls;
      hls.on(Events.MANIFEST_PARSED, () => this.play());
      hls.on(Events.FRAG_BUFFERED, () => {
        this.attempt = 0;
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
    if (!data.fatal) return;
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
        if (this.attempt > 4) this.start();
        else this.hls.startLoad(-1);
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
      if (generation === this.generation && this.url) this.start();
    }, delay);
  }
}
