"""One exception for every refused or failed call, carrying what the server said in a form a program can act on.

The server answers with a canonical gRPC code, a sentence meant for a person, and `google.rpc.Status` details in the
`grpc-status-details-bin` trailer (BadRequest for a bad field, QuotaFailure for a limit, ResourceInfo for an ended
session, PreconditionFailure, ErrorInfo...). The details are decoded here with googleapis-common-protos alone, so
the client needs no grpcio-status.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2

DETAILS_TRAILER = "grpc-status-details-bin"

M = TypeVar("M", bound=message.Message)

# Every google.rpc error detail type, by its full name (what an Any's type URL ends with).
_DETAIL_TYPES: dict[str, type[message.Message]] = {
    descriptor.full_name: getattr(error_details_pb2, name)
    for name, descriptor in error_details_pb2.DESCRIPTOR.message_types_by_name.items()
}


class ApiError(Exception):
    """A call the server refused or that failed on the way.

    `code`: the `grpc.StatusCode` (UNAUTHENTICATED, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED...).
    `message`: the server's sentence, e.g. "text is 6000 characters long; the limit is 5000 characters".
    `details`: the decoded google.rpc details, e.g. `error_details_pb2.BadRequest` (an `Any` when of a type this
    client does not know).
    The helpers raise it `from` the grpc error underneath: that is its `__cause__`.
    """

    def __init__(self, code: grpc.StatusCode, message: str, details: Iterable[message.Message] = ()) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details: tuple[message.Message, ...] = tuple(details)

    def detail(self, kind: type[M]) -> M | None:
        """The first detail of type `kind` (e.g. `error_details_pb2.BadRequest`), or None."""
        for detail in self.details:
            if isinstance(detail, kind):
                return detail
        return None

    @property
    def field_violations(self) -> list[tuple[str, str]]:
        """(field, description) of each BadRequest violation: which request field to fix, and how."""
        bad = self.detail(error_details_pb2.BadRequest)
        return [(v.field, v.description) for v in bad.field_violations] if bad is not None else []

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ApiError:
        """From a failed call, sync (`grpc.RpcError`) or asyncio (`grpc.aio.AioRpcError`): both are also `grpc.Call`s
        with the code, the sentence and the trailers."""
        code = _call(error, "code") or grpc.StatusCode.UNKNOWN
        sentence = _call(error, "details") or ""
        return cls(code, sentence, decode_details(_call(error, "trailing_metadata") or ()))


def decode_details(trailers: Iterable[tuple[str, Any]]) -> list[message.Message]:
    """The google.rpc details in a call's trailing metadata, each unpacked to its own message type."""
    decoded: list[message.Message] = []
    for key, value in trailers:
        if key != DETAILS_TRAILER or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except message.DecodeError:
            continue  # a broken trailer must not hide the code and the sentence
        for packed in status.details:
            decoded.append(_unpack(packed))
    return decoded


def _unpack(packed: any_pb2.Any) -> message.Message:
    kind = _DETAIL_TYPES.get(packed.TypeName())
    if kind is None:
        return packed
    detail = kind()
    return detail if packed.Unpack(detail) else packed


def _call(error: grpc.RpcError, method: str) -> Any:
    """`error.<method>()`, or None for an RpcError that is not also a Call (grpc raises a few such)."""
    function = getattr(error, method, None)
    return function() if callable(function) else None
