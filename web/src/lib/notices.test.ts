// The page's messages: which one the banner shows, how long each lasts. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { UNREACHABLE_MESSAGE } from "./errors";
import { newSessionNotice, NOTICE_MS, Notices, SESSION_ERROR_MS } from "./notices";

function notices(): { notices: Notices; changes: () => number; at: (ms: number) => void } {
  let now = 0;
  let changes = 0;
  const n = new Notices(
    () => changes++,
    () => now,
  );
  return { notices: n, changes: () => changes, at: (ms) => (now = ms) };
}

test("the banner: unreachable first, then the page's error, then the server's session error", () => {
  const { notices: n } = notices();
  assert.equal(n.bannerError, "");
  n.setSessionError("Problem on the server — tts: down");
  assert.equal(n.bannerError, "Problem on the server — tts: down");
  n.setError("No room — retrying…");
  assert.equal(n.bannerError, "No room — retrying…");
  n.setOffline(true);
  assert.equal(n.bannerError, UNREACHABLE_MESSAGE);
  assert.equal(n.offline, true);
  n.setOffline(false);
  assert.equal(n.bannerError, "No room — retrying…");
});

test("lastError is the newest failure anywhere; clearing one does not forget it", () => {
  const { notices: n } = notices();
  assert.equal(n.lastError, null);
  n.setOffline(true);
  assert.equal(n.lastError, UNREACHABLE_MESSAGE);
  n.setInputError("Too many requests");
  assert.equal(n.lastError, "Too many requests");
  n.clearInputError();
  assert.equal(n.currentInputError, "");
  assert.equal(n.lastError, "Too many requests");
});

test("a notice fades; the server's session error ends after a while or when speech resumes", () => {
  const { notices: n, at } = notices();
  n.setNotice("Now: avatar “ada”, voice “en”.");
  n.setSessionError("Problem on the server — video: slow");
  at(NOTICE_MS);
  n.tick();
  assert.equal(n.currentNotice, "Now: avatar “ada”, voice “en”.");
  at(NOTICE_MS + 1);
  n.tick();
  assert.equal(n.currentNotice, "");
  assert.notEqual(n.bannerError, "");
  at(SESSION_ERROR_MS + 1);
  n.tick();
  assert.equal(n.bannerError, "");
  n.setSessionError("again");
  n.clearSessionError();
  assert.equal(n.bannerError, "");
});

test("stalls become one notice once the episode settles", () => {
  const { notices: n, at } = notices();
  n.addStall({ startUs: 0, endUs: 500_000, reason: "late" });
  n.tick();
  assert.equal(n.currentNotice, "");
  at(1000);
  n.tick();
  assert.match(n.currentNotice, /^The picture fell behind for 0\.5 s \(the server is busy\)/);
});

test("a new session clears the old one's troubles and says why it came", () => {
  const { notices: n, changes } = notices();
  n.setOffline(true);
  n.setError("Could not start a session — retrying…");
  n.addStall({ startUs: 0, endUs: 500_000, reason: "late" });
  const before = changes();
  n.sessionStarted("gone", { avatar: "ada", voice: "en", isPortrait: false });
  assert.ok(changes() > before);
  assert.equal(n.offline, false);
  assert.equal(n.bannerError, "");
  assert.equal(n.currentNotice, "The session ended — started a new one.");
  n.tick(); // the old session's stalls were forgotten
  assert.equal(n.currentNotice, "The session ended — started a new one.");
});

test("the new-session notice", () => {
  const ada = { avatar: "ada", voice: "en", isPortrait: false };
  assert.equal(newSessionNotice("", ada), "");
  assert.equal(newSessionNotice("gone", ada), "The session ended — started a new one.");
  assert.equal(newSessionNotice("switch", ada), "Now: avatar “ada”, voice “en”.");
  assert.equal(newSessionNotice("switch", { ...ada, isPortrait: true }), "Now: your photo, voice “en”.");
});
