"""Per-RPC context for every service: the caller's session id in a contextvar, request metrics, and a clear
INVALID_ARGUMENT (instead of INTERNAL) when a request cannot be parsed, e.g. a string field with invalid UTF-8."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from services.common.logs import session_id_var

SESSION_ID_METADATA_KEY = "x-session-id"

RPC_STARTED = Counter("grpc_server_started_total", "RPCs started", ["grpc_method"])
RPC_HANDLED = Counter("grpc_server_handled_total", "RPCs completed", ["grpc_method", "grpc_code"])
RPC_SECONDS = Histogram("grpc_server_handling_seconds", "RPC duration", ["grpc_method"])
BAD_REQUESTS = Counter("grpc_server_unparseable_requests_total", "Requests that failed to parse", ["grpc_method"])


class UnparseableRequest:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:
            return UnparseableRequest(error)

    return parse


async def _reject(context: grpc.aio.ServicerContext, method: str) -> None:
    BAD_REQUESTS.labels(method).inc()
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        "request could not be parsed: it is not a valid protobuf message (text fields must be valid UTF-8)",
    )


class ServiceContextInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        session_id = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == SESSION_ID_METADATA_KEY:
                session_id = str(value)[:64]

        def wrap(behavior: Callable, request_streaming: bool, response_streaming: bool) -> Callable:
            def checked(request_or_iterator):
                if request_streaming:
                    return _check_stream(request_or_iterator)
                if isinstance(request_or_iterator, UnparseableRequest):
                    raise _UnparseableInStream()
                return request_or_iterator

            if response_streaming:

                async def streaming_behavior(request_or_iterator, context):
                    async with _rpc_scope(method, session_id, context, timed=False):
                        async for response in behavior(checked(request_or_iterator), context):
                            yield response

                return streaming_behavior

            async def unary_behavior(request_or_iterator, context):
                async with _rpc_scope(method, session_id, context, timed=True):
                    return await behavior(checked(request_or_iterator), context)

            return unary_behavior

        return handler._replace(
            request_deserializer=_safe_deserializer(handler.request_deserializer),
            unary_unary=handler.unary_unary and wrap(handler.unary_unary, False, False),
            unary_stream=handler.unary_stream and wrap(handler.unary_stream, False, True),
            stream_unary=handler.stream_unary and wrap(handler.stream_unary, True, False),
            stream_stream=handler.stream_stream and wrap(handler.stream_stream, True, True),
        )


class _UnparseableInStream(Exception):
    pass


async def _check_stream(requests):
    async for request in requests:
        if isinstance(request, UnparseableRequest):
            raise _UnparseableInStream()
        yield request


@contextlib.asynccontextmanager
async def _rpc_scope(method: str, session_id: str, context: grpc.aio.ServicerContext, timed: bool):
    """Binds the caller's session id for logs, counts the RPC, and turns unparseable requests into
    INVALID_ARGUMENT."""
    token = session_id_var.set(session_id)
    RPC_STARTED.labels(method).inc()
    started = time.perf_counter()
    code = "OK"
    try:
        try:
            yield
        except _UnparseableInStream:
            code = "INVALID_ARGUMENT"
            await _reject(context, method)
    except BaseException:
        code = _code_name(context, "UNKNOWN")
        raise
    finally:
        if timed:
            RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
        RPC_HANDLED.labels(method, _code_name(context, code)).inc()
        with contextlib.suppress(ValueError):  # a stream's generator closed from another context (server stop)
            session_id_var.reset(token)


def _code_name(context: grpc.aio.ServicerContext, fallback: str) -> str:
    try:
        code = context.code()
    except Exception:
        code = None
    if code is None:
        return fallback
    if isinstance(code, grpc.StatusCode):
        return code.name
    return str(code)
