// The conversation's turns as the page keeps them: one per utterance, in order; how many Say/Chat calls are in
// flight; and the events of utterances whose Say/Chat reply has not come back yet (they wait a moment for their turn
// instead of making a turn of their own). Also what the turns measure: Send → first speech on screen. Pure, with the
// event type left open (conversation.test.ts).
import { newTurn, revealWords, shownWords, type Mode, type Turn } from "./transcript";

/** Events of an utterance whose Say/Chat reply has not come back yet wait this long for it. */
export const ORPHAN_WAIT_MS = 2000;

/** The latency readout under the video: the newest turn that measured anything. */
export interface LatencyReadout {
  firstSpeechMs: number | null;
  server: Turn["server"];
}

export class Conversation<Event> {
  private list: Turn[] = [];
  private inflight = 0;
  private orphans = new Map<string, { at: number; events: Event[] }>();

  /** `now`: a monotonic clock in ms (performance.now()). */
  constructor(private readonly now: () => number = () => performance.now()) {}

  get turns(): readonly Turn[] {
    return this.list;
  }

  /** Whether a Say/Chat call is on its way. */
  get sending(): boolean {
    return this.inflight > 0;
  }

  /** A turn for text the person sends now; `settle` must follow once the call returns. */
  send(mode: Mode, userText: string): Turn {
    const turn = newTurn({ mode, userText, sentAt: this.now() });
    this.list.push(turn);
    this.inflight++;
    return turn;
  }

  /** The Say/Chat call of a `send` returned (accepted or not). */
  settle(): void {
    this.inflight--;
  }

  /** Takes a refused turn back out. */
  withdraw(turn: Turn): void {
    this.list = this.list.filter((t) => t !== turn);
  }

  /** The turn of an utterance. Without one: while a Say/Chat reply is in flight, `event` waits for it (null);
   * otherwise speech this page did not ask for gets a turn of its own. */
  turnFor(utteranceId: string, event: Event): Turn | null {
    if (!utteranceId) return null;
    const found = this.list.find((t) => t.utteranceId === utteranceId);
    if (found) return found;
    if (this.inflight > 0) {
      const orphan = this.orphans.get(utteranceId) ?? { at: this.now(), events: [] };
      orphan.events.push(event);
      this.orphans.set(utteranceId, orphan);
      return null;
    }
    const turn = newTurn({ utteranceId });
    this.list.push(turn);
    return turn;
  }

  /** The events that waited for `turn`'s utterance (now that its reply named it), in order; forgets them. */
  claimWaiting(turn: Turn): Event[] {
    const orphan = this.orphans.get(turn.utteranceId);
    if (!orphan) return [];
    this.orphans.delete(turn.utteranceId);
    return orphan.events;
  }

  /** Utterances whose events waited over ORPHAN_WAIT_MS get a turn of their own; `replay` gets their events. */
  adoptStale(replay: (event: Event) => void): void {
    const now = this.now();
    for (const [utteranceId, orphan] of this.orphans) {
      if (now - orphan.at > ORPHAN_WAIT_MS) {
        this.orphans.delete(utteranceId);
        this.list.push(newTurn({ utteranceId }));
        for (const event of orphan.events) replay(event);
      }
    }
  }

  /** A new session: its utterances are new. */
  forgetWaiting(): void {
    this.orphans.clear();
  }

  /** Reveals the words the screen reached (see revealWords) and measures Send → first speech on screen. Returns
   * whether anything changed. */
  follow(onScreenUs: number | null): boolean {
    const now = this.now();
    let changed = revealWords(this.list, onScreenUs, now);
    for (const turn of this.list) {
      if (turn.firstSpeechMs === null && turn.sentAt && turn.speechStartUs !== null && onScreenUs !== null) {
        if (onScreenUs >= turn.speechStartUs) {
          turn.firstSpeechMs = now - turn.sentAt;
          changed = true;
        }
      }
    }
    return changed;
  }

  latestLatency(): LatencyReadout | null {
    for (let i = this.list.length - 1; i >= 0; i--) {
      const turn = this.list[i];
      if (turn.firstSpeechMs !== null || turn.server) return { firstSpeechMs: turn.firstSpeechMs, server: turn.server };
    }
    return null;
  }

  /** The words on screen, in order. */
  shownWords(): string[] {
    return shownWords(this.list);
  }

  /** Each shown word's media start (µs), in the order of `shownWords`. */
  shownWordStartsUs(): number[] {
    return this.list.flatMap((t) => t.words.filter((w) => w.shown).map((w) => w.startUs));
  }

  /** Send → first speech on screen (ms) of each turn that measured it. */
  firstSpeechLatencies(): number[] {
    return this.list.filter((t) => t.firstSpeechMs !== null).map((t) => t.firstSpeechMs as number);
  }
}
