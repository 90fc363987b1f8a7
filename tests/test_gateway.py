"""The Envoy gateway: rendered configs Envoy accepts, and raw gRPC-Web, CORS, HLS and the page through a real Envoy."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.model import Address, Gateway
from gateway.process import envoy_argv, envoy_binary
from gateway.render import render_yaml
from gateway.targets import K8S_WEB_ROOT, REPO_ROOT, describe
from infinitetalk_live.ports import free_port
from infinitetalk_live_client.avatar.v1 import session_pb2
from tests.grpc_web import (
    GRPC_WEB,
    create_session,
    end_session,
    first_watch_event,
    grpc_frame,
    grpc_web,
    parse_frames,
    request,
)
from tests.test_e2e_pipeline import segments_on

stack_loop = pytest.mark.asyncio(loop_scope="session")  # the shared stack fixture lives on the session loop

PREFLIGHT_HEADERS = "content-type,x-grpc-web,x-user-agent"


def render(target: str, *args: str, env: dict[str, str] | None = None) -> str:
    """`python -m gateway render`, as a person runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "render", "--target", target, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def validate(config: str, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(config)
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def make_web_root(root: Path) -> Path:
    """A stand-in for a Next.js static export."""
    (root / "_next" / "static" / "chunks").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>avatar</title><div id=root></div>")
    (root / "404.html").write_text("<!doctype html><title>missing</title>")
    (root / "_next" / "static" / "chunks" / "main-abc123.js").write_text("console.log('hi');")
    (root / "_next" / "static" / "chunks" / "app.css").write_text("body{margin:0}")
    (root / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
    return root


def connection_manager(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def filenames(node) -> Iterator[str]:
    """Every `filename:` in a config: the files Envoy reads."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "filename":
                yield value
            else:
                yield from filenames(value)
    elif isinstance(node, list):
        for item in node:
            yield from filenames(item)


# -- rendering ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["local", "k8s"])
def test_rendered_configs_pass_envoy_validate(target, tmp_path):
    validate(render(target), tmp_path, f"{target}-default")
    web = make_web_root(tmp_path / "out")
    validate(render(target, "--web-root", str(web), "--port", "9000"), tmp_path, f"{target}-page")
    validate(render(target, "--web-root", str(tmp_path / "absent")), tmp_path, f"{target}-fallback")


def test_targets_differ_only_in_addresses():
    local = yaml.safe_load(render("local"))
    k8s = yaml.safe_load(render("k8s"))
    assert local["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert k8s["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == "0.0.0.0"
    endpoints = {
        name: {
            c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            for c in config["static_resources"]["clusters"]
        }
        for name, config in (("local", local), ("k8s", k8s))
    }
    assert endpoints["local"]["session"] == {"address": "127.0.0.1", "port_value": 50051}
    assert endpoints["k8s"]["session"] == {"address": "session", "port_value": 50051}
    assert endpoints["k8s"]["packager"] == {"address": "packager", "port_value": 8088}
    assert (
        connection_manager(local)["route_config"]["virtual_hosts"][0]["routes"][:2]
        == (connection_manager(k8s)["route_config"]["virtual_hosts"][0]["routes"][:2])
    )
    http_filters = [f["name"] for f in connection_manager(local)["http_filters"]]
    assert http_filters[:2] == ["envoy.filters.http.grpc_web", "envoy.filters.http.cors"]
    assert http_filters[-1] == "envoy.filters.http.router"


@pytest.mark.parametrize("target", ["local", "k8s"])
def test_admin_is_on_loopback_only(target):
    config = yaml.safe_load(render(target, "--admin-port", "9901"))
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    gateway = describe(target)
    with pytest.raises(ValueError, match="loopback"):
        Gateway(Address("0.0.0.0", 8080), Address("0.0.0.0", 9901), gateway.upstreams, gateway.routes, ("x",))


def test_cors_origins_are_explicit_and_configurable():
    def origins(config: str) -> list[str]:
        policy = connection_manager(yaml.safe_load(config))["route_config"]["virtual_hosts"][0]
        return [
            m["exact"]
            for m in policy["typed_per_filter_config"]["envoy.filters.http.cors"]["allow_origin_string_match"]
        ]

    assert origins(render("local", "--port", "8123")) == ["http://127.0.0.1:8123", "http://localhost:8123"]
    assert origins(render("local", "--cors-origin", "https://a.example", "--cors-origin", "https://b.example")) == [
        "https://a.example",
        "https://b.example",
    ]
    env = {"GATEWAY_CORS_ORIGINS": "https://c.example, https://d.example"}
    assert origins(render("k8s", env=env)) == ["https://c.example", "https://d.example"]
    assert "*" not in origins(render("local")) + origins(render("k8s"))
    with pytest.raises(ValueError, match=r"\*"):
        describe("local", cors_origins=["*"])


def test_long_streams_are_not_cut_and_requests_are_limited():
    """WatchSession has no total timeout (its heartbeats keep the idle timeout from firing); every other route has a
    finite one. tests/test_gateway_limits.py checks both through a real Envoy."""
    manager = connection_manager(yaml.safe_load(render("local")))
    assert manager["stream_idle_timeout"] == "60s" and manager["request_timeout"] == "30s"
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    watch = next(r for r in routes if r["match"] == {"path": "/avatar.v1.SessionService/WatchSession"})
    assert watch["route"]["timeout"] == "0s" and watch["route"]["idle_timeout"] == "60s"
    grpc_route = next(r for r in routes if r["match"] == {"prefix": "/avatar.v1.SessionService/"})
    assert grpc_route["route"]["timeout"] == "30s"
    assert grpc_route["route"]["max_stream_duration"] == {"grpc_timeout_header_max": "0s"}
    buffer = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    assert buffer["typed_config"]["max_request_bytes"] == 64 * 1024


@pytest.mark.parametrize("target", ["local", "k8s"])
def test_only_create_session_may_carry_a_portrait_sized_body(target):
    routes = connection_manager(yaml.safe_load(render(target)))["route_config"]["virtual_hosts"][0]["routes"]
    overrides = {
        r["match"].get("path") or r["match"].get("prefix"): r["typed_per_filter_config"]["envoy.filters.http.buffer"]
        for r in routes
        if "envoy.filters.http.buffer" in r.get("typed_per_filter_config", {})
    }
    assert list(overrides) == ["/avatar.v1.SessionService/CreateSession"]
    limit = overrides["/avatar.v1.SessionService/CreateSession"]["buffer"]["max_request_bytes"]
    assert 8 * 1024 * 1024 * 4 // 3 < limit < 12 * 1024 * 1024  # a base64 8 MiB photo, under the gRPC message limit
    # It comes before the prefix route that would otherwise take it (first match wins).
    paths = [r["match"].get("path") or r["match"].get("prefix") for r in routes]
    assert paths.index("/avatar.v1.SessionService/CreateSession") < paths.index("/avatar.v1.SessionService/")


@pytest.mark.parametrize(
    ("target", "args"),
    [("k8s", ["--packagers", "3"]), ("local", ["--packager-http", "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103"])],
)
def test_each_packager_serves_its_own_hls_prefix(target, args, tmp_path):
    text = render(target, *args)
    validate(text, tmp_path, f"{target}-packagers")
    config = yaml.safe_load(text)
    routes = connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    hls = {r["match"]["prefix"]: r["route"] for r in routes if r["match"].get("prefix", "").startswith("/hls/")}
    assert list(hls) == ["/hls/p0/", "/hls/p1/", "/hls/p2/"], "no catch-all /hls/ when there are several"
    for index in range(3):
        assert hls[f"/hls/p{index}/"] == {
            **hls[f"/hls/p{index}/"],
            "cluster": f"packager-{index}",
            "prefix_rewrite": "/hls/",
        }
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters["packager-2"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    expected = "packager-2.packager" if target == "k8s" else "127.0.0.1"
    assert endpoint["socket_address"]["address"] == expected


def test_k8s_serves_the_page_folder_with_content_types(tmp_path):
    """In the image the page's files are only known at run time: Envoy's file server serves the folder, on the
    catch-all route only (elsewhere it would answer gRPC-Web posts)."""
    web = make_web_root(tmp_path / "out")
    (web / "app.js").write_text("console.log(1)")
    port = free_port()
    config = render("k8s", "--web-root", str(web), "--port", str(port), "--session", "127.0.0.1:1")
    config = config.replace("0.0.0.0", "127.0.0.1")
    routes = connection_manager(yaml.safe_load(config))["route_config"]["virtual_hosts"][0]["routes"]
    serving = [r for r in routes if "envoy.filters.http.file_server" in r.get("typed_per_filter_config", {})]
    assert [r["match"] for r in serving] == [{"prefix": "/"}] and routes[-1] is serving[0]
    path = tmp_path / "k8s-page.yaml"
    path.write_text(config)
    process = subprocess.Popen(
        envoy_argv(path, tmp_path / "admin"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        status, headers, body = request(port, "GET", "/")
        while status == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            status, headers, body = request(port, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html") and body
        status, headers, _ = request(port, "GET", "/app.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        assert request(port, "GET", "/missing.js")[0] == 404
    finally:
        process.terminate()
        process.wait()


@pytest.mark.parametrize("target", ["local", "k8s"])
def test_rendering_is_deterministic_and_names_only_repo_or_temp_paths(target, tmp_path):
    web = make_web_root(tmp_path / "out")
    for args in ((), ("--web-root", str(web))):
        first, second = render(target, *args), render(target, *args)
        assert first == second
        allowed = (str(REPO_ROOT), str(Path(tempfile.gettempdir()).resolve()), str(tmp_path), K8S_WEB_ROOT)
        files = list(filenames(yaml.safe_load(first)))
        assert files or not args or target == "k8s"  # k8s serves the page's folder (file_server), not each file
        assert all(name.startswith(allowed) for name in files), files
        for path in re.findall(r"(?<![\w.:/])(/(?:[\w.@+-]+/)+[\w.@+-]+)", first):
            if Path(path).parent.is_dir():  # a real place on this machine, not a URL path
                assert path.startswith(allowed), path
        secrets = [v for k, v in os.environ.items() if re.search("KEY|TOKEN|SECRET|PASSWORD", k) and len(v) >= 6]
        assert not [v for v in secrets if v in first]


# -- a private Envoy serving a stand-in page --------------------------------------------------------------------------


@pytest.fixture
def page_gateway(tmp_path) -> Iterator[tuple[int, Path]]:
    """Envoy alone (no upstreams running) serving a stand-in static export; runs beside any other Envoy."""
    web = make_web_root(tmp_path / "out")
    port = free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        render_yaml(describe("local", port=port, web_root=web, session="127.0.0.1:1", packager_http="127.0.0.1:1"))
    )
    process = subprocess.Popen(envoy_argv(config, tmp_path / "admin"), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "admin").exists() or not request(port, "GET", "/")[0]:
            assert process.poll() is None, "envoy exited"
            assert time.monotonic() < deadline, "envoy did not start"
            time.sleep(0.05)
        yield port, web
    finally:
        process.terminate()
        process.wait(10)


def test_the_page_is_served_file_by_file(page_gateway):
    port, web = page_gateway
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and body == (web / "index.html").read_bytes()
    assert headers["content-type"] == "text/html; charset=utf-8" and headers["cache-control"] == "no-cache"
    status, headers, body = request(port, "GET", "/_next/static/chunks/main-abc123.js")
    assert status == 200 and body == b"console.log('hi');"
    assert headers["content-type"].startswith("text/javascript") and "immutable" in headers["cache-control"]
    assert request(port, "GET", "/_next/static/chunks/app.css")[1]["content-type"].startswith("text/css")
    assert request(port, "GET", "/favicon.ico")[1]["content-type"] == "image/x-icon"
    status, headers, body = request(port, "GET", "/no/such/file")
    assert status == 404 and b"missing" in body
    # The session service is down here: gRPC-Web callers get UNAVAILABLE as a gRPC status, not an HTML page.
    status, headers, _ = request(
        port, "POST", "/avatar.v1.SessionService/CreateSession", grpc_frame(session_pb2.CreateSessionRequest()),
        {"content-type": GRPC_WEB, "x-grpc-web": "1"},
    )  # fmt: skip
    assert headers.get("grpc-status") == "14", headers


# -- through the stack's Envoy ----------------------------------------------------------------------------------------


@pytest.mark.e2e
@stack_loop
async def test_grpc_web_unary_and_server_streaming_through_envoy(stack):
    port = stack.ports.gateway
    session = await asyncio.to_thread(create_session, port)
    try:
        assert len(session.session_id) == 22 and session.width > 0
        assert session.playlist_url == f"{stack.ports.gateway_url}/hls/{session.stream_id}/index.m3u8"
        assert session.control_token and session.session_id not in session.playlist_url
        event = await asyncio.to_thread(first_watch_event, port, session)
        assert event.WhichOneof("event") == "state_changed"
        assert event.state_changed.state == session_pb2.SESSION_STATE_IDLE
    finally:
        await asyncio.to_thread(end_session, port, session)


@pytest.mark.e2e
@stack_loop
async def test_grpc_web_errors_arrive_as_grpc_status_and_message(stack):
    say = session_pb2.SayRequest(session_id="A" * 22, text="Hello.")
    status, headers, body = await asyncio.to_thread(grpc_web, stack.ports.gateway, "Say", say, bearer="not-a-token")
    assert status == 200
    _, trailers = parse_frames(body)
    trailers = {**trailers, **{k: v for k, v in headers.items() if k.startswith("grpc-")}}
    assert trailers["grpc-status"] == "7"  # PERMISSION_DENIED, whether or not the session exists
    assert "control token" in urllib.parse.unquote(trailers["grpc-message"])


@pytest.mark.e2e
@stack_loop
async def test_oversized_requests_and_other_services_are_refused(stack):
    port = stack.ports.gateway
    big = session_pb2.SayRequest(session_id="A" * 22, text="x" * 100_000)
    status, headers, _ = await asyncio.to_thread(grpc_web, port, "Say", big)
    assert status == 413 and headers.get("grpc-status") not in (None, "0")
    # Only SessionService is published: the internal services and health/reflection are not reachable.
    status, _, _ = await asyncio.to_thread(
        request, port, "POST", "/avatar.v1.TtsService/Synthesize", b"\x00\x00\x00\x00\x00", {"content-type": GRPC_WEB}
    )
    assert status == 404


@pytest.mark.e2e
@stack_loop
async def test_a_portrait_sized_create_session_passes_envoy_while_other_calls_stay_small(stack):
    port = stack.ports.gateway
    # 9 MiB: past Envoy (not 413), refused by the session service for its content, naming the 8 MiB limit.
    big = session_pb2.CreateSessionRequest(portrait=b"\xff" * (9 * 1024 * 1024))
    status, headers, body = await asyncio.to_thread(grpc_web, port, "CreateSession", big)
    assert status == 200, (status, headers)
    _, trailers = parse_frames(body)
    trailers = {**trailers, **{k: v for k, v in headers.items() if k.startswith("grpc-")}}
    assert trailers["grpc-status"] == "3", trailers  # INVALID_ARGUMENT
    assert "8 MiB" in urllib.parse.unquote(trailers["grpc-message"])
    # Every other call keeps the 64 KiB limit.
    say = session_pb2.SayRequest(session_id="A" * 22, text="x" * 200_000)
    status, headers, _ = await asyncio.to_thread(grpc_web, port, "Say", say)
    assert status == 413 and headers.get("grpc-status") not in (None, "0")


@pytest.mark.e2e
@stack_loop
async def test_cors_preflight_allows_listed_origins_only(stack):
    port = stack.ports.gateway

    def preflight(origin: str) -> tuple[int, dict[str, str], bytes]:
        return request(
            port,
            "OPTIONS",
            "/avatar.v1.SessionService/CreateSession",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": PREFLIGHT_HEADERS,
            },
        )

    allowed = stack.ports.gateway_url
    status, headers, _ = await asyncio.to_thread(preflight, allowed)
    assert status == 200 and headers["access-control-allow-origin"] == allowed
    assert set(PREFLIGHT_HEADERS.split(",")) <= set(headers["access-control-allow-headers"].split(","))
    assert "POST" in headers["access-control-allow-methods"]
    assert {"grpc-status", "grpc-message"} <= set(headers["access-control-expose-headers"].split(","))

    _, headers, _ = await asyncio.to_thread(preflight, "http://evil.example")
    assert "access-control-allow-origin" not in headers

    # The actual call from an allowed origin exposes the gRPC status to the page's script.
    _, headers, _ = await asyncio.to_thread(
        grpc_web, port, "Say", session_pb2.SayRequest(session_id="A" * 22, text="x"), allowed
    )
    assert headers["access-control-allow-origin"] == allowed
    assert "grpc-status" in headers["access-control-expose-headers"]


@pytest.mark.e2e
@stack_loop
async def test_hls_and_the_page_through_the_gateway(stack):
    port = stack.ports.gateway
    session = await asyncio.to_thread(create_session, port)
    try:
        await segments_on(session.playlist_url, count=1)
        status, headers, body = await asyncio.to_thread(request, port, "GET", session.playlist_path)
        assert status == 200 and body.startswith(b"#EXTM3U")
        assert "mpegurl" in headers["content-type"].lower()
    finally:
        await asyncio.to_thread(end_session, port, session)

    status, headers, body = await asyncio.to_thread(request, port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<html" in body.lower()
    if b"not built" in body:
        assert b"npm run build" in body


@pytest.mark.e2e
@stack_loop
async def test_the_supervisor_runs_envoy_with_its_admin_on_loopback(stack):
    admin = stack.admin_url()
    assert admin is not None and admin.startswith("http://127.0.0.1:")
    status, _, body = await asyncio.to_thread(request, int(admin.rsplit(":", 1)[1]), "GET", "/ready")
    assert status == 200 and body.strip() == b"LIVE"
    assert stack.processes["gateway"].process is not None
