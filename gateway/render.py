"""Renders a gateway description as Envoy's static bootstrap configuration (v3 API, YAML)."""

from __future__ import annotations

from typing import Any

import yaml

from gateway.limits import (
    LOCAL_RATELIMIT,
    http2_keepalive,
    listener_socket_options,
    local_ratelimit_filter,
    overload_manager,
    rate_limited_replies,
    route_rate_limit,
)
from gateway.model import Address, Directory, File, Gateway, Limits, Proxy, Route, Upstream
from gateway.webroot import CONTENT_TYPES

MIB = 1024 * 1024
MIN_DIRECT_RESPONSE_BYTES = 8 * MIB
# authorization: the page sends `Bearer <control_token>` with its gRPC-Web calls (never logged: see ACCESS_LOG_FORMAT).
CORS_ALLOW_HEADERS = "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization"
CORS_EXPOSE_HEADERS = "grpc-status,grpc-message"
CORS_MAX_AGE_S = 600
# What each request leaves in the log: no request header beyond the method, path and origin (never authorization).
ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "service": "gateway",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%RESP(GRPC-STATUS)%",  # set on errors (trailers-only); OK streams carry it in the body
    "flags": "%RESPONSE_FLAGS%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "origin": "%REQ(ORIGIN)%",
}


def _type(name: str) -> str:
    return f"type.googleapis.com/{name}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _socket(address: Address) -> dict[str, Any]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


FILE_SERVER = "envoy.filters.http.file_server"
UNKNOWN_HOST_STATUS = 421  # Misdirected Request: this server does not answer for that name


def _unknown_host() -> dict[str, Any]:
    """The catch-all virtual host: anything but Gateway.domains gets UNKNOWN_HOST_STATUS, for the page as for the
    API, so a page elsewhere that rebinds its name to this address reads and steers nothing."""
    return {
        "name": "unknown-host",
        "domains": ["*"],
        "routes": [
            {
                "match": {"prefix": "/"},
                "direct_response": {"status": UNKNOWN_HOST_STATUS, "body": {"inline_string": "unknown host\n"}},
            }
        ],
    }


def host_patterns(domains: tuple[str, ...]) -> list[str]:
    """Envoy `domains` for the listed Host names: each name as is and with any port (`name:*`), unless it names a
    port itself. Exact names only: no `*` that would let any site's name through."""
    patterns: list[str] = []
    for name in domains:
        has_port = name.rsplit("]", 1)[-1].count(":") == 1 if name.startswith("[") else ":" in name
        for pattern in (name,) if has_port else (name, f"{name}:*"):
            if pattern not in patterns:
                patterns.append(pattern)
    return patterns


def _route(route: Route) -> dict[str, Any]:
    match = {"prefix" if route.prefix else "path": route.path}
    action = route.action
    if isinstance(action, Directory):
        # The file server answers GET/HEAD for files under root; what it does not find falls through to this 404.
        return {
            "match": match,
            "direct_response": {"status": 404, "body": {"inline_string": "not found\n"}},
            "typed_per_filter_config": {
                FILE_SERVER: {
                    "@type": _type("envoy.config.route.v3.FilterConfig"),
                    "config": {
                        "@type": _type("envoy.extensions.filters.http.file_server.v3.FileServerConfig"),
                        "manager_config": {"thread_pool": {"thread_count": 1}},
                        "path_mappings": [{"request_path_prefix": "/", "file_path_prefix": action.root}],
                        "directory_behaviors": [{"default_file": action.index}],
                        "content_types": {suffix.lstrip("."): kind for suffix, kind in sorted(CONTENT_TYPES.items())},
                        "default_content_type": "application/octet-stream",
                    },
                }
            },
        }
    if isinstance(action, Proxy):
        proxied: dict[str, Any] = {"cluster": action.upstream}
        if action.prefix_rewrite is not None:
            proxied["prefix_rewrite"] = action.prefix_rewrite
        proxied["timeout"] = _seconds(action.timeout_s)  # 0s: no total limit (a server stream), idle limit only
        if action.idle_timeout_s is not None:
            proxied["idle_timeout"] = _seconds(action.idle_timeout_s)
        if action.grpc:
            # A client's grpc-timeout becomes the stream's maximum duration: it can shorten the call, never lengthen
            # it past the route timeout (a separate timer).
            proxied["max_stream_duration"] = {"grpc_timeout_header_max": "0s"}
            proxied["retry_policy"] = {"retry_on": "connect-failure,refused-stream", "num_retries": 1}
        per_filter: dict[str, Any] = {}
        if route.rate_limit is not None:
            per_filter[LOCAL_RATELIMIT] = route_rate_limit(route.rate_limit)
        if route.max_request_bytes is not None:
            per_filter["envoy.filters.http.buffer"] = {
                "@type": _type("envoy.extensions.filters.http.buffer.v3.BufferPerRoute"),
                "buffer": {"max_request_bytes": route.max_request_bytes},
            }
        rendered: dict[str, Any] = {"match": match, "route": proxied}
        if per_filter:
            rendered["typed_per_filter_config"] = per_filter
        return rendered
    if isinstance(action, File):
        body: dict[str, str] = {"filename": str(action.path)}
    else:
        body = {"inline_string": action.body}
    return {
        "match": match,
        "direct_response": {"status": action.status, "body": body},
        "response_headers_to_add": [
            _header("content-type", action.content_type),
            _header("cache-control", action.cache_control),
            _header("x-content-type-options", "nosniff"),
        ],
    }


def _cors(gateway: Gateway) -> dict[str, Any]:
    return {
        "@type": _type("envoy.extensions.filters.http.cors.v3.CorsPolicy"),
        "allow_origin_string_match": [{"exact": origin} for origin in gateway.cors_origins],
        "allow_methods": "GET,POST,OPTIONS",
        "allow_headers": CORS_ALLOW_HEADERS,
        "expose_headers": CORS_EXPOSE_HEADERS,
        "max_age": str(CORS_MAX_AGE_S),
        "allow_credentials": False,
        # Envoy answers a preflight from an origin not on the list itself (without CORS headers: refused).
        "forward_not_matching_preflights": False,
    }


def _direct_response_limit(gateway: Gateway) -> int:
    sizes = [r.action.path.stat().st_size for r in gateway.routes if isinstance(r.action, File)]
    largest = max(sizes, default=0)
    return max(MIN_DIRECT_RESPONSE_BYTES, -(-largest // MIB) * MIB)


def _http_filters(gateway: Gateway) -> list[dict[str, Any]]:
    serves_files = any(isinstance(route.action, Directory) for route in gateway.routes)
    file_server = [
        {
            "name": FILE_SERVER,
            "disabled": True,  # enabled per route (a Directory route) only: elsewhere it would answer everything
            "typed_config": {
                "@type": _type("envoy.extensions.filters.http.file_server.v3.FileServerConfig"),
                "manager_config": {"thread_pool": {"thread_count": 1}},
            },
        }
    ]
    return [
        {
            "name": "envoy.filters.http.grpc_web",
            "typed_config": {"@type": _type("envoy.extensions.filters.http.grpc_web.v3.GrpcWeb")},
        },
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": _type("envoy.extensions.filters.http.cors.v3.Cors")},
        },
        # Before the buffer: a refused request is answered before its body is read.
        *([local_ratelimit_filter()] if any(route.rate_limit for route in gateway.routes) else []),
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": _type("envoy.extensions.filters.http.buffer.v3.Buffer"),
                "max_request_bytes": gateway.limits.max_request_bytes,
            },
        },
        *(file_server if serves_files else []),
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": _type("envoy.extensions.filters.http.router.v3.Router")},
        },
    ]


def _connection_manager(gateway: Gateway) -> dict[str, Any]:
    limits = gateway.limits
    return {
        "@type": _type("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "xff_num_trusted_hops": limits.trusted_hops,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "stream_idle_timeout": _seconds(limits.stream_idle_timeout_s),
        "request_timeout": _seconds(limits.request_timeout_s),  # receiving the request, not the response
        "request_headers_timeout": _seconds(limits.request_headers_timeout_s),
        "max_request_headers_kb": limits.max_request_headers_kb,
        "common_http_protocol_options": {
            "idle_timeout": _seconds(limits.idle_connection_timeout_s),
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
        "http2_protocol_options": {
            "max_concurrent_streams": limits.max_concurrent_streams,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
            "connection_keepalive": http2_keepalive(limits),
        },
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": _type("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"),
                    "log_format": {"json_format": ACCESS_LOG_FORMAT},
                },
            }
        ],
        "local_reply_config": rate_limited_replies(),
        "route_config": {
            "name": "gateway",
            "max_direct_response_body_size_bytes": _direct_response_limit(gateway),
            "virtual_hosts": [
                {
                    "name": "gateway",
                    "domains": host_patterns(gateway.domains),
                    "typed_per_filter_config": {"envoy.filters.http.cors": _cors(gateway)},
                    "routes": [_route(route) for route in gateway.routes],
                },
                _unknown_host(),
            ],
        },
        "http_filters": _http_filters(gateway),
    }


def _cluster(upstream: Upstream, limits: Limits) -> dict[str, Any]:
    protocol: dict[str, Any] = (
        {"http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "10s"}}}
        if upstream.protocol == "http2"
        else {"http_protocol_options": {}}
    )
    cluster: dict[str, Any] = {
        "name": upstream.name,
        "type": "STATIC" if upstream.address.is_ip else "STRICT_DNS",
        "connect_timeout": _seconds(upstream.connect_timeout_s),
        "lb_policy": "ROUND_ROBIN",
        "per_connection_buffer_limit_bytes": limits.connection_buffer_bytes,
    }
    if not upstream.address.is_ip:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    cluster.update(
        {
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": upstream.max_connections,
                        "max_pending_requests": upstream.max_requests,
                        "max_requests": upstream.max_requests,
                    }
                ]
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": _type("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
                    "explicit_http_config": protocol,
                }
            },
            "load_assignment": {
                "cluster_name": upstream.name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(upstream.address)}}]}],
            },
        }
    )
    return cluster


def envoy_config(gateway: Gateway) -> dict[str, Any]:
    """The bootstrap as plain data (dicts and lists, in a fixed order)."""
    return {
        "admin": {"address": _socket(gateway.admin)},
        "overload_manager": overload_manager(gateway.limits),
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": _socket(gateway.listen),
                    "per_connection_buffer_limit_bytes": gateway.limits.connection_buffer_bytes,
                    "socket_options": listener_socket_options(gateway.limits),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": _connection_manager(gateway),
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(upstream, gateway.limits) for upstream in gateway.upstreams],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the fallback page) as literal blocks, so the YAML reads like the text it holds; a value
    used twice (a token bucket) is written out twice, not as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def render_yaml(gateway: Gateway) -> str:
    header = "# Rendered by `python -m gateway render`; do not edit (re-render instead).\n"
    body = yaml.dump(envoy_config(gateway), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    return header + body
