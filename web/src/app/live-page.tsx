"use client";

// The one screen: lays out the stage (video, pickers, latency) and the conversation (banners, transcript, composer)
// around the page's Controller; Esc stops the avatar wherever the focus is. Each part is its own component; this
// file only composes them.
import { useCallback, useEffect, useRef } from "react";
import { Composer } from "./composer";
import { LatencyPanel } from "./latency-panel";
import { Pickers } from "./pickers";
import { TopBar } from "./top-bar";
import { Transcript } from "./transcript-view";
import { useController } from "./use-controller";
import { VideoStage } from "./video-stage";

export function LivePage() {
  const videoRef = useRef<HTMLVideoElement | null>(null);
  const [controller, snap] = useController(videoRef);

  const interrupt = useCallback(() => {
    void controller?.interrupt();
  }, [controller]);
  useEscapeKey(interrupt);

  return (
    <div className="app">
      <TopBar state={snap.state} />

      <main className="layout">
        <section className="stage" aria-label="Avatar">
          <VideoStage videoRef={videoRef} snap={snap} />
          <Pickers controller={controller} snap={snap} />
          <LatencyPanel latency={snap.latency} />
        </section>

        <section className="conversation" aria-label="Conversation">
          <div id="error" data-testid="error" role="alert" className="banner banner-error" hidden={!snap.error}>
            {snap.error}
          </div>
          <div id="notice" data-testid="notice" role="status" className="banner banner-notice" hidden={!snap.notice}>
            {snap.notice}
          </div>
          <Transcript turns={snap.turns} avatar={snap.avatar} error={snap.error} notice={snap.notice} />
          <Composer controller={controller} snap={snap} onInterrupt={interrupt} />
        </section>
      </main>
    </div>
  );
}

/** Calls `onEscape` when Esc is pressed anywhere on the page (and keeps the key from doing anything else). */
function useEscapeKey(onEscape: () => void): void {
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") {
        event.preventDefault();
        onEscape();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onEscape]);
}
