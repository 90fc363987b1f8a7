// The page's header: the brand and the avatar's state badge (#state, which the browser tests read).
import { STATE_LABELS } from "@/lib/page-text";
import type { UiState } from "@/lib/snapshot";

export function TopBar({ state }: { state: UiState }) {
  return (
    <header className="topbar">
      <div className="brand">
        <span className="brand-mark" aria-hidden="true" />
        <span className="brand-name">InfiniteTalk Live</span>
      </div>
      <div className={`badge badge-${state}`} title={STATE_LABELS[state]}>
        <span className="badge-dot" aria-hidden="true" />
        <span id="state" data-testid="state" aria-live="polite">
          {state}
        </span>
      </div>
    </header>
  );
}
