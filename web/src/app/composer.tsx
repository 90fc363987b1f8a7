// Where the person types (the form under the transcript): Say or Chat, the text with its character counter, the
// reason a text was refused (#input-error), Stop and Send. Enter sends, Shift+Enter is a new line; the text is
// cleared only once the server accepted it, so a refused or failed text stays for Send again.
import { useCallback, useState, type KeyboardEvent } from "react";
import type { Controller } from "@/lib/controller";
import { charCount, MAX_TEXT_CHARS, tooLongMessage } from "@/lib/limits";
import { isBusy } from "@/lib/page-text";
import type { Snapshot } from "@/lib/snapshot";
import type { Mode } from "@/lib/transcript";

type ComposerSnapshot = Pick<Snapshot, "state" | "sessionId" | "inputError" | "sending">;

interface ComposerProps {
  controller: Controller | null;
  snap: ComposerSnapshot;
  onInterrupt: () => void;
}

export function Composer({ controller, snap, onInterrupt }: ComposerProps) {
  const [mode, setMode] = useState<Mode>("say");
  const [text, setText] = useState("");

  const length = charCount(text);
  const tooLong = length > MAX_TEXT_CHARS;

  const send = useCallback(async () => {
    if (!controller || !text.trim()) return;
    const sent = text;
    const accepted = await controller.send(sent, mode);
    if (accepted) setText((current) => (current === sent ? "" : current));
  }, [controller, text, mode]);

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      void send();
    }
  };

  return (
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
          {snap.inputError || tooLongMessage(length)}
        </p>
        <button
          id="interrupt"
          data-testid="interrupt"
          type="button"
          className={`button button-stop${isBusy(snap.state) ? " active" : ""}`}
          onClick={onInterrupt}
          disabled={!snap.sessionId}
          title="Stop speaking (Esc)"
        >
          <span className="stop-icon" aria-hidden="true" /> Stop
        </button>
        <button id="send" data-testid="send" type="submit" className="button button-send" disabled={!text.trim()}>
          {snap.sending ? "Sending…" : mode === "say" ? "Say" : "Send"}
        </button>
      </div>
    </form>
  );
}
