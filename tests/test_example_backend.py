"""The worked integration: examples/node-backend holds the API key and creates sessions; the page, in embedded mode
(`/?backend=<its URL>`), gets its session from it, speaks through the gateway with the session's control token, and
never sees the key: not in any request or response it makes (URL, headers, body), nor in its storage or cookies."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from infinitetalk_live.ports import StackPorts, free_port
from infinitetalk_live.stack import Supervisor
from tests.browser import launched_chromium
from tests.test_client_node import build_client, npm

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "node-backend"
KEY = secrets.token_urlsafe(32)
SENTENCE = "Hello from the embedded page."
CREATE_PATH = "/avatar.v1.SessionService/CreateSession"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keyed_stack() -> AsyncIterator[Supervisor]:
    async with Supervisor(StackPorts.free(), extra_env={"SESSION_API_KEYS": KEY}, report=False).running() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def backend(keyed_stack) -> AsyncIterator[str]:
    """The example backend as its README runs it (`npm ci`, `node server.js`); yields its base URL."""
    await asyncio.to_thread(build_client)
    await asyncio.to_thread(npm, "ci", cwd=EXAMPLE)
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "INFINITETALK_API_KEY": KEY,
        "INFINITETALK_ADDR": keyed_stack.ports.addr("session"),
        "PORT": str(port),
        "ALLOWED_ORIGINS": keyed_stack.ports.gateway_url,
    }
    process = await asyncio.create_subprocess_exec(
        "node", "server.js", cwd=EXAMPLE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    drain = None
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line.startswith(b"backend: "), line
        drain = asyncio.create_task(keep_lines(process.stdout))
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()
        if drain is not None:
            await drain


BACKEND_LOG: list[str] = []


async def keep_lines(stream: asyncio.StreamReader) -> None:
    """The backend's request log, kept for a failing test's report (and so its pipe never fills)."""
    async for line in stream:
        BACKEND_LOG.append(line.decode(errors="replace").rstrip())


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator:
    async with launched_chromium() as launched:
        yield launched


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_backend_hands_out_a_session_and_never_the_key(backend, keyed_stack) -> None:
    status, grant = await asyncio.to_thread(post_json, f"{backend}/api/session", {})
    assert status == 200, grant
    assert set(grant) == {"sessionId", "controlToken", "playlistUrl", "mediaEpoch"}, grant
    assert KEY not in json.dumps(grant)
    assert grant["playlistUrl"].startswith(keyed_stack.ports.gateway_url + "/hls/")
    # The backend ends only its own sessions.
    assert await asyncio.to_thread(post_json, f"{backend}/api/session/end", {"sessionId": "A" * 22}) == (
        200,
        {"ended": False},
    )
    assert await asyncio.to_thread(post_json, f"{backend}/api/session/end", {"sessionId": grant["sessionId"]}) == (
        200,
        {"ended": True},
    )
    # The API's refusal reaches the caller as its code and sentence.
    status, refusal = await asyncio.to_thread(post_json, f"{backend}/api/session", {"avatar": "no-such-avatar"})
    assert status == 400 and refusal["code"] == "INVALID_ARGUMENT", refusal


async def test_embedded_page_speaks_without_seeing_the_key(backend, keyed_stack, browser) -> None:
    gateway = keyed_stack.ports.gateway_url
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request))
    try:
        await page.goto(f"{gateway}/?backend={urllib.parse.quote(backend, safe='')}")
        try:
            await page.wait_for_function("() => window.__avatar && window.__avatar.sessionId", timeout=60_000)
        except Exception as error:  # say what the page and the backend saw, not only that time ran out
            hook = await page.evaluate("() => JSON.stringify(window.__avatar ?? null)")
            asked = [f"{r.method} {r.url} {r.failure or ''}" for r in requests]
            raise AssertionError(f"no session: hook={hook} requests={asked} backend={BACKEND_LOG}") from error
        await page.wait_for_function("() => document.querySelector('#state').textContent.trim() === 'idle'")
        await page.click("#mode-say")
        await page.fill("#text-input", SENTENCE)
        await page.click("#send")
        expected = [w.strip(".").lower() for w in SENTENCE.split()]
        await page.wait_for_function("(n) => window.__avatar.words.length >= n", arg=len(expected), timeout=30_000)
        hook = await page.evaluate("() => window.__avatar")
        assert [w.strip(".,").lower() for w in hook["words"]][: len(expected)] == expected, hook["words"]

        # The session came from the backend, not from CreateSession on the gateway; Say carried its token.
        asked = [r for r in requests if r.url == f"{backend}/api/session" and r.method == "POST"]
        assert asked, [r.url for r in requests]  # once, or again after a slow start on a loaded machine
        grants = [await (await r.response()).json() for r in asked]
        grant = next(g for g in grants if g.get("sessionId") == hook["sessionId"])
        assert set(grant) == {"sessionId", "controlToken", "playlistUrl", "mediaEpoch"}
        assert hook["sessionId"] == grant["sessionId"] and hook["playlistUrl"] == grant["playlistUrl"]
        assert not [r.url for r in requests if r.url.endswith(CREATE_PATH)]
        says = [r for r in requests if r.url == f"{gateway}/avatar.v1.SessionService/Say"]
        assert says and (await says[0].all_headers())["authorization"] == f"Bearer {grant['controlToken']}"

        # Nowhere the page looks: URLs, headers and bodies both ways, storage, cookies, the DOM and its hook.
        secret = KEY.encode()
        checked = 0
        for request in list(requests):
            headers = json.dumps(await request.all_headers()).encode()
            seen = [request.url.encode(), headers, request.post_data_buffer or b""]
            response = await request.response()
            if response is not None:
                seen.append(json.dumps(await response.all_headers()).encode())
                if "WatchSession" not in request.url:  # an open stream has no whole body yet
                    try:
                        seen.append(await response.body())
                        checked += 1
                    except Exception:  # a body the browser did not keep (aborted, redirected)
                        pass
            assert not any(secret in part for part in seen), f"the API key reached the page: {request.url}"
        assert checked >= 5, "response bodies were checked"
        storage = await page.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie,"
            " document.documentElement.outerHTML, window.__avatar])"
        )
        assert KEY not in storage
        assert KEY not in json.dumps(await context.cookies())
    finally:
        await context.close()
