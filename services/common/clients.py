"""Calling another service: channels, deadlines derived from the caller's, and error mapping."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import DeadlineExceeded, DomainError, InvalidArgument, Unavailable

# Time kept back from the caller's remaining deadline so our own reply still makes it in time.
DEADLINE_MARGIN_S = 0.005


def open_channel(address: str, max_message_bytes: int = 4 * 1024 * 1024) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 0),
        ],
    )


def downstream_timeout(context: grpc.aio.ServicerContext | None, budget_s: float) -> float:
    """The timeout for a downstream call: the stage's own budget, cut to what the caller has left."""
    remaining = context.time_remaining() if context is not None else None
    if remaining is None:
        return budget_s
    timeout = min(budget_s, remaining - DEADLINE_MARGIN_S)
    if timeout <= 0:
        raise DeadlineExceeded("the caller's deadline has passed")
    return timeout


def domain_error_from_rpc(error: grpc.aio.AioRpcError, stage: str) -> DomainError:
    """A downstream failure as our own error; bad input stays bad input, the rest is unavailability."""
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{stage} did not answer in time")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument([], message=f"{stage}: {error.details()}")
    return Unavailable(f"{stage} is unavailable ({code.name})")


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
