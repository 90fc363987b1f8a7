// An app's backend, in plain node:http: it holds the InfiniteTalk API key and creates a session when its user asks,
// handing the browser only that session's id, control token and view-only playlist URL. The page then steers the
// session itself through the gateway with the token (README "Security"); the key never leaves this process.
//
//   INFINITETALK_API_KEY=...  INFINITETALK_ADDR=127.0.0.1:50051  PORT=3000  ALLOWED_ORIGINS=http://127.0.0.1:8080
//   node server.js
import http from "node:http";
import { ApiError, Code, connect } from "@infinitetalk/live-client";

const addr = process.env.INFINITETALK_ADDR ?? "127.0.0.1:50051";
const client = connect({
  baseUrl: addr.includes("://") ? addr : `http://${addr}`,
  transport: "grpc",
  apiKey: process.env.INFINITETALK_API_KEY,
});
// The page's origin when it is not this server's (the gateway serves it): it may call us from there.
const allowed = new Set((process.env.ALLOWED_ORIGINS ?? "").split(",").filter(Boolean));
// Sessions this backend created, so /api/session/end ends only its own.
const sessions = new Map();

const STATUS = {
  [Code.InvalidArgument]: 400,
  [Code.ResourceExhausted]: 503,
  [Code.Unavailable]: 502,
  [Code.DeadlineExceeded]: 504,
};

async function createSession(body) {
  // A real app authenticates its user here (its own cookie or token) and decides what they may create.
  const handle = await client.createSession({ avatar: String(body.avatar ?? ""), voice: String(body.voice ?? "") });
  sessions.set(handle.sessionId, handle);
  return handle.grant(); // { sessionId, controlToken, playlistUrl, mediaEpoch }: no key
}

async function endSession(body) {
  const handle = sessions.get(body.sessionId);
  if (!handle) return { ended: false };
  sessions.delete(body.sessionId);
  await handle.end().catch(() => undefined); // already over: nothing to do
  return { ended: true };
}

const ROUTES = { "/api/session": createSession, "/api/session/end": endSession };

function send(req, res, status, value) {
  const origin = req.headers.origin;
  if (origin && allowed.has(origin)) {
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("access-control-allow-credentials", "true");
    res.setHeader("vary", "origin");
  }
  if (req.method === "OPTIONS") {
    res.setHeader("access-control-allow-methods", "POST");
    res.setHeader("access-control-allow-headers", "content-type");
    res.setHeader("access-control-max-age", "600");
  }
  res.writeHead(status, value === undefined ? {} : { "content-type": "application/json", "cache-control": "no-store" });
  res.end(value === undefined ? undefined : JSON.stringify(value));
}

async function readJson(req) {
  let text = "";
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 4096) throw new Error("too large");
  }
  return text ? JSON.parse(text) : {};
}

const server = http.createServer(async (req, res) => {
  const started = Date.now();
  res.on("finish", () => console.log(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started} ms`));
  const route = ROUTES[new URL(req.url, "http://localhost").pathname];
  if (!route) return send(req, res, 404, { code: "NOT_FOUND", message: "no such endpoint" });
  if (req.method === "OPTIONS") return send(req, res, 204);
  if (req.method !== "POST") return send(req, res, 405, { code: "INVALID_ARGUMENT", message: "use POST" });
  let body;
  try {
    body = await readJson(req);
  } catch {
    return send(req, res, 400, { code: "INVALID_ARGUMENT", message: "the body is not JSON of at most 4 KiB" });
  }
  try {
    send(req, res, 200, await route(body));
  } catch (error) {
    // The API's code and sentence go to the page (they name no secret, and the page shows them as it would the
    // API's own); the HTTP status says whether trying again later may help.
    const e = ApiError.from(error);
    console.error(`${req.url}: ${e.message}`);
    send(req, res, STATUS[e.code] ?? 500, { code: e.codeName, message: e.rawMessage });
  }
});

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`backend: http://${address}:${port}/api/session`);
});
