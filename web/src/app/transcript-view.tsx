// The conversation as it is spoken (#transcript): one entry per turn, what the person sent and the avatar's words as
// they reach the screen, with the turn's latency, finish and error. It keeps the newest words in view unless the
// person scrolled up to read.
import { useCallback, useEffect, useRef } from "react";
import { formatSeconds } from "@/lib/page-text";
import type { Turn } from "@/lib/transcript";

/** How close to the bottom (px) still counts as reading the newest words. */
const STICK_TO_BOTTOM_PX = 48;

interface TranscriptProps {
  turns: Turn[];
  avatar: string;
  /** The banners above the list: when they come or go the list's height changes, so it scrolls again. */
  error: string;
  notice: string;
}

export function Transcript({ turns, avatar, error, notice }: TranscriptProps) {
  const listRef = useRef<HTMLOListElement | null>(null);
  const stickToBottom = useRef(true);

  const onScroll = useCallback(() => {
    const list = listRef.current;
    if (!list) return;
    stickToBottom.current = list.scrollHeight - list.scrollTop - list.clientHeight < STICK_TO_BOTTOM_PX;
  }, []);
  const shownCount = turns.reduce((n, t) => n + t.words.filter((w) => w.shown).length + 1, 0);
  useEffect(() => {
    const list = listRef.current;
    if (list && stickToBottom.current) list.scrollTop = list.scrollHeight;
  }, [shownCount, turns.length, error, notice]);

  return (
    <ol
      id="transcript"
      data-testid="transcript"
      ref={listRef}
      className="transcript"
      onScroll={onScroll}
      aria-live="polite"
    >
      {turns.length === 0 && (
        <li className="empty">
          <p className="empty-title">Say something</p>
          <p>
            <b>Say</b> speaks your words as written. <b>Chat</b> answers you. Press <kbd>Enter</kbd> to send and{" "}
            <kbd>Esc</kbd> to stop the avatar.
          </p>
        </li>
      )}
      {turns.map((turn) => (
        <TurnView key={turn.key} turn={turn} avatar={avatar} />
      ))}
    </ol>
  );
}

function TurnView({ turn, avatar }: { turn: Turn; avatar: string }) {
  const shown = turn.words.filter((w) => w.shown);
  const waiting = shown.length === 0 && !turn.finish && !turn.error;
  return (
    <li className="turn" data-utterance={turn.utteranceId || undefined}>
      {turn.userText && (
        <div className="bubble bubble-user">
          <span className="bubble-tag">{turn.mode === "chat" ? "You asked" : "You said"}</span>
          <p>{turn.userText}</p>
        </div>
      )}
      <div className="bubble bubble-avatar">
        <span className="bubble-tag">
          {avatar || "Avatar"}
          {turn.firstSpeechMs !== null && (
            <span className="chip" title="From pressing Send to the first speech on screen">
              {formatSeconds(turn.firstSpeechMs)}
            </span>
          )}
          {turn.finish === "interrupted" && <span className="chip chip-warn">interrupted</span>}
          {turn.finish === "failed" && <span className="chip chip-error">failed</span>}
        </span>
        {waiting ? (
          <span className="typing" aria-label="waiting for speech">
            <i />
            <i />
            <i />
          </span>
        ) : (
          <p className="words">
            {shown.map((w) => (
              <span key={w.index} className="word">
                {w.text}{" "}
              </span>
            ))}
            {shown.length === 0 && turn.finish && <span className="muted">(nothing was spoken)</span>}
          </p>
        )}
        {turn.error && <p className="turn-error">{turn.error}</p>}
      </div>
    </li>
  );
}
