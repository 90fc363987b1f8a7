"""The gateway's limits (issue 13, "limits that hold") as rendered: heap overload actions, timeouts that cut uploads
but not WatchSession, keepalive, explicit domains, per-client rate limits from the environment, CORS and the access
log. tests/test_gateway_abuse.py checks each through a real Envoy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from gateway.limits import FIXED_HEAP
from gateway.targets import API_TIMEOUT_S, CREATE_TIMEOUT_S, HLS_TIMEOUT_S, describe
from tests.test_gateway import connection_manager, render, validate

MIB = 1024 * 1024
CREATE = "/avatar.v1.SessionService/CreateSession"
WATCH = "/avatar.v1.SessionService/WatchSession"


# -- the rendered configuration -----------------------------------------------------------------------------------


def routes_by_path(config: dict) -> dict[str, dict]:
    host = connection_manager(config)["route_config"]["virtual_hosts"][0]
    return {r["match"].get("path") or r["match"].get("prefix"): r for r in host["routes"]}


@pytest.mark.parametrize("target", ["local", "k8s"])
def test_heap_overload_actions_and_admin_on_loopback(target, tmp_path):
    text = render(target, env={"GATEWAY_MAX_HEAP_MB": "200"})
    validate(text, tmp_path, target)
    config = yaml.safe_load(text)
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    overload = config["overload_manager"]
    monitors = {m["name"]: m["typed_config"] for m in overload["resource_monitors"]}
    assert monitors[FIXED_HEAP]["max_heap_size_bytes"] == 200 * MIB
    assert monitors["envoy.resource_monitors.global_downstream_max_connections"]["max_active_downstream_connections"]
    actions = {a["name"]: a["triggers"][0] for a in overload["actions"]}
    assert actions["envoy.overload_actions.shrink_heap"]["threshold"]["value"] == 0.90
    assert actions["envoy.overload_actions.stop_accepting_requests"]["threshold"]["value"] == 0.95
    assert all(trigger["name"] == FIXED_HEAP for trigger in actions.values())
    default = yaml.safe_load(render(target))["overload_manager"]["resource_monitors"][0]
    assert default["typed_config"]["max_heap_size_bytes"] == 384 * MIB  # under a 512 Mi pod


def test_timeouts_bound_requests_but_not_watch_streams():
    config = yaml.safe_load(render("local"))
    manager = connection_manager(config)
    assert manager["request_timeout"] == "30s" and manager["request_headers_timeout"] == "10s"
    assert manager["stream_idle_timeout"] == "60s"  # WatchSession sends a heartbeat at least every 15 s
    routes = routes_by_path(config)
    assert routes[CREATE]["route"]["timeout"] == f"{CREATE_TIMEOUT_S:g}s"
    assert routes["/avatar.v1.SessionService/"]["route"]["timeout"] == f"{API_TIMEOUT_S:g}s"
    assert routes[WATCH]["route"]["timeout"] == "0s" and routes[WATCH]["route"]["idle_timeout"] == "60s"
    assert routes["/hls/"]["route"]["timeout"] == f"{HLS_TIMEOUT_S:g}s" and HLS_TIMEOUT_S > 3 * 1.0 + 2
    for path, route in routes.items():
        if "route" in route and path != WATCH:
            assert route["route"]["timeout"] != "0s", path
            assert route["route"].get("idle_timeout") != "0s", path
    # Keepalive: HTTP/2 PINGs and TCP keepalive on every accepted connection.
    assert manager["http2_protocol_options"]["connection_keepalive"] == {"interval": "20s", "timeout": "10s"}
    listener = config["static_resources"]["listeners"][0]
    options = {o["description"]: o["int_value"] for o in listener["socket_options"]}
    assert options == {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3,
                       "TCP_USER_TIMEOUT": 60000}  # fmt: skip
    assert listener["per_connection_buffer_limit_bytes"] <= 64 * 1024
    assert all(c["per_connection_buffer_limit_bytes"] <= 64 * 1024 for c in config["static_resources"]["clusters"])


def test_domains_are_explicit_and_configurable(tmp_path):
    def hosts(text: str) -> list[list[str]]:
        return [h["domains"] for h in connection_manager(yaml.safe_load(text))["route_config"]["virtual_hosts"]]

    local = hosts(render("local"))
    assert local[0] == ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "[::1]", "[::1]:*"]
    assert local[1] == ["*"]  # the catch-all answers 421 only
    text = render("k8s", "--domain", "Avatar.Example.com", env={"GATEWAY_DOMAINS": "10.0.0.7:30080, ::1"})
    validate(text, tmp_path, "k8s-domains")
    k8s = hosts(text)[0]
    assert {"gateway", "gateway:*", "avatar.example.com", "avatar.example.com:*"} <= set(k8s)
    assert "10.0.0.7:30080" not in k8s, "--domain replaces GATEWAY_DOMAINS"
    assert "10.0.0.7:30080" in hosts(render("k8s", env={"GATEWAY_DOMAINS": "10.0.0.7:30080"}))[0]
    assert "*" not in k8s and len(k8s) == len(set(k8s))
    for bad in ("*.example.com", "evil.example/x"):
        with pytest.raises(ValueError, match="domain"):
            describe("local", domains=[bad])


def test_rate_limit_settings_come_from_the_environment(tmp_path):
    env = {"GATEWAY_CREATE_PER_MINUTE": "6", "GATEWAY_CREATE_BURST": "3", "GATEWAY_TRUSTED_HOPS": "2"}
    text = render("local", env=env)
    validate(text, tmp_path, "rates")
    config = yaml.safe_load(text)
    assert connection_manager(config)["xff_num_trusted_hops"] == 2
    limit = routes_by_path(config)[CREATE]["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    anonymous, keyed = limit["descriptors"]
    assert anonymous["token_bucket"] == {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": "10s"}
    assert keyed["token_bucket"]["max_tokens"] == 30
    assert limit["rate_limited_as_resource_exhausted"] is True and limit["max_dynamic_descriptors"] >= 1000
    # Only the header's presence is a descriptor, never its value.
    flat = yaml.safe_dump(limit["rate_limits"])
    assert "present_match: true" in flat and "request_headers" not in flat
    for name, value in (("GATEWAY_MAX_HEAP_MB", "lots"), ("GATEWAY_REQUEST_TIMEOUT_S", "0")):
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "render", "--target", "local"],
            env={**os.environ, name: value},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and name in result.stderr, result.stderr


def test_cors_allows_the_authorization_header_and_the_access_log_omits_it():
    manager = connection_manager(yaml.safe_load(render("local")))
    cors = manager["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert "authorization" in cors["allow_headers"].split(",")
    log_format = yaml.safe_dump(manager["access_log"])
    assert "AUTHORIZATION" not in log_format.upper() and "%REQ(" in log_format
