"""The Node.js client package (clients/node) as an app installs it: packed with `npm pack`, installed into an empty
folder, and a Node script driving a real stack with API keys through it: over gRPC (HTTP/2 straight to the session
service) and over gRPC-Web through Envoy. Create (with the key), watch, say, interrupt, chat, end, and refusals whose
ApiError carries the gRPC code, the sentence and the decoded google.rpc details."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parent.parent
CLIENT = REPO / "clients" / "node"
KEY = secrets.token_urlsafe(32)

# The app's script: it only knows the package's public API (see clients/node/README.md).
DRIVER = r"""
// Drives a running stack through @infinitetalk/live-client as an app's backend would: node drive.mjs grpc|grpc-web
// BASE_URL (the API key in $INFINITETALK_API_KEY). Prints one JSON report for the test to check.
import { ApiError, connect } from "@infinitetalk/live-client";

const [transport, baseUrl] = process.argv.slice(2);
const report = { transport, events: [] };
setTimeout(() => {
  console.log(JSON.stringify({ ...report, timedOut: true }));
  process.exit(2);
}, 60_000).unref();

/** A refused call as the report shows it: what a caller can branch on. */
async function refusal(call) {
  try {
    await call();
  } catch (e) {
    return {
      isApiError: e instanceof ApiError,
      code: e.codeName,
      message: e.rawMessage,
      details: e.details.map((d) => d.$typeName),
      badRequestFields: e.badRequest?.fieldViolations.map((v) => v.field) ?? [],
      resource: e.resourceInfo ? [e.resourceInfo.resourceType, e.resourceInfo.resourceName] : null,
    };
  }
  return null;
}

const anonymous = connect({ baseUrl, transport });
report.noKey = await refusal(() => anonymous.createSession());
anonymous.close();

const client = connect({ baseUrl, transport, apiKey: process.env.INFINITETALK_API_KEY });
const session = await client.createSession();
report.session = { sessionId: session.sessionId, tokenLength: session.controlToken.length, ...session.grant() };

// Follow the events while we steer; `until` resolves once an event matches.
const waiters = [];
const watching = (async () => {
  for await (const event of session.watch()) {
    const { raw, time, ...plain } = event;
    report.events.push({ ...plain, hasTime: time instanceof Date });
    for (const waiter of waiters.splice(0)) {
      if (waiter.match(event)) waiter.resolve(event);
      else waiters.push(waiter);
    }
  }
  report.watchEnded = true;
})().catch((e) => (report.watchError = String(e)));
const until = (match) =>
  new Promise((resolve) => {
    const seen = report.events.find(match);
    seen ? resolve(seen) : waiters.push({ match, resolve });
  });

await until((e) => e.kind === "state");
report.said = await session.say("Hello from Node.");
await until((e) => e.kind === "speechFinished" && e.utteranceId === report.said);
report.long = await session.say("This sentence goes on and on, and it will be cut short before it reaches its end.");
await until((e) => e.kind === "word" && e.utteranceId === report.long);
report.interrupted = await session.interrupt();
await until((e) => e.kind === "speechFinished" && e.utteranceId === report.long);
report.chat = await session.chat("Hi!");
report.tooLong = await refusal(() => session.say("x".repeat(6000)));
const stranger = client.attach({ sessionId: session.sessionId, controlToken: "x".repeat(32) });
report.otherToken = await refusal(() => stranger.say("Hi."));
await session.end();
await Promise.race([watching, new Promise((r) => setTimeout(r, 10_000))]);
report.afterEnd = await refusal(() => session.say("Still there?"));
client.close();
console.log(JSON.stringify(report));
process.exit(0);
"""


def npm(*args: str, cwd: Path, timeout_s: float = 240) -> str:
    """npm quietly, from its cache where it can (the registry otherwise); fails with npm's own output."""
    command = ["npm", *args, "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, f"{' '.join(command)} in {cwd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@functools.cache
def build_client() -> Path:
    """clients/node as a checkout builds it: `npm ci` installs the pinned buf, protoc-gen-es and tsc, and its
    `prepare` script generates the code from protos/ and compiles it to dist/ (so it is never stale here)."""
    npm("ci", cwd=CLIENT)
    assert (CLIENT / "dist" / "index.d.ts").is_file() and (CLIENT / "dist" / "gen" / "avatar" / "v1").is_dir()
    return CLIENT


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    """An empty app folder with the packed package installed (what `npm install @infinitetalk/live-client` gives)."""
    build_client()
    folder = tmp_path_factory.mktemp("node-app")
    npm("pack", "--pack-destination", str(folder), cwd=CLIENT)  # prepack: generate and compile again
    (tarball,) = folder.glob("infinitetalk-live-client-*.tgz")
    (folder / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    npm("install", str(tarball), cwd=folder)
    installed = folder / "node_modules" / "@infinitetalk" / "live-client"
    assert not installed.is_symlink() and (installed / "dist" / "index.js").is_file()
    assert not (installed / "src").exists(), "the package ships its compiled code and declarations only"
    (folder / "drive.mjs").write_text(DRIVER)
    return folder


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keyed_stack() -> AsyncIterator[Supervisor]:
    async with Supervisor(StackPorts.free(), extra_env={"SESSION_API_KEYS": KEY}, report=False).running() as running:
        yield running


async def drive(app: Path, transport: str, base_url: str) -> dict:
    env = {"PATH": os.environ["PATH"], "INFINITETALK_API_KEY": KEY}
    result = await asyncio.to_thread(
        subprocess.run,
        ["node", "drive.mjs", transport, base_url],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, f"{transport}: {result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_report(report: dict, gateway_url: str) -> None:
    # A call without the key is refused, and says what to send.
    assert report["noKey"]["isApiError"] and report["noKey"]["code"] == "UNAUTHENTICATED", report["noKey"]
    assert "API key" in report["noKey"]["message"]

    # The session: what a backend hands its browser, and nothing of the key.
    session = report["session"]
    assert session["tokenLength"] >= 22
    assert session["playlistUrl"].startswith(gateway_url + "/hls/"), session
    assert set(session) == {"sessionId", "tokenLength", "controlToken", "playlistUrl", "mediaEpoch"}
    assert KEY not in json.dumps(session)

    # Events, typed: the current state first; words with media times; started/finished; latency figures.
    events = report["events"]
    assert events[0]["kind"] == "state" and events[0]["state"] in ("idle", "speaking", "thinking"), events[0]
    assert all(e["hasTime"] for e in events)
    said = report["said"]
    words = [e for e in events if e["kind"] == "word" and e["utteranceId"] == said]
    assert [w["word"].strip(".,!").lower() for w in words] == ["hello", "from", "node"], words
    assert all(0 <= w["startUs"] < w["endUs"] for w in words)
    assert [w["startUs"] for w in words] == sorted(w["startUs"] for w in words)
    started = next(e for e in events if e["kind"] == "speechStarted" and e["utteranceId"] == said)
    assert started["source"] == "say" and started["startUs"] <= words[0]["startUs"]
    finished = {e["utteranceId"]: e for e in events if e["kind"] == "speechFinished"}
    assert finished[said]["reason"] == "completed" and finished[said]["endUs"] >= words[-1]["endUs"]
    latency = next(e for e in events if e["kind"] == "latency" and e["utteranceId"] == said)
    assert 0 < latency["firstAudioUs"] <= latency["firstSpeechSegmentUs"], latency

    # Interrupt cuts the utterance in progress.
    assert report["interrupted"]["utteranceId"] == report["long"] and report["interrupted"]["cutAtUs"] > 0
    assert finished[report["long"]]["reason"] == "interrupted"
    assert report["chat"] and report["chat"] not in (said, report["long"])

    # Refusals: code, sentence, and the google.rpc details decoded.
    too_long = report["tooLong"]
    assert too_long["code"] == "INVALID_ARGUMENT" and "5000" in too_long["message"], too_long
    assert too_long["details"] == ["google.rpc.BadRequest"] and too_long["badRequestFields"] == ["text"]
    assert report["otherToken"]["code"] == "PERMISSION_DENIED", report["otherToken"]
    after_end = report["afterEnd"]
    assert after_end["code"] == "NOT_FOUND" and "google.rpc.ResourceInfo" in after_end["details"], after_end
    assert after_end["resource"] == ["session", session["sessionId"]]

    # End: the watch sees it and finishes.
    assert any(e["kind"] == "state" and e["state"] == "ended" for e in events) or report.get("watchEnded")
    assert "watchError" not in report, report.get("watchError")


async def test_grpc_to_the_session_service(app, keyed_stack) -> None:
    report = await drive(app, "grpc", f"http://{keyed_stack.ports.addr('session')}")
    check_report(report, keyed_stack.ports.gateway_url)


async def test_grpc_web_through_the_gateway(app, keyed_stack) -> None:
    report = await drive(app, "grpc-web", keyed_stack.ports.gateway_url)
    check_report(report, keyed_stack.ports.gateway_url)
