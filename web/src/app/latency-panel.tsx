// The latency readout under the video (#latency): Send → speech on screen as the page measured it, and the server's
// breakdown of the same turn (first clause, audio, frame, on the playlist).
import { formatSeconds, serverLatencyParts } from "@/lib/page-text";
import type { LatencyReadout } from "@/lib/snapshot";

export function LatencyPanel({ latency }: { latency: LatencyReadout | null }) {
  const parts = serverLatencyParts(latency?.server);
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
