// The page's one Controller, tied to React: created once the <video> exists, started, ended with the page (pagehide
// ends the session at once; unmount disposes it), and read as snapshots with useSyncExternalStore.
import { useEffect, useState, useSyncExternalStore, type RefObject } from "react";
import { Controller } from "@/lib/controller";
import { EMPTY_SNAPSHOT, type Snapshot } from "@/lib/snapshot";

const noopSubscribe = () => () => undefined;

/** The controller (null until the video element is there) and its latest snapshot. */
export function useController(video: RefObject<HTMLVideoElement | null>): [Controller | null, Snapshot] {
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
    () => controller?.getSnapshot() ?? EMPTY_SNAPSHOT,
    () => EMPTY_SNAPSHOT,
  );
  return [controller, snapshot];
}
