"""Aborting an RPC with a canonical code, a message a person understands, and google.rpc.Status details."""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


def _status(code: grpc.StatusCode, message: str, detail) -> grpc.Status:
    packed = any_pb2.Any()
    packed.Pack(detail)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[packed])
    return rpc_status.to_status(proto)


async def abort_invalid_argument(
    context: grpc.aio.ServicerContext, field: str, message: str, reason: str = ""
) -> NoReturn:
    """`reason`: an optional stable code for programs (e.g. "no_face"), in the FieldViolation's `reason`."""
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message, reason=reason)
    await context.abort_with_status(
        _status(grpc.StatusCode.INVALID_ARGUMENT, message, error_details_pb2.BadRequest(field_violations=[violation]))
    )
    raise AssertionError("unreachable")


async def abort_not_found(context: grpc.aio.ServicerContext, resource_type: str, name: str, message: str) -> NoReturn:
    detail = error_details_pb2.ResourceInfo(resource_type=resource_type, resource_name=name, description=message)
    await context.abort_with_status(_status(grpc.StatusCode.NOT_FOUND, message, detail))
    raise AssertionError("unreachable")


async def abort_resource_exhausted(context: grpc.aio.ServicerContext, subject: str, message: str) -> NoReturn:
    violation = error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)
    detail = error_details_pb2.QuotaFailure(violations=[violation])
    await context.abort_with_status(_status(grpc.StatusCode.RESOURCE_EXHAUSTED, message, detail))
    raise AssertionError("unreachable")


async def abort_failed_precondition(context: grpc.aio.ServicerContext, subject: str, message: str) -> NoReturn:
    violation = error_details_pb2.PreconditionFailure.Violation(type="STATE", subject=subject, description=message)
    detail = error_details_pb2.PreconditionFailure(violations=[violation])
    await context.abort_with_status(_status(grpc.StatusCode.FAILED_PRECONDITION, message, detail))
    raise AssertionError("unreachable")


def invalid_argument_reason(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(field, reason) of the first BadRequest violation an INVALID_ARGUMENT error carries; ("", "") when none."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                for violation in bad.field_violations:
                    return violation.field, violation.reason
    return "", ""
