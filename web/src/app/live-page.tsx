"use client";

import { useCallback, useEffect, useRef, useState, useSyncExternalStore, type KeyboardEvent } from "react";
import { charCount, Controller, MAX_TEXT_CHARS, PORTRAIT_TYPES, type Snapshot } from "@/lib/controller";
import type { Mode, Turn } from "@/lib/transcript";

const EMPTY: Snapshot = {
  state: "connecting",
  sessionId: "",
  avatar: "",
  voice: "",
  avatarOptions: [],
  voiceOptions: [],
  turns: [],
  error: "",
  notice: "",
  inputError: "",
  sending: false,
  uploading: false,
  playerStatus: "idle",
  behindLiveMs: null,
  targetLatencyMs: null,
  lowLatency: true,
  latency: null,
};

const noopSubscribe = () => () => undefined;

function useController(video: React.RefObject<HTMLVideoElement | null>): [Controller | null, Snapshot] {
  const [controller, setController] = useState<Controller | null>(null);
  useEffect(() => {
    if (!video.current) return;
    const created = new Controller(video.current);
    created.start();
    setController(created);
    const onLeave = () => created.endCurrentSession();
    window.addEventListener("pagehide", onLeave);
    return () => {
      window.removeEventListener("pagehide", onLeave);
      created.dispose();
    };
  }, [video]);
  const snapshot = useSyncExternalStore(
    controller?.subscribe ?? noopSubscribe,
    () => controller?.getSnapshot() ?? EMPTY,
    () => EMPTY,
  );
  return [controller, snapshot];
}

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** The tooltip of the live-latency readout: what it measures and what the player aims for. */
function liveLatencyTitle(snap: Snapshot): string {
  const aim = snap.targetLatencyMs !== null ? `; the player aims for ${formatSeconds(snap.targetLatencyMs)}` : "";
  const mode = snap.lowLatency ? "LL-HLS" : "plain segments";
  return `Now minus the live time of the frame on screen (its PROGRAM-DATE-TIME)${aim} (${mode})`;
}

function formatMs(ms: number): string {
  return `${Math.round(ms)} ms`;
}

const STATE_LABELS: Record<Snapshot["state"], string> = {
  connecting: "Connecting",
  idle: "Listening",
  thinking: "Thinking",
  rendering: "Rendering the answer's video",
  speaking: "Speaking",
  error: "Offline",
};

export function LivePage() {
  const videoRef = useRef<HTMLVideoElement | null>(null);
  const transcriptRef = useRef<HTMLOListElement | null>(null);
  const inputRef = useRef<HTMLTextAreaElement | null>(null);
  const stickToBottom = useRef(true);
  const [controller, snap] = useController(videoRef);
  const [mode, setMode] = useState<Mode>("say");
  const [text, setText] = useState("");
  const [muted, setMuted] = useState(true);

  const length = charCount(text);
  const tooLong = length > MAX_TEXT_CHARS;

  const send = useCallback(async () => {
    if (!controller || !text.trim()) return;
    const sent = text;
    const accepted = await controller.send(sent, mode);
    if (accepted) setText((current) => (current === sent ? "" : current));
  }, [controller, text, mode]);

  const interrupt = useCallback(() => {
    void controller?.interrupt();
  }, [controller]);

  // Esc interrupts, wherever the focus is.
  useEffect(() => {
    const onKey = (event: globalThis.KeyboardEvent) => {
      if (event.key === "Escape") {
        event.preventDefault();
        interrupt();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [interrupt]);

  // Mirror the video's mute state (it starts muted so that autoplay is allowed).
  useEffect(() => {
    const video = videoRef.current;
    if (!video) return;
    const sync = () => setMuted(video.muted);
    video.addEventListener("volumechange", sync);
    return () => video.removeEventListener("volumechange", sync);
  }, []);

  const unmute = useCallback(() => {
    const video = videoRef.current;
    if (!video) return;
    video.muted = false;
    video.volume = 1;
    setMuted(false);
    void video.play().catch(() => undefined);
  }, []);

  const mute = useCallback(() => {
    const video = videoRef.current;
    if (!video) return;
    video.muted = true;
    setMuted(true);
  }, []);

  // Keep the newest words in view unless the person scrolled up to read.
  const onTranscriptScroll = useCallback(() => {
    const list = transcriptRef.current;
    if (!list) return;
    stickToBottom.current = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  }, []);
  const shownCount = snap.turns.reduce((n, t) => n + t.words.filter((w) => w.shown).length + 1, 0);
  useEffect(() => {
    const list = transcriptRef.current;
    if (list && stickToBottom.current) list.scrollTop = list.scrollHeight;
  }, [shownCount, snap.turns.length, snap.error, snap.notice]);

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      void send();
    }
  };

  const busy = snap.state === "thinking" || snap.state === "rendering" || snap.state === "speaking";
  const showSpinner = snap.playerStatus !== "playing";
  const spinnerText =
    snap.state === "error"
      ? "Reconnecting…"
      : snap.playerStatus === "retrying" || snap.playerStatus === "stalled"
        ? "Catching up with the stream…"
        : "Starting the stream…";

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true" />
          <span className="brand-name">InfiniteTalk Live</span>
        </div>
        <div className={`badge badge-${snap.state}`} title={STATE_LABELS[snap.state]}>
          <span className="badge-dot" aria-hidden="true" />
          <span id="state" data-testid="state" aria-live="polite">
            {snap.state}
          </span>
        </div>
      </header>

      <main className="layout">
        <section className="stage" aria-label="Avatar">
          <div className="video-frame">
            <video
              id="video"
              data-testid="video"
              ref={videoRef}
              muted
              autoPlay
              playsInline
              disablePictureInPicture
              aria-label="Live avatar video"
            />
            {showSpinner && (
              <div className="video-overlay" aria-hidden="true">
                <span className="spinner" />
                <span>{spinnerText}</span>
              </div>
            )}
            <div className="video-live">
              <span className="live-dot" aria-hidden="true" /> LIVE
              {snap.behindLiveMs !== null && snap.behindLiveMs >= 0 && (
                <span
                  id="live-latency"
                  data-testid="live-latency"
                  className="video-delay"
                  title={liveLatencyTitle(snap)}
                >
                  {formatSeconds(snap.behindLiveMs)} behind
                </span>
              )}
            </div>
            {muted ? (
              <button id="unmute" data-testid="unmute" type="button" className="unmute" onClick={unmute}>
                <SpeakerIcon muted /> Tap to unmute
              </button>
            ) : (
              <button id="mute" data-testid="mute" type="button" className="mute" onClick={mute} aria-label="Mute">
                <SpeakerIcon muted={false} />
              </button>
            )}
          </div>

          <div className="pickers">
            <label className="picker">
              <span>Avatar</span>
              <select
                id="avatar-select"
                data-testid="avatar-select"
                value={snap.avatar}
                disabled={!controller}
                onChange={(e) => controller?.choose(e.target.value, snap.voice)}
              >
                {snap.avatar === "" && <option value="">default</option>}
                {snap.avatarOptions.map((name) => (
                  <option key={name} value={name}>
                    {name.startsWith("portrait-") ? "your photo" : name}
                  </option>
                ))}
              </select>
            </label>
            <label className="picker">
              <span>Voice</span>
              <select
                id="voice-select"
                data-testid="voice-select"
                value={snap.voice}
                disabled={!controller}
                onChange={(e) => controller?.choose(snap.avatar, e.target.value)}
              >
                {snap.voice === "" && <option value="">default</option>}
                {snap.voiceOptions.map((name) => (
                  <option key={name} value={name}>
                    {name}
                  </option>
                ))}
              </select>
            </label>
            <label className="picker picker-photo" title="A JPEG, PNG or WebP portrait, at most 8 MiB">
              <span>{snap.uploading ? "Preparing…" : "Your photo"}</span>
              <input
                id="portrait-input"
                data-testid="portrait-input"
                type="file"
                accept={PORTRAIT_TYPES.join(",")}
                disabled={!controller || snap.uploading}
                onChange={(e) => {
                  const file = e.target.files?.[0];
                  e.target.value = ""; // choosing the same file again starts over
                  if (file) void controller?.usePortrait(file);
                }}
              />
            </label>
          </div>

          <Latency snap={snap} />
        </section>

        <section className="conversation" aria-label="Conversation">
          <div id="error" data-testid="error" role="alert" className="banner banner-error" hidden={!snap.error}>
            {snap.error}
          </div>
          <div id="notice" data-testid="notice" role="status" className="banner banner-notice" hidden={!snap.notice}>
            {snap.notice}
          </div>

          <ol
            id="transcript"
            data-testid="transcript"
            ref={transcriptRef}
            className="transcript"
            onScroll={onTranscriptScroll}
            aria-live="polite"
          >
            {snap.turns.length === 0 && (
              <li className="empty">
                <p className="empty-title">Say something</p>
                <p>
                  <b>Say</b> speaks your words as written. <b>Chat</b> answers you. Press <kbd>Enter</kbd> to send and{" "}
                  <kbd>Esc</kbd> to stop the avatar.
                </p>
              </li>
            )}
            {snap.turns.map((turn) => (
              <TurnView key={turn.key} turn={turn} avatar={snap.avatar} />
            ))}
          </ol>

          <form
            className="composer"
            onSubmit={(e) => {
              e.preventDefault();
              void send();
            }}
          >
            <div className="composer-top">
              <div className="modes" role="group" aria-label="Mode">
                <button
                  id="mode-say"
                  data-testid="mode-say"
                  type="button"
                  className="mode"
                  aria-pressed={mode === "say"}
                  onClick={() => setMode("say")}
                  title="The avatar says your words"
                >
                  Say
                </button>
                <button
                  id="mode-chat"
                  data-testid="mode-chat"
                  type="button"
                  className="mode"
                  aria-pressed={mode === "chat"}
                  onClick={() => setMode("chat")}
                  title="The avatar answers you"
                >
                  Chat
                </button>
              </div>
              <span className={`counter${tooLong ? " counter-over" : ""}`} id="char-count" aria-live="polite">
                {length.toLocaleString("en-US")} / {MAX_TEXT_CHARS.toLocaleString("en-US")}
              </span>
            </div>
            <textarea
              id="text-input"
              data-testid="text-input"
              ref={inputRef}
              value={text}
              rows={2}
              placeholder={mode === "say" ? "Type what the avatar should say…" : "Ask the avatar something…"}
              aria-label={mode === "say" ? "Text for the avatar to say" : "Message for the avatar"}
              aria-invalid={tooLong || !!snap.inputError}
              aria-describedby="input-error"
              onChange={(e) => {
                setText(e.target.value);
                controller?.clearInputError();
              }}
              onKeyDown={onKeyDown}
            />
            <div className="composer-bottom">
              <p id="input-error" data-testid="input-error" className="input-error" role="alert">
                {snap.inputError ||
                  (tooLong
                    ? `Too long: ${length.toLocaleString("en-US")} characters; the limit is ${MAX_TEXT_CHARS.toLocaleString("en-US")}.`
                    : "")}
              </p>
              <button
                id="interrupt"
                data-testid="interrupt"
                type="button"
                className={`button button-stop${busy ? " active" : ""}`}
                onClick={interrupt}
                disabled={!snap.sessionId}
                title="Stop speaking (Esc)"
              >
                <span className="stop-icon" aria-hidden="true" /> Stop
              </button>
              <button
                id="send"
                data-testid="send"
                type="submit"
                className="button button-send"
                disabled={!text.trim()}
              >
                {snap.sending ? "Sending…" : mode === "say" ? "Say" : "Send"}
              </button>
            </div>
          </form>
        </section>
      </main>
    </div>
  );
}

function Latency({ snap }: { snap: Snapshot }) {
  const latency = snap.latency;
  const server = latency?.server;
  const parts: string[] = [];
  if (server) {
    if (server.firstClauseMs > 0) parts.push(`first clause ${formatMs(server.firstClauseMs)}`);
    parts.push(`first audio ${formatMs(server.firstAudioMs)}`);
    parts.push(`first frame ${formatMs(server.firstSpeechFrameMs)}`);
    parts.push(`on playlist ${formatMs(server.firstSpeechSegmentMs)}`);
  }
  return (
    <div id="latency" data-testid="latency" className="latency">
      <div className="latency-main">
        <span className="latency-label">Send → speech on screen</span>
        <span className="latency-value">
          {latency?.firstSpeechMs != null ? formatSeconds(latency.firstSpeechMs) : "—"}
        </span>
      </div>
      <div className="latency-detail">
        {parts.length ? `server: ${parts.join(" · ")}` : "Send something to measure the latency."}
      </div>
    </div>
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

function SpeakerIcon({ muted }: { muted: boolean }) {
  return (
    <svg className="icon" viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
      <path d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z" fill="currentColor" stroke="currentColor" strokeWidth="1.2" strokeLinejoin="round" />
      {muted ? (
        <path d="M16 9.5l5 5m0-5l-5 5" stroke="currentColor" strokeWidth="2" strokeLinecap="round" fill="none" />
      ) : (
        <path
          d="M15.5 9a4 4 0 0 1 0 6M18 6.5a7.5 7.5 0 0 1 0 11"
          stroke="currentColor"
          strokeWidth="2"
          strokeLinecap="round"
          fill="none"
        />
      )}
    </svg>
  );
}
