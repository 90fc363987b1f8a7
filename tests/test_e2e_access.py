"""The access contract on a real stack with API keys: through gRPC directly and through Envoy with gRPC-Web.

An API key creates sessions; a session's control token steers and watches that session only; the playlist URL's
stream id only lets one watch the video; keys and tokens appear in no log line (services at DEBUG)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from infinitetalk_live.client import SessionClient, control_metadata
from infinitetalk_live.hls import fetch_playlist
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2, session_pb2_grpc
from tests.grpc_web import create_session, end_session, first_watch_event, grpc_web_status

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FULL_KEY = secrets.token_urlsafe(32)  # every grant
PLAIN_KEY = secrets.token_urlsafe(32)  # no grant: live pacing, the default voice and LLM
SIGNING_KEY = secrets.token_urlsafe(32)  # viewer URLs signed, expiring with their session
UNAUTHENTICATED = str(grpc.StatusCode.UNAUTHENTICATED.value[0])
PERMISSION_DENIED = str(grpc.StatusCode.PERMISSION_DENIED.value[0])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keyed() -> AsyncIterator[tuple[Supervisor, Path]]:
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-access-"))
    env = {"SESSION_API_KEYS": f"{FULL_KEY}:*,{PLAIN_KEY}", "LOG_LEVEL": "DEBUG", "HLS_SIGNING_KEY": SIGNING_KEY}
    async with Supervisor(StackPorts.free(), log_dir=logs, extra_env=env, report=False).running() as supervisor:
        yield supervisor, logs


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def refused(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    return caught.value.details()


async def test_keys_create_sessions_and_tokens_steer_only_their_own(keyed) -> None:
    stack, logs = keyed
    seen_secrets = [FULL_KEY, PLAIN_KEY]
    async with grpc.aio.insecure_channel(stack.ports.addr("session")) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        create = session_pb2.CreateSessionRequest()
        message = await refused(stub.CreateSession(create), grpc.StatusCode.UNAUTHENTICATED)
        assert "API key" in message and "authorization: Bearer" in message
        await refused(stub.CreateSession(create, metadata=bearer("x" * 40)), grpc.StatusCode.UNAUTHENTICATED)
        a = (await stub.CreateSession(create, metadata=bearer(PLAIN_KEY))).session
        b = (await stub.CreateSession(create, metadata=bearer(FULL_KEY))).session
        seen_secrets += [a.control_token, b.control_token]
        try:
            for session in (a, b):
                assert len(session.control_token) >= 22  # at least 128 random bits, URL-safe
                assert session.stream_id and session.stream_id != session.session_id
                assert f"/{session.stream_id}~" in session.playlist_path  # signed: HLS_SIGNING_KEY
                assert session.session_id not in session.playlist_path
                assert session.control_token not in session.playlist_path
                assert session.expire_time.seconds > 0
            say_a = session_pb2.SayRequest(session_id=a.session_id, text="Hello.")
            url_a = stack.ports.gateway_url + a.playlist_path
            # No token; B's token on A; the playlist's stream id as if it were a session id; an unknown session.
            await refused(stub.Say(say_a), grpc.StatusCode.UNAUTHENTICATED)
            wrong = await refused(stub.Say(say_a, metadata=control_metadata(b)), grpc.StatusCode.PERMISSION_DENIED)
            by_stream = session_pb2.SayRequest(session_id=a.stream_id[:22], text="Hello.")
            for call in (
                stub.Say(by_stream, metadata=control_metadata(a)),
                stub.Say(session_pb2.SayRequest(session_id="A" * 22, text="Hi."), metadata=control_metadata(a)),
            ):
                assert await refused(call, grpc.StatusCode.PERMISSION_DENIED) == wrong, "nothing revealed"
            for call in (
                stub.Interrupt(session_pb2.InterruptRequest(session_id=a.session_id), metadata=control_metadata(b)),
                stub.EndSession(session_pb2.EndSessionRequest(session_id=a.session_id), metadata=control_metadata(b)),
                stub.Chat(session_pb2.ChatRequest(session_id=a.session_id, text="Hi."), metadata=control_metadata(b)),
            ):
                await refused(call, grpc.StatusCode.PERMISSION_DENIED)
            watch = stub.WatchSession(
                session_pb2.WatchSessionRequest(session_id=a.session_id), metadata=control_metadata(b)
            )
            await refused(watch.read(), grpc.StatusCode.PERMISSION_DENIED)
            # A control token is not an API key.
            await refused(stub.CreateSession(create, metadata=control_metadata(a)), grpc.StatusCode.UNAUTHENTICATED)
            # A's own token steers A; the playlist URL plays.
            assert (await stub.Say(say_a, metadata=control_metadata(a))).utterance_id
            async with asyncio.timeout(10):  # the first segment is a second away
                while not ((playlist := await asyncio.to_thread(fetch_playlist, url_a)) and playlist.segments):
                    await asyncio.sleep(0.2)
            # The viewer URL is signed with the session's expiry: altered, or bare, it is refused.
            stream, expires, signature = a.playlist_path.split("/")[2].split("~")
            assert stream == a.stream_id and int(expires) == a.expire_time.seconds
            for forged in (f"{stream}~{int(expires) + 3600}~{signature}", stream):
                url = f"{stack.ports.gateway_url}/hls/{forged}/index.m3u8"
                status = await asyncio.to_thread(http_status, url)
                assert status == 403, (forged, status)
            # Grants: a key without them gets live pacing with the server's voice and LLM only.
            for options, voice in (
                (session_pb2.SessionOptions(pacing=session_pb2.PACING_OFFLINE), ""),
                (session_pb2.SessionOptions(llm_provider="offline"), ""),
                (session_pb2.SessionOptions(), "no-such-voice"),
            ):
                request = session_pb2.CreateSessionRequest(options=options, voice=voice)
                message = await refused(
                    stub.CreateSession(request, metadata=bearer(PLAIN_KEY)), grpc.StatusCode.PERMISSION_DENIED
                )
                assert "grant" in message
            # Ended: only the token's holder learns it.
            await stub.EndSession(session_pb2.EndSessionRequest(session_id=a.session_id), metadata=control_metadata(a))
            assert "ended" in await refused(stub.Say(say_a, metadata=control_metadata(a)), grpc.StatusCode.NOT_FOUND)
            await refused(stub.Say(say_a, metadata=control_metadata(b)), grpc.StatusCode.PERMISSION_DENIED)
        finally:
            for session in (a, b):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.EndSession(
                        session_pb2.EndSessionRequest(session_id=session.session_id),
                        metadata=control_metadata(session),
                    )
    await assert_no_secret_logged(logs, seen_secrets)


async def test_the_same_rules_through_envoy_with_grpc_web(keyed) -> None:
    stack, logs = keyed
    port = stack.ports.gateway
    code, message, _ = await asyncio.to_thread(
        grpc_web_status, port, "CreateSession", session_pb2.CreateSessionRequest()
    )
    assert code == UNAUTHENTICATED and "API key" in message
    a = await asyncio.to_thread(create_session, port, PLAIN_KEY)
    b = await asyncio.to_thread(create_session, port, FULL_KEY)
    try:
        say_a = session_pb2.SayRequest(session_id=a.session_id, text="Hello.")
        code, _, _ = await asyncio.to_thread(grpc_web_status, port, "Say", say_a)
        assert code == UNAUTHENTICATED
        code, _, _ = await asyncio.to_thread(grpc_web_status, port, "Say", say_a, b.control_token)
        assert code == PERMISSION_DENIED
        watch_a = session_pb2.WatchSessionRequest(session_id=a.session_id)
        code, _, _ = await asyncio.to_thread(grpc_web_status, port, "WatchSession", watch_a, b.control_token)
        assert code == PERMISSION_DENIED
        code, _, _ = await asyncio.to_thread(
            grpc_web_status, port, "CreateSession", session_pb2.CreateSessionRequest(), a.control_token
        )
        assert code == UNAUTHENTICATED
        code, _, messages = await asyncio.to_thread(grpc_web_status, port, "Say", say_a, a.control_token)
        assert code == "0" and session_pb2.SayResponse.FromString(messages[0]).utterance_id
        first = await asyncio.to_thread(first_watch_event, port, a)
        assert first.WhichOneof("event") == "state_changed"
    finally:
        for session in (a, b):
            await asyncio.to_thread(end_session, port, session)
    await assert_no_secret_logged(logs, [FULL_KEY, PLAIN_KEY, a.control_token, b.control_token])


async def test_a_session_that_is_only_watched_still_expires() -> None:
    """The idle timeout counts steering, not watching: a forgotten tab that watches does not hold a place."""
    env = {"SESSION_IDLE_TIMEOUT_S": "2"}
    async with Supervisor(StackPorts.free(), extra_env=env, report=False, gateway=False).running() as stack:
        client = SessionClient(stack.ports.addr("session"))
        try:
            session = await client.create()
            watch = client.stub.WatchSession(
                session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
            )
            async with asyncio.timeout(30):
                while (event := await watch.read()) is not grpc.aio.EOF:
                    if event.WhichOneof("event") == "state_changed" and event.state_changed.state == (
                        session_pb2.SESSION_STATE_ENDED
                    ):
                        break
            await refused(
                client.stub.Say(
                    session_pb2.SayRequest(session_id=session.session_id, text="Hi."),
                    metadata=control_metadata(session),
                ),
                grpc.StatusCode.NOT_FOUND,
            )
        finally:
            await client.close()


async def assert_no_secret_logged(logs: Path, secret_values: list[str]) -> None:
    await asyncio.sleep(0.5)  # let the processes flush
    assert_no_secret_in(logs, secret_values)


def assert_no_secret_in(logs: Path, secret_values: list[str]) -> None:
    files = list(logs.glob("*.log"))
    assert files, "the stack wrote logs"
    for path in files:
        text = path.read_text(errors="replace")
        for value in secret_values:
            assert value not in text, f"a key or token appears in {path.name}"
