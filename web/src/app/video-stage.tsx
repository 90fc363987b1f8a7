// The live video and what sits on it: the "starting / catching up" overlay, the LIVE badge with how far the picture is
// behind real time (#live-latency), and the sound switch (#unmute while muted, #mute otherwise). The video starts
// muted so that autoplay is allowed; the switch mirrors its mute state.
import { useCallback, useEffect, useState, type RefObject } from "react";
import { formatSeconds, liveLatencyTitle, spinnerText } from "@/lib/page-text";
import type { Snapshot } from "@/lib/snapshot";

type StageSnapshot = Pick<Snapshot, "state" | "playerStatus" | "behindLiveMs" | "targetLatencyMs" | "lowLatency">;

export function VideoStage({ videoRef, snap }: { videoRef: RefObject<HTMLVideoElement | null>; snap: StageSnapshot }) {
  const [muted, unmute, mute] = useSound(videoRef);
  return (
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
      {snap.playerStatus !== "playing" && (
        <div className="video-overlay" aria-hidden="true">
          <span className="spinner" />
          <span>{spinnerText(snap.state, snap.playerStatus)}</span>
        </div>
      )}
      <div className="video-live">
        <span className="live-dot" aria-hidden="true" /> LIVE
        {snap.behindLiveMs !== null && snap.behindLiveMs >= 0 && (
          <span id="live-latency" data-testid="live-latency" className="video-delay" title={liveLatencyTitle(snap)}>
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
  );
}

/** The video's mute state, mirrored (it may change from the browser's own controls), with unmute and mute. */
function useSound(videoRef: RefObject<HTMLVideoElement | null>): [boolean, () => void, () => void] {
  const [muted, setMuted] = useState(true);

  useEffect(() => {
    const video = videoRef.current;
    if (!video) return;
    const sync = () => setMuted(video.muted);
    video.addEventListener("volumechange", sync);
    return () => video.removeEventListener("volumechange", sync);
  }, [videoRef]);

  const unmute = useCallback(() => {
    const video = videoRef.current;
    if (!video) return;
    video.muted = false;
    video.volume = 1;
    setMuted(false);
    void video.play().catch(() => undefined);
  }, [videoRef]);

  const mute = useCallback(() => {
    const video = videoRef.current;
    if (!video) return;
    video.muted = true;
    setMuted(true);
  }, [videoRef]);

  return [muted, unmute, mute];
}

function SpeakerIcon({ muted }: { muted: boolean }) {
  return (
    <svg className="icon" viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
      <path
        d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z"
        fill="currentColor"
        stroke="currentColor"
        strokeWidth="1.2"
        strokeLinejoin="round"
      />
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
