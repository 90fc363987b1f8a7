// Trimming the media already played (the back buffer) for hls.js, at a moment when no part is on its way.
//
// Why not hls.js's own trimming (`backBufferLength`): hls.js (1.7) trims whenever playback enters a new segment, at
// any moment. Loading a part resets its segment's entry in hls.js's fragment tracker to "loaded nothing, buffered
// nothing" until the part is appended; a trim that completes inside that window drops such entries and, with them,
// the "loaded" marks of the segment's earlier parts. Once the segment is complete on the playlist, hls.js finds it
// buffered but with unloaded parts, keeps choosing it and loads nothing more: playback freezes at the segment's end
// until the page seeks (unstick.ts). Measured (bench/browser.py, LL-HLS, 14 answers): every stall followed such a
// trim; with hls.js's trimming off, none. So the page switches it off (playback.ts) and trims here instead, right
// after the newest listed part (or segment) is buffered: the next one is not published yet, nothing is loading.
import type Hls from "hls.js";
import type { FragBufferedData } from "hls.js";

/** Seconds of played media kept behind the playhead (a short seek back stays buffered). */
export const BACK_BUFFER_KEEP_S = 4;
/** Trim once this much more than BACK_BUFFER_KEEP_S lies behind the playhead: one flush every few seconds. */
export const BACK_BUFFER_TRIM_STEP_S = 8;
/** The most played media kept even when no safe moment comes (a player that never catches up with the newest part):
 * past this the page trims anyway rather than let the buffer grow until the browser refuses appends. */
export const BACK_BUFFER_MAX_S = 30;

/**
 * Where to cut the back buffer (remove [0, cut)), or null: not enough played media behind the playhead yet, or not
 * a safe moment (`safe`: nothing can be loading) and not so much that the page must trim anyway.
 */
export function backBufferCut(
  currentTime: number,
  bufferedStart: number | null,
  safe: boolean,
  keepS = BACK_BUFFER_KEEP_S,
  stepS = BACK_BUFFER_TRIM_STEP_S,
  maxS = BACK_BUFFER_MAX_S,
): number | null {
  if (bufferedStart === null || !(currentTime > 0)) return null;
  const behind = currentTime - bufferedStart;
  if (behind < keepS + stepS || (!safe && behind < maxS)) return null;
  return currentTime - keepS;
}

/** The newest media on the playlist the player could load: its last part (LL-HLS), else its last whole segment. */
export interface ListedEdge {
  sn: number;
  /** The part's index within its segment; null for a whole segment. */
  part: number | null;
}

/** The playlist's newest loadable media, from hls.js's level details (null while there are none). `loadsParts`:
 * hls.js runs in lowLatencyMode (it parses a playlist's parts either way, but loads them only then). */
export function listedEdge(details: Hls["latestLevelDetails"], loadsParts: boolean): ListedEdge | null {
  if (!details) return null;
  const parts = details.partList;
  if (loadsParts && parts && parts.length > 0) {
    const last = parts[parts.length - 1];
    return { sn: last.fragment.sn, part: last.index };
  }
  return details.fragments.length > 0 ? { sn: details.endSN, part: null } : null;
}

/** Whether what hls.js just buffered is the newest media listed: nothing later can be loading. */
export function isNewestListed(sn: number, part: number | null, edge: ListedEdge | null): boolean {
  return edge !== null && edge.sn === sn && edge.part === part;
}

export class BackBufferTrimmer {
  constructor(
    private readonly video: Pick<HTMLVideoElement, "currentTime" | "buffered">,
    private readonly details: () => Hls["latestLevelDetails"],
    /** hls.js runs in lowLatencyMode: it loads parts. */
    private readonly loadsParts: boolean,
    /** Asks hls.js to remove [0, end) from its buffers (its BUFFER_FLUSHING event). */
    private readonly flush: (end: number) => void,
  ) {}

  /** On hls.js's FRAG_BUFFERED. */
  onBuffered(data: Pick<FragBufferedData, "frag" | "part">): void {
    if (String(data.frag.type) !== "main" || typeof data.frag.sn !== "number") return;
    const edge = listedEdge(this.details(), this.loadsParts);
    const safe = isNewestListed(data.frag.sn, data.part ? data.part.index : null, edge);
    const buffered = this.video.buffered;
    const cut = backBufferCut(this.video.currentTime, buffered.length > 0 ? buffered.start(0) : null, safe);
    if (cut !== null) this.flush(cut);
  }
}
