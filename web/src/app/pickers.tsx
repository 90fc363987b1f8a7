// What the avatar is: the avatar and voice pickers (each choice makes a new session) and "Your photo" (a portrait
// upload that, once the server accepts it, replaces the session with one animating the photo).
import type { Controller } from "@/lib/controller";
import { PORTRAIT_TYPES } from "@/lib/limits";
import { avatarLabel } from "@/lib/page-text";
import type { Snapshot } from "@/lib/snapshot";

type PickerSnapshot = Pick<Snapshot, "avatar" | "voice" | "avatarOptions" | "voiceOptions" | "uploading">;

export function Pickers({ controller, snap }: { controller: Controller | null; snap: PickerSnapshot }) {
  return (
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
              {avatarLabel(name)}
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
  );
}
