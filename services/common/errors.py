"""Domain errors and their gRPC status codes, with google.rpc details for bad input."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """An error whose message is safe to show the caller."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []


# A status travels in the trailers, which a client refuses past 8-16 KiB (grpc's metadata limits): a reply
# names the first violations in full and counts the rest, so a request with thousands of bad fields still
# gets its INVALID_ARGUMENT.
MAX_REPORTED_VIOLATIONS = 25
MAX_SUMMARISED_VIOLATIONS = 3
MAX_VIOLATION_TEXT = 120


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VIOLATION_TEXT else text[: MAX_VIOLATION_TEXT - 1] + "…"


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], message: str = "") -> None:
        every = list(violations)
        self.omitted = max(0, len(every) - MAX_REPORTED_VIOLATIONS)
        self.violations = [
            FieldViolation(_clip(v.field), _clip(v.description)) for v in every[:MAX_REPORTED_VIOLATIONS]
        ]
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:MAX_SUMMARISED_VIOLATIONS])
        more = len(every) - min(len(every), MAX_SUMMARISED_VIOLATIONS)
        if more:
            summary += f"; and {more} more (the BadRequest details list {len(self.violations)})"
        super().__init__(_clip(message) if message else f"invalid argument: {summary}")

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        return [packed]


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED


def to_grpc_status(error: DomainError) -> grpc.Status:
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=error.details())
    return rpc_status.to_status(status)


def internal_status(reference: str) -> grpc.Status:
    """INTERNAL with a reference to the log line, never the exception's text."""
    message = f"internal error (reference {reference}); the server log has the details"
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message=message))


class Violations:
    """Collects field violations so one reply names every bad field."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.add(field, description)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
