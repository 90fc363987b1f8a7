// The session loop against a fake server: create, watch, replace, retry, end. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  SessionSchema,
  SessionState,
  WatchSessionResponseSchema,
  type Session,
  type WatchSessionResponse,
} from "../gen/avatar/v1/session_pb";
import type { SessionClient } from "./api";
import { Notices } from "./notices";
import type { RestartReason } from "./session-failures";
import { SessionKeeper } from "./session-keeper";
import type { SessionRequest, SessionSource } from "./session-source";

/** One WatchSession stream the test feeds; it fails as cancelled when the keeper aborts it. */
class FakeStream {
  private queue: Array<{ event?: WatchSessionResponse; error?: unknown }> = [];
  private wake: (() => void) | null = null;

  constructor(
    readonly sessionId: string,
    signal: AbortSignal | undefined,
  ) {
    signal?.addEventListener("abort", () => this.fail(new ConnectError("aborted", Code.Canceled)));
  }

  send(event: WatchSessionResponse): void {
    this.queue.push({ event });
    this.wake?.();
  }

  fail(error: unknown): void {
    this.queue.push({ error });
    this.wake?.();
  }

  async *events(): AsyncGenerator<WatchSessionResponse> {
    for (;;) {
      while (!this.queue.length) await new Promise<void>((resolve) => (this.wake = resolve));
      const item = this.queue.shift() as { event?: WatchSessionResponse; error?: unknown };
      if (item.error) throw item.error;
      yield item.event as WatchSessionResponse;
    }
  }
}

const idle = create(WatchSessionResponseSchema, {
  event: { case: "stateChanged", value: { state: SessionState.IDLE } },
});

function fakeServer() {
  let made = 0;
  const server = {
    requests: [] as SessionRequest[],
    /** Errors the next CreateSession calls throw, in order. */
    createErrors: [] as unknown[],
    ended: [] as string[],
    streams: [] as FakeStream[],
    adopted: [] as Array<{ id: string; reason: RestartReason }>,
    events: [] as Array<{ sessionId: string; first: boolean }>,
  };
  const source: SessionSource = {
    kind: "gateway",
    async create(request) {
      server.requests.push(request);
      const error = server.createErrors.shift();
      if (error) throw error;
      made++;
      const avatar = request.portrait ? `portrait-${made}` : request.avatar || "ada";
      return create(SessionSchema, {
        sessionId: `s${made}`,
        controlToken: `token-${made}`,
        avatar,
        voice: request.voice || "en",
        playlistPath: `/hls/s${made}/index.m3u8`,
      });
    },
  };
  const client = {
    getCatalog: async () => ({ avatars: [{ name: "ada" }, { name: "bo" }], voices: [{ name: "en" }] }),
    endSession: async ({ sessionId }: { sessionId: string }) => {
      server.ended.push(sessionId);
      return {};
    },
    watchSession: ({ sessionId }: { sessionId: string }, options: { signal?: AbortSignal }) => {
      const stream = new FakeStream(sessionId, options.signal);
      server.streams.push(stream);
      return stream.events();
    },
  } as unknown as SessionClient;
  const notices = new Notices(() => undefined);
  const keeper = new SessionKeeper(client, client, source, notices, {
    adopted: (session: Session, reason: RestartReason) => server.adopted.push({ id: session.sessionId, reason }),
    event: (_event, first) => server.events.push({ sessionId: keeper.session?.sessionId ?? "", first }),
    changed: () => undefined,
  });
  return { server, keeper, notices };
}

async function until(condition: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** The stream watching `sessionId` now (the newest one for it). */
function streamOf(server: ReturnType<typeof fakeServer>["server"], sessionId: string): FakeStream | undefined {
  return server.streams.filter((s) => s.sessionId === sessionId).at(-1);
}

test("makes a session, watches it, and reads the catalog", async () => {
  const { server, keeper } = fakeServer();
  assert.equal(await keeper.waitForSession(1), null);
  const waiting = keeper.waitForSession(3000);
  void keeper.run();
  assert.equal((await waiting)?.sessionId, "s1");
  assert.deepEqual(server.adopted, [{ id: "s1", reason: "" }]);
  await until(() => server.streams.length === 1, "the watch");
  assert.equal(keeper.watching, false);
  server.streams[0].send(idle);
  server.streams[0].send(idle);
  await until(() => server.events.length === 2, "the events");
  assert.deepEqual(server.events, [
    { sessionId: "s1", first: true },
    { sessionId: "s1", first: false },
  ]);
  assert.equal(keeper.watching, true);
  assert.deepEqual(keeper.catalog, { avatars: ["ada", "bo"], voices: ["en"] });
  assert.equal(keeper.avatar, "ada");
  keeper.dispose();
  assert.deepEqual(server.ended, ["s1"]);
});

test("a lost session is replaced (and not ended); a switch ends the old one", async () => {
  const { server, keeper } = fakeServer();
  void keeper.run();
  await until(() => server.streams.length === 1, "the first watch");
  server.streams[0].fail(new ConnectError("no such session", Code.NotFound));
  await until(() => keeper.session?.sessionId === "s2", "the new session");
  assert.deepEqual(server.adopted.at(-1), { id: "s2", reason: "gone" });
  assert.deepEqual(server.ended, []);

  await until(() => streamOf(server, "s2") !== undefined, "the second watch");
  keeper.choose("bo", "en");
  await until(() => keeper.session?.sessionId === "s3", "the switched session");
  assert.deepEqual(server.adopted.at(-1), { id: "s3", reason: "switch" });
  assert.deepEqual(server.requests.at(-1), { avatar: "bo", voice: "en", portrait: undefined });
  assert.deepEqual(server.ended, ["s2"]);
  keeper.choose("bo", "en"); // the session already has them: nothing happens
  assert.equal(keeper.session?.sessionId, "s3");
  keeper.dispose();
});

test("while the server is away: offline, then back once a session is made", async () => {
  const { server, keeper, notices } = fakeServer();
  server.createErrors.push(new ConnectError("down", Code.Unavailable));
  void keeper.run();
  await until(() => notices.offline, "the offline banner");
  await until(() => keeper.session !== null, "the retried session");
  assert.equal(notices.offline, false);
  assert.equal(server.requests.length, 2);
  keeper.dispose();
});

test("an avatar the server does not take falls back to its defaults", async () => {
  const { server, keeper, notices } = fakeServer();
  keeper.choose("zed", "en");
  server.createErrors.push(new ConnectError("no avatar named zed", Code.InvalidArgument));
  void keeper.run();
  await until(() => keeper.session !== null, "the default session");
  assert.deepEqual(
    server.requests.map((r) => r.avatar),
    ["zed", ""],
  );
  assert.equal(notices.lastError, "no avatar named zed");
  keeper.dispose();
});

test("a photo's session replaces the current one, which is ended; the loop watches the new one", async () => {
  const { server, keeper } = fakeServer();
  void keeper.run();
  await until(() => server.streams.length === 1, "the first watch");
  assert.equal(await keeper.replaceWithPortrait(new Uint8Array([1, 2, 3])), true);
  assert.equal(keeper.session?.sessionId, "s2");
  assert.equal(keeper.isPortrait("portrait-2"), true);
  assert.deepEqual(server.adopted.at(-1), { id: "s2", reason: "" });
  assert.deepEqual(server.ended, ["s1"]);
  await until(() => streamOf(server, "s2") !== undefined, "the photo session's watch");

  // It expires: the new session animates the same photo.
  streamOf(server, "s2")?.fail(new ConnectError("no such session", Code.NotFound));
  await until(() => keeper.session?.sessionId === "s3", "the re-created photo session");
  assert.deepEqual(server.requests.at(-1)?.portrait, new Uint8Array([1, 2, 3]));
  keeper.dispose();
  assert.deepEqual(server.ended, ["s1", "s3"]);
});
