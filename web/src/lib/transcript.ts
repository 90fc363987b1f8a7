// The transcript: one turn per utterance (what the person sent, and the avatar's words as they reach the screen).
// Pure data and functions, no DOM, so the page and tests share them.

export type Mode = "say" | "chat";
export type Finish = "completed" | "interrupted" | "failed";

export interface Word {
  index: number;
  text: string;
  startUs: number;
  receivedAt: number; // performance.now() when the event arrived
  shown: boolean;
}

export interface ServerLatency {
  firstClauseMs: number;
  firstAudioMs: number;
  firstSpeechFrameMs: number;
  firstSpeechSegmentMs: number;
}

export interface Turn {
  key: string;
  utteranceId: string;
  /** Empty for speech this page did not ask for (another client on the same session). */
  mode: Mode | "";
  userText: string;
  /** performance.now() when Send was pressed; 0 when not sent from this page. */
  sentAt: number;
  words: Word[];
  speechStartUs: number | null;
  /** Send → first speech on screen, measured by the page. */
  firstSpeechMs: number | null;
  server: ServerLatency | null;
  finish: Finish | null;
  spokenText: string;
  error: string;
}

let nextKey = 0;

export function newTurn(fields: Partial<Turn>): Turn {
  return {
    key: `t${++nextKey}`,
    utteranceId: "",
    mode: "",
    userText: "",
    sentAt: 0,
    words: [],
    speechStartUs: null,
    firstSpeechMs: null,
    server: null,
    finish: null,
    spokenText: "",
    error: "",
    ...fields,
  };
}

/** Adds a word in order of its index (events come in order, but a reconnect may repeat one). */
export function addWord(turn: Turn, word: Omit<Word, "shown">): void {
  if (turn.words.some((w) => w.index === word.index)) return;
  const item: Word = { ...word, shown: false };
  const at = turn.words.findIndex((w) => w.index > word.index);
  if (at < 0) turn.words.push(item);
  else turn.words.splice(at, 0, item);
}

/**
 * Reveals the words whose start the screen has reached. `onScreenUs` null means no clock (video not playing):
 * then a word shows `holdMs` after it arrived. A word also shows once it is `maxHoldMs` old, whatever the clock
 * says, so a stuck player never hides the transcript. Returns whether anything changed.
 */
export function revealWords(
  turns: Turn[],
  onScreenUs: number | null,
  now: number,
  holdMs = 1500,
  maxHoldMs = 6000,
): boolean {
  let changed = false;
  for (const turn of turns) {
    for (const word of turn.words) {
      if (word.shown) continue;
      const age = now - word.receivedAt;
      const due = onScreenUs !== null ? word.startUs <= onScreenUs : age >= holdMs;
      if (due || age >= maxHoldMs) {
        word.shown = true;
        changed = true;
      }
    }
  }
  return changed;
}

export function shownWords(turns: Turn[]): string[] {
  const out: string[] = [];
  for (const turn of turns) for (const word of turn.words) if (word.shown) out.push(word.text);
  return out;
}

export function turnText(turn: Turn): string {
  return turn.words
    .filter((w) => w.shown)
    .map((w) => w.text)
    .join(" ");
}
