"""Renders the limits that keep one client (or a few hundred) from taking the gateway down: the overload manager,
per-client rate limits (and their answer to gRPC-Web callers), and downstream keepalive. Split from render.py, which
assembles the bootstrap."""

from __future__ import annotations

import math
from typing import Any

from gateway.model import Bucket, Limits, RateLimit

LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
FIXED_HEAP = "envoy.resource_monitors.fixed_heap"
DOWNSTREAM_CONNECTIONS = "envoy.resource_monitors.global_downstream_max_connections"
# Heap pressure (allocated / Limits.max_heap_bytes) at which Envoy gives free memory back to the system, resets the
# streams holding the most buffered memory (HTTP/2 only), then answers new requests with 503 until it recovers.
SHRINK_HEAP_AT = 0.90
RESET_STREAMS_FROM, RESET_STREAMS_ALL_AT = 0.90, 0.95
STOP_ACCEPTING_AT = 0.95
TRACK_STREAMS_FROM_POW2 = 20  # buffer accounting for streams holding >= 1 MiB (uploads), candidates for the reset
# Distinct clients whose buckets are remembered per rate-limited route (least recently used forgotten first): a
# forgotten client starts again with a full bucket, so keep it above the clients expected within a refill period.
MAX_CLIENT_BUCKETS = 10_000
MIN_FILL_INTERVAL_MS = 50  # Envoy refuses shorter refills
CREDENTIAL_KEY, CREDENTIAL_NONE, CREDENTIAL_BEARER = "credential", "none", "bearer"
GRPC_RESOURCE_EXHAUSTED = 8
RATE_LIMITED = "rate limited: too many calls from this address, try again later"

# Linux socket option numbers (Envoy runs on Linux; the values are fixed so the rendered config does not depend on
# where it was rendered): SOL_SOCKET/SO_KEEPALIVE and IPPROTO_TCP/TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT,
# TCP_USER_TIMEOUT. Set on the listening socket, they are inherited by every accepted connection.
SOL_SOCKET, SO_KEEPALIVE = 1, 9
IPPROTO_TCP, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT = 6, 4, 5, 6, 18


def _type(name: str) -> str:
    return f"type.googleapis.com/{name}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def overload_manager(limits: Limits) -> dict[str, Any]:
    """Heap-based actions (a few dozen 11 MiB uploads must not exhaust a 512 Mi pod) and the connection cap."""
    return {
        "refresh_interval": "0.25s",
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": TRACK_STREAMS_FROM_POW2},
        "resource_monitors": [
            {
                "name": FIXED_HEAP,
                "typed_config": {
                    "@type": _type("envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"),
                    "max_heap_size_bytes": limits.max_heap_bytes,
                },
            },
            {
                "name": DOWNSTREAM_CONNECTIONS,
                "typed_config": {
                    "@type": _type(
                        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
                    ),
                    "max_active_downstream_connections": limits.max_connections,
                },
            },
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [{"name": FIXED_HEAP, "threshold": {"value": SHRINK_HEAP_AT}}],
            },
            {
                "name": "envoy.overload_actions.reset_high_memory_stream",
                "triggers": [
                    {
                        "name": FIXED_HEAP,
                        "scaled": {
                            "scaling_threshold": RESET_STREAMS_FROM,
                            "saturation_threshold": RESET_STREAMS_ALL_AT,
                        },
                    }
                ],
            },
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": [{"name": FIXED_HEAP, "threshold": {"value": STOP_ACCEPTING_AT}}],
            },
        ],
    }


def listener_socket_options(limits: Limits) -> list[dict[str, Any]]:
    """TCP keepalive (and a bound on unacknowledged data) for every downstream connection: a client that vanished
    without closing (a laptop lid, a dropped network) is found within about a minute, even over HTTP/1.1, where
    Envoy's HTTP/2 PINGs do not apply, and its connection and streams (a WatchSession) are released."""

    def option(description: str, level: int, name: int, value: int) -> dict[str, Any]:
        return {"description": description, "level": level, "name": name, "int_value": value, "state": "STATE_PREBIND"}

    return [
        option("SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE, 1),
        option("TCP_KEEPIDLE", IPPROTO_TCP, TCP_KEEPIDLE, limits.tcp_keepalive_idle_s),
        option("TCP_KEEPINTVL", IPPROTO_TCP, TCP_KEEPINTVL, limits.tcp_keepalive_interval_s),
        option("TCP_KEEPCNT", IPPROTO_TCP, TCP_KEEPCNT, limits.tcp_keepalive_probes),
        option("TCP_USER_TIMEOUT", IPPROTO_TCP, TCP_USER_TIMEOUT, limits.tcp_user_timeout_s * 1000),
    ]


def http2_keepalive(limits: Limits) -> dict[str, str]:
    """HTTP/2 PINGs on downstream connections (gRPC clients, h2c): no answer within the timeout closes it."""
    return {
        "interval": _seconds(limits.http2_keepalive_interval_s),
        "timeout": _seconds(limits.http2_keepalive_timeout_s),
    }


def local_ratelimit_filter() -> dict[str, Any]:
    """The filter in the chain, inert by itself: only routes with a per-route config (a RateLimit) are limited."""
    return {
        "name": LOCAL_RATELIMIT,
        "typed_config": {
            "@type": _type("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"),
            "stat_prefix": "gateway_ratelimit",
        },
    }


def rate_limited_replies() -> dict[str, Any]:
    """The HCM's `local_reply_config`: a rate-limited gRPC or gRPC-Web call is answered as gRPC (200, trailers only,
    grpc-status RESOURCE_EXHAUSTED), other requests keep the filter's 429.

    Envoy decides whether a local reply is gRPC from the request as it arrived, so a gRPC-Web call gets a plain 429
    that the grpc_web filter maps to UNAVAILABLE, which clients retry at once. Matching the content type as the
    grpc_web filter rewrote it (application/grpc) and answering with an empty body keeps this grpc-status."""
    return {
        "mappers": [
            {
                "filter": {
                    "and_filter": {
                        "filters": [
                            {
                                "status_code_filter": {
                                    "comparison": {
                                        "op": "EQ",
                                        "value": {"default_value": 429, "runtime_key": "gateway_rate_limited_status"},
                                    }
                                }
                            },
                            {
                                "header_filter": {
                                    "header": {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
                                }
                            },
                        ]
                    }
                },
                "status_code": 200,
                "headers_to_add": [
                    {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                    for key, value in (("grpc-status", str(GRPC_RESOURCE_EXHAUSTED)), ("grpc-message", RATE_LIMITED))
                ],
                "body": {"inline_string": ""},
            }
        ]
    }


def token_bucket(bucket: Bucket) -> dict[str, Any]:
    """`burst` tokens, refilled evenly to `per_minute` (several tokens per refill when one token would need a refill
    more often than Envoy allows)."""
    per_fill = max(1, math.ceil(bucket.per_minute * MIN_FILL_INTERVAL_MS / 60_000))
    interval_ms = round(60_000 * per_fill / bucket.per_minute)
    return {
        "max_tokens": max(bucket.burst, per_fill),
        "tokens_per_fill": per_fill,
        "fill_interval": f"{interval_ms / 1000:g}s",
    }


def _percent(runtime_key: str) -> dict[str, Any]:
    return {"runtime_key": runtime_key, "default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def route_rate_limit(rate: RateLimit) -> dict[str, Any]:
    """The filter's per-route config for a bucket per client.

    Its own `rate_limits` (Envoy 1.40 prefers them to the route's) make one descriptor per request:
    ("remote_address", <the client address Envoy trusts>) and ("credential", "bearer" or "none") from the mere
    presence of an authorization header. The descriptors leave the address empty, a wildcard: Envoy keeps one
    bucket per distinct address and kind (dynamic descriptors, at most MAX_CLIENT_BUCKETS). No header value is ever
    a descriptor, so no credential reaches the limiter's memory or its stats. The filter's own bucket (required)
    serves only a request without an address: none over TCP."""

    def credential(value: str, present: bool) -> dict[str, Any]:
        return {
            "header_value_match": {
                "descriptor_key": CREDENTIAL_KEY,
                "descriptor_value": value,
                "expect_match": present,
                "headers": [{"name": "authorization", "present_match": True}],
            }
        }

    actions = [
        {"actions": [{"remote_address": {}}, credential(CREDENTIAL_NONE, False)]},
        {"actions": [{"remote_address": {}}, credential(CREDENTIAL_BEARER, True)]},
    ]
    descriptors = [
        {
            "entries": [{"key": "remote_address", "value": ""}, {"key": CREDENTIAL_KEY, "value": kind}],
            "token_bucket": token_bucket(bucket),
        }
        for kind, bucket in ((CREDENTIAL_NONE, rate.anonymous), (CREDENTIAL_BEARER, rate.with_credential))
    ]
    return {
        "@type": _type("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"),
        "stat_prefix": rate.name,
        "rate_limits": actions,
        "token_bucket": token_bucket(rate.anonymous),
        "filter_enabled": _percent(f"{rate.name}_ratelimit_enabled"),
        "filter_enforced": _percent(f"{rate.name}_ratelimit_enforced"),
        "descriptors": descriptors,
        "max_dynamic_descriptors": MAX_CLIENT_BUCKETS,
        "always_consume_default_token_bucket": False,
        "rate_limited_as_resource_exhausted": True,  # gRPC: RESOURCE_EXHAUSTED rather than UNAVAILABLE (retried)
    }
