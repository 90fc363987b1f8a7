"""The gateway's limits through a real Envoy in front of a stand-in SessionService, all on loopback: unknown Hosts,
slow uploads and slow headers, server streams longer than the request timeout, per-client rate limits, body sizes,
TCP keepalive, the heap overload action, and no credential in any log line (issue 13, "limits that hold")."""

from __future__ import annotations

import http.client
import secrets
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.model import Bucket, Limits, RateLimit
from gateway.process import envoy_argv
from gateway.render import UNKNOWN_HOST_STATUS, render_yaml
from gateway.targets import describe
from infinitetalk_live.ports import free_port
from infinitetalk_live_client.avatar.v1 import session_pb2, session_pb2_grpc
from tests.grpc_web import GRPC_WEB, grpc_frame, parse_frames, request

MIB = 1024 * 1024
CREATE = "/avatar.v1.SessionService/CreateSession"
WATCH = "/avatar.v1.SessionService/WatchSession"
SAY = "/avatar.v1.SessionService/Say"
GENEROUS = RateLimit("create_session", Bucket(600, 100), Bucket(600, 100))
NO_PROXY = [("grpc.enable_http_proxy", 0)]


# -- through a real Envoy ---------------------------------------------------------------------------------------------


class FakeSessions(session_pb2_grpc.SessionServiceServicer):
    """Answers at once and records what reached it; WatchSession streams `watch_events` events `watch_interval_s`
    apart, then stays silent for `watch_silence_s` before ending."""

    def __init__(self) -> None:
        self.portraits: list[int] = []
        self.metadata: list[dict[str, str]] = []
        self.watch_events, self.watch_interval_s, self.watch_silence_s = 1, 0.0, 0.0

    def CreateSession(self, request, context):
        self.portraits.append(len(request.portrait))
        self.metadata.append(dict(context.invocation_metadata()))
        return session_pb2.CreateSessionResponse(session=session_pb2.Session(session_id="A" * 22))

    def Say(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        return session_pb2.SayResponse()

    def WatchSession(self, request, context):
        for index in range(self.watch_events):
            if index:
                time.sleep(self.watch_interval_s)
            yield session_pb2.WatchSessionResponse()
        end = time.monotonic() + self.watch_silence_s
        while time.monotonic() < end and context.is_active():
            time.sleep(0.05)


@pytest.fixture
def sessions() -> Iterator[tuple[FakeSessions, int]]:
    fake = FakeSessions()
    server = grpc.server(futures.ThreadPoolExecutor(8), options=[("grpc.max_receive_message_length", 16 * MIB)])
    session_pb2_grpc.add_SessionServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, port
    finally:
        server.stop(0)


@dataclass
class Envoy:
    port: int
    process: subprocess.Popen
    stdout: Path
    stderr: Path

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


@contextmanager
def envoy(
    tmp_path: Path,
    session_port: int,
    *,
    limits: Limits | None = None,
    rate: RateLimit = GENEROUS,
    domains: tuple[str, ...] = (),
    log_level: str = "warn",
) -> Iterator[Envoy]:
    """Envoy with the local target's config in front of the stand-in SessionService (no packager, no page)."""
    port = free_port()
    gateway = describe(
        "local",
        port=port,
        session=f"127.0.0.1:{session_port}",
        packager_http="127.0.0.1:1",
        web_root=tmp_path / "absent",
        limits=limits or Limits(),
        create_rate=rate,
        domains=domains,
    )
    config, admin = tmp_path / f"envoy-{port}.yaml", tmp_path / f"admin-{port}"
    config.write_text(render_yaml(gateway))
    stdout, stderr = tmp_path / f"stdout-{port}.log", tmp_path / f"stderr-{port}.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(envoy_argv(config, admin, log_level), stdout=out, stderr=err)
    running = Envoy(port, process, stdout, stderr)
    try:
        deadline = time.monotonic() + 20
        while not admin.exists() or not status_of(port, "GET", "/"):
            assert process.poll() is None, running.logs()[-2000:]
            assert time.monotonic() < deadline, "envoy did not start"
            time.sleep(0.05)
        yield running
    finally:
        process.terminate()
        process.wait(10)


def status_of(port: int, method: str, path: str, **kwargs) -> int:
    return exchange(port, method, path, **kwargs)[0]


def exchange(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request (the Host header included in `headers` wins); (0, {}, b"") when nothing listens."""
    return request(port, method, path, body, headers, timeout_s=15)


def grpc_web_call(port: int, path: str, message, **headers: str) -> tuple[int, str | None, bytes]:
    """(HTTP status, grpc-status from headers or trailers, body)."""
    all_headers = {"content-type": GRPC_WEB, "x-grpc-web": "1", **{k.replace("_", "-"): v for k, v in headers.items()}}
    status, response_headers, body = exchange(port, "POST", path, grpc_frame(message), all_headers)
    _, trailers = parse_frames(body) if status == 200 else ([], {})
    return status, response_headers.get("grpc-status") or trailers.get("grpc-status"), body


def test_unknown_hosts_are_refused(sessions, tmp_path):
    _, session_port = sessions
    with envoy(tmp_path, session_port, domains=("avatar.example",)) as gateway:
        port = gateway.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost", "avatar.example"):
            status, _, body = exchange(port, "GET", "/", headers={"host": host})
            assert status == 200, (host, body)
        # A page whose name was rebound to this address sends its own name: refused, for the API as for the page.
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"localhost.:{port}"):
            assert status_of(port, "GET", "/", headers={"host": host}) == UNKNOWN_HOST_STATUS, host
        status, grpc_status, _ = grpc_web_call(port, CREATE, session_pb2.CreateSessionRequest(), host="evil.example")
        assert status == UNKNOWN_HOST_STATUS or grpc_status not in (None, "0")
        assert not sessions[0].portraits, "nothing reached the session service"


def trickle(port: int, head: bytes, interval_s: float, deadline_s: float) -> tuple[bytes, float]:
    """Sends `head`, then one byte every `interval_s` until Envoy answers and closes (or `deadline_s`): a slowloris.
    Returns (everything Envoy sent, seconds until it closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as sock:
        start = time.monotonic()
        sock.sendall(head)
        answer = b""
        while time.monotonic() - start < deadline_s:
            readable, _, _ = select.select([sock], [], [], interval_s)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                answer += chunk
            else:
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
        return answer, time.monotonic() - start


def test_slow_uploads_and_slow_headers_are_cut(sessions, tmp_path):
    fake, session_port = sessions
    limits = Limits(request_timeout_s=2, request_headers_timeout_s=2)
    with envoy(tmp_path, session_port, limits=limits) as gateway:
        host = f"127.0.0.1:{gateway.port}"
        for content_type in (GRPC_WEB, "application/octet-stream"):
            head = (
                f"POST {CREATE} HTTP/1.1\r\nHost: {host}\r\ncontent-type: {content_type}\r\nx-grpc-web: 1\r\n"
                f"content-length: {MIB}\r\n\r\n"
            ).encode()
            answer, seconds = trickle(gateway.port, head, 0.2, 15)
            assert 1.5 < seconds < 6, (content_type, seconds, answer[:200])
            status_line = answer.split(b"\r\n", 1)[0]
            # 408, or for gRPC-Web a gRPC error in a 200 answer: never an answer from the session service.
            assert b" 408 " in status_line or (b" 200 " in status_line and b"grpc-status: 0" not in answer), answer
        assert not fake.portraits
        # Headers sent a byte at a time (on the HLS route) are cut by the headers timeout.
        head = f"GET /hls/a/index.m3u8 HTTP/1.1\r\nHost: {host}\r\nx-a: ".encode()
        answer, seconds = trickle(gateway.port, head, 0.2, 15)
        assert 1.5 < seconds < 6, (seconds, answer[:200])


def watch(port: int) -> tuple[int, dict[str, str], float, str | None]:
    """WatchSession over gRPC-Web (HTTP/1.1), read to its end: (messages, trailers, seconds, the error that broke the
    stream, if one did)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.monotonic()
    messages, trailers, broken = 0, {}, None
    try:
        body = grpc_frame(session_pb2.WatchSessionRequest(session_id="A" * 22))
        connection.request("POST", WATCH, body, {"content-type": GRPC_WEB, "x-grpc-web": "1"})
        response = connection.getresponse()
        assert response.status == 200
        while len(header := response.read(5)) == 5:
            payload = response.read(struct.unpack(">I", header[1:])[0])
            if header[0] & 0x80:
                trailers = parse_frames(header + payload)[1]
            else:
                messages += 1
    except (http.client.HTTPException, OSError, ValueError) as error:
        broken = type(error).__name__
    finally:
        connection.close()
    return messages, trailers, time.monotonic() - start, broken


def test_server_streams_outlive_the_request_timeout_and_silent_ones_are_cut(sessions, tmp_path):
    fake, session_port = sessions
    limits = Limits(request_timeout_s=1, stream_idle_timeout_s=2)
    with envoy(tmp_path, session_port, limits=limits) as gateway:
        # 7 events 0.5 s apart: 3 s, three times the request timeout; never silent for the idle timeout.
        fake.watch_events, fake.watch_interval_s = 7, 0.5
        count, trailers, seconds, broken = watch(gateway.port)
        assert broken is None and count == 7 and trailers.get("grpc-status") == "0", (count, trailers, broken)
        assert seconds >= 2.9
        # The same over gRPC (HTTP/2) straight to Envoy.
        with grpc.insecure_channel(f"127.0.0.1:{gateway.port}", options=NO_PROXY) as channel:
            stream = session_pb2_grpc.SessionServiceStub(channel).WatchSession(
                session_pb2.WatchSessionRequest(session_id="A" * 22), timeout=30
            )
            assert len(list(stream)) == 7
        # One event, then silence: cut after the idle timeout, not after the 10 s the stream would last.
        fake.watch_events, fake.watch_silence_s = 1, 10
        count, trailers, seconds, broken = watch(gateway.port)
        assert trailers.get("grpc-status") != "0" and 1.5 < seconds < 6, (count, trailers, seconds, broken)


def test_create_session_is_rate_limited_per_client(sessions, tmp_path):
    fake, session_port = sessions
    rate = RateLimit("create_session", anonymous=Bucket(1, 2), with_credential=Bucket(1, 3))
    request = session_pb2.CreateSessionRequest()
    with envoy(tmp_path, session_port, rate=rate, limits=Limits(trusted_hops=1)) as gateway:
        port = gateway.port

        def create(client: str, **headers: str) -> str | None:
            status, grpc_status, _ = grpc_web_call(port, CREATE, request, x_forwarded_for=client, **headers)
            assert status == 200
            return grpc_status

        # gRPC-Web: the burst passes, then RESOURCE_EXHAUSTED (8), not UNAVAILABLE, which clients would retry.
        assert [create("203.0.113.7") for _ in range(3)] == ["0", "0", "8"]
        # Plain HTTP from the same client: 429.
        assert status_of(port, "POST", CREATE, body=b"x", headers={"x-forwarded-for": "203.0.113.7"}) == 429
        # Another client (the address Envoy trusts, one hop back) has its own bucket.
        assert create("203.0.113.8") == "0"
        # A caller with a credential has its own bucket too: anonymous callers from its address do not starve it.
        bearer = f"Bearer {secrets.token_urlsafe(16)}"
        assert [create("203.0.113.7", authorization=bearer) for _ in range(4)] == ["0", "0", "0", "8"]
        # Other calls are not limited.
        say = session_pb2.SayRequest(session_id="A" * 22, text="hi")
        assert {grpc_web_call(port, SAY, say, x_forwarded_for="203.0.113.7")[1] for _ in range(5)} == {"0"}
        # gRPC over HTTP/2, straight to Envoy: RESOURCE_EXHAUSTED as well.
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=NO_PROXY) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            metadata = [("x-forwarded-for", "203.0.113.9")]
            stub.CreateSession(request, metadata=metadata, timeout=10)
            stub.CreateSession(request, metadata=metadata, timeout=10)
            with pytest.raises(grpc.RpcError) as refused:
                stub.CreateSession(request, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(fake.portraits) == 2 + 1 + 3 + 2
        assert bearer not in gateway.logs()


def test_a_forged_forwarded_for_does_not_escape_the_bucket(sessions, tmp_path):
    _, session_port = sessions
    rate = RateLimit("create_session", anonymous=Bucket(1, 1), with_credential=Bucket(1, 1))
    with envoy(tmp_path, session_port, rate=rate) as gateway:  # trusted_hops 0: the peer's address is the client
        request = session_pb2.CreateSessionRequest()
        assert grpc_web_call(gateway.port, CREATE, request, x_forwarded_for="198.51.100.1")[1] == "0"
        assert grpc_web_call(gateway.port, CREATE, request, x_forwarded_for="198.51.100.2")[1] == "8"


def test_only_the_portrait_route_takes_a_large_body(sessions, tmp_path):
    fake, session_port = sessions
    with envoy(tmp_path, session_port) as gateway:
        portrait = session_pb2.CreateSessionRequest(portrait=b"\xff" * (11 * MIB))
        status, grpc_status, _ = grpc_web_call(gateway.port, CREATE, portrait)
        assert (status, grpc_status) == (200, "0") and fake.portraits == [11 * MIB]
        say = session_pb2.SayRequest(session_id="A" * 22, text="x" * (65 * 1024))
        status, grpc_status, _ = grpc_web_call(gateway.port, SAY, say)
        assert status == 413 and grpc_status not in (None, "0")
        assert status_of(gateway.port, "POST", "/hls/a/index.m3u8", body=b"x" * (100 * 1024)) == 413
        assert status_of(gateway.port, "POST", WATCH, body=b"x" * (100 * 1024)) == 413
        assert len(fake.portraits) == 1


@pytest.mark.parametrize("log_level", ["debug", "trace"])
def test_credentials_reach_the_session_service_and_no_log_line(sessions, tmp_path, log_level):
    """Envoy prints whole request headers at debug and trace; gateway.process keeps those loggers at info."""
    fake, session_port = sessions
    with envoy(tmp_path, session_port, log_level=log_level) as gateway:
        token = secrets.token_urlsafe(24)
        headers = {"authorization": f"Bearer {token}", "origin": f"http://127.0.0.1:{gateway.port}"}
        assert grpc_web_call(gateway.port, CREATE, session_pb2.CreateSessionRequest(), **headers)[1] == "0"
        assert grpc_web_call(gateway.port, SAY, session_pb2.SayRequest(session_id="A" * 22), **headers)[1] == "0"
        assert [m.get("authorization") for m in fake.metadata] == [f"Bearer {token}"] * 2
        # A page may send it: the preflight allows it.
        _, preflight, _ = exchange(
            gateway.port,
            "OPTIONS",
            SAY,
            headers={
                "origin": headers["origin"],
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type,x-grpc-web",
            },
        )
        assert "authorization" in preflight["access-control-allow-headers"].split(",")
        time.sleep(0.5)  # the access log is flushed by time
    logs = gateway.logs()
    assert f'"level":"{log_level}"' in logs, f"Envoy logged at {log_level}"
    assert SAY in gateway.stdout.read_text(), "the access log has the request"
    assert token not in logs


def test_accepted_connections_have_tcp_keepalive(sessions, tmp_path):
    _, session_port = sessions
    with envoy(tmp_path, session_port) as gateway:
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()  # the connection stays open (keep-alive)
            client_port = connection.sock.getsockname()[1]
            timers = []
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, timer = fields[1], fields[2], fields[5]
                if int(local.split(":")[1], 16) == gateway.port and int(remote.split(":")[1], 16) == client_port:
                    timers.append(timer)
            assert len(timers) == 1, "Envoy's end of the connection"
            kind, when = timers[0].split(":")
            assert kind == "02", "the keepalive timer runs on the accepted socket"
            assert int(when, 16) <= 30 * 100 + 100  # TCP_KEEPIDLE 30 s, in USER_HZ ticks
        finally:
            connection.close()


def test_the_heap_overload_action_refuses_new_requests(sessions, tmp_path):
    _, session_port = sessions
    with envoy(tmp_path, session_port, limits=Limits(max_heap_bytes=1 * MIB)) as gateway:
        deadline = time.monotonic() + 10
        while (status := status_of(gateway.port, "GET", "/")) != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 503, "Envoy's heap is far above 1 MiB: stop_accepting_requests answers 503"
