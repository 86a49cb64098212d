"""Calling another service: channels, deadlines derived from the caller's, and error mapping."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common import tracing
from services.common.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)
from services.common.settings import DEFAULT_MAX_MESSAGE_BYTES

# Time kept back from the caller's remaining deadline so our own reply still makes it in time.
DEADLINE_MARGIN_S = 0.005


def channel_options(max_message_bytes: int) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 0),
        # A dns:/// name of a headless Service resolves to every pod: spread calls over all of them, not
        # one connection pinned to the first pod.
        ("grpc.lb_policy_name", "round_robin"),
        # Keepalive (grpc doc/keepalive.md): a dead peer or a connection that a NAT or proxy dropped is
        # noticed within 20 s + 10 s of silence instead of TCP's many minutes, on idle channels too (permit
        # without calls; no cap on pings between data frames). 20 s stays above gRFC A8's 10 s floor and
        # above the 5 s that our servers accept (server.create_server), so they never answer too_many_pings.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # A stage that was down is found again within 10 s of coming back, not after up to 120 s (the
        # default cap of the reconnect backoff).
        ("grpc.max_reconnect_backoff_ms", 10_000),
    ]


def open_channel(
    address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """A channel to another service of the suite; with `credentials`, TLS (mTLS with our certificate)."""
    options = channel_options(max_message_bytes)
    interceptors = tracing.client_interceptors()
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, interceptors=interceptors, options=options)
    return grpc.aio.insecure_channel(address, interceptors=interceptors, options=options)


@dataclass(frozen=True)
class Deadline:
    """When the caller stops waiting (monotonic clock); None when the caller set no deadline."""

    expires_at: float | None

    @classmethod
    def from_context(cls, context: grpc.aio.ServicerContext, default_s: float) -> Deadline:
        remaining = context.time_remaining()
        return cls(time.monotonic() + (default_s if remaining is None else remaining))

    @classmethod
    def of_caller(cls, context: grpc.aio.ServicerContext) -> Deadline:
        """Exactly the caller's deadline, or none."""
        remaining = context.time_remaining()
        return cls(None if remaining is None else time.monotonic() + remaining)

    def timeout(self, budget_s: float) -> float:
        """A downstream call's timeout: the stage's own budget, cut to what the caller has left."""
        if self.expires_at is None:
            return budget_s
        timeout = min(budget_s, self.expires_at - time.monotonic() - DEADLINE_MARGIN_S)
        if timeout <= 0:
            raise DeadlineExceeded("the caller's deadline has passed")
        return timeout


# Downstream answers that mean the same for our caller as for us.
_PASSED_THROUGH: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.NOT_FOUND: NotFound,
}


def domain_error_from_rpc(error: grpc.aio.AioRpcError, stage: str) -> DomainError:
    """A downstream failure as our own error: bad input stays bad input (with its field violations),
    refusals pass through, and everything else is the stage being unavailable."""
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{stage} did not answer in time")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(_field_violations(error), message=f"{stage}: {error.details()}")
    if code in _PASSED_THROUGH:
        return _PASSED_THROUGH[code](f"{stage}: {error.details()}")
    return Unavailable(f"{stage} is unavailable ({code.name})")


def _field_violations(error: grpc.aio.AioRpcError) -> list[FieldViolation]:
    status = rpc_status.from_call(error)
    violations: list[FieldViolation] = []
    for detail in status.details if status is not None else []:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return violations


async def wait_until_serving(channel: grpc.aio.Channel, timeout_s: float, service: str = "") -> None:
    """Poll grpc.health.v1 until SERVING; raise Unavailable after timeout_s."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as error:
            last = error.code().name
        await asyncio.sleep(0.1)
    raise Unavailable(f"{service or 'dependency'} not serving after {timeout_s:.0f}s (last: {last})")
