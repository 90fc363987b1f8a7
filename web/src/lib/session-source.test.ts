// Embedded mode's session source: the backend URL, the grant it answers with, and its errors (`npm test`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describeError } from "./errors";
import {
  backendUrlFrom,
  BackendSessionSource,
  pageSessionSource,
  sessionFromGrant,
  type SessionSource,
} from "./session-source";

const GRANT = {
  sessionId: "s1",
  controlToken: "token-1",
  playlistUrl: "http://127.0.0.1:8080/hls/abc/index.m3u8",
  mediaEpoch: "2026-01-02T03:04:05.678Z",
};

function fakeFetch(status: number, body: unknown, seen: Array<{ url: string; init?: RequestInit }> = []): typeof fetch {
  return async (input, init) => {
    seen.push({ url: String(input), init });
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  };
}

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected a refusal");
}

test("the backend URL comes from ?backend= first, then the build's setting", () => {
  assert.equal(backendUrlFrom("", undefined), null);
  assert.equal(backendUrlFrom("?ll=0", ""), null);
  assert.equal(backendUrlFrom("?backend=http%3A%2F%2F127.0.0.1%3A3000%2F", undefined), "http://127.0.0.1:3000");
  assert.equal(backendUrlFrom("", "https://app.example/"), "https://app.example");
  assert.equal(backendUrlFrom("?backend=http://a:1", "https://b"), "http://a:1");
  assert.throws(() => backendUrlFrom("?backend=javascript:alert(1)", undefined));
});

test("a grant becomes the page's session, with its media epoch", () => {
  const session = sessionFromGrant(GRANT);
  assert.equal(session.sessionId, "s1");
  assert.equal(session.controlToken, "token-1");
  assert.equal(session.playlistUrl, GRANT.playlistUrl);
  assert.equal(session.mediaEpoch && timestampMs(session.mediaEpoch), Date.parse(GRANT.mediaEpoch));
  assert.equal(sessionFromGrant({ ...GRANT, mediaEpoch: undefined }).mediaEpoch, undefined);
  assert.throws(() => sessionFromGrant({ sessionId: "s1", playlistUrl: "x" }), /controlToken/);
});

test("the page asks the backend with a POST and no credential of its own", async () => {
  const seen: Array<{ url: string; init?: RequestInit }> = [];
  const source = new BackendSessionSource("http://127.0.0.1:3000", fakeFetch(200, GRANT, seen));
  const session = await source.create({ avatar: "drawn", voice: "" }, 5000);
  assert.equal(session.controlToken, "token-1");
  assert.equal(session.avatar, "drawn", "what was asked for, when the grant does not say");
  assert.equal(seen[0].url, "http://127.0.0.1:3000/api/session");
  assert.equal(seen[0].init?.method, "POST");
  assert.deepEqual(JSON.parse(String(seen[0].init?.body)), { avatar: "drawn", voice: "" });
  assert.deepEqual(Object.keys(seen[0].init?.headers ?? {}), ["content-type"]);
});

const ASK = { avatar: "", voice: "" };

test("the backend's refusals read like the API's own", async () => {
  const busy = { code: "RESOURCE_EXHAUSTED", message: "no room for another session; try again later" };
  const err = await refusal(new BackendSessionSource("http://b", fakeFetch(503, busy)).create(ASK, 5000));
  assert.equal(err.code, Code.ResourceExhausted);
  assert.equal(describeError(err).kind, "busy");
  const down = await refusal(new BackendSessionSource("http://b", fakeFetch(502, "<html>")).create(ASK, 5000));
  assert.equal(describeError(down).kind, "unreachable");
  const gone: typeof fetch = async () => {
    throw new TypeError("Failed to fetch");
  };
  const unreachable = await refusal(new BackendSessionSource("http://b", gone).create(ASK, 5000));
  assert.equal(unreachable.code, Code.Unavailable);
  const photo = await refusal(
    new BackendSessionSource("http://b", fakeFetch(200, GRANT)).create({ ...ASK, portrait: new Uint8Array(1) }, 5000),
  );
  assert.equal(describeError(photo).kind, "invalid");
});

test("the page's source: the backend it names, else the gateway; a bad backend URL refuses why", async () => {
  const gateway: SessionSource = { kind: "gateway", create: () => Promise.reject(new Error("not called")) };
  assert.equal(pageSessionSource("", undefined, () => gateway), gateway);
  const named = pageSessionSource("?backend=http://127.0.0.1:9000", undefined, () => gateway);
  assert.ok(named instanceof BackendSessionSource);
  assert.ok(pageSessionSource("", "https://app.example", () => gateway) instanceof BackendSessionSource);
  const bad = pageSessionSource("?backend=ftp://files.example", undefined, () => gateway);
  assert.equal(bad.kind, "backend");
  const error = await refusal(bad.create({ avatar: "", voice: "" }, 1000));
  assert.equal(error.code, Code.InvalidArgument);
  assert.match(describeError(error).detail, /is not http\(s\)/);
});
