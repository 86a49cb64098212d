"""The shared server bootstrap, over real gRPC connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from recsys.v1 import candidates_pb2, candidates_pb2_grpc, common_pb2
from services.common import tracing
from services.common.clients import Deadline, domain_error_from_rpc, open_channel, wait_until_serving
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
)
from services.common.server import Registration, create_server, set_serving

SERVICE = "recsys.v1.CandidateService"


class ScriptedCandidates(candidates_pb2_grpc.CandidateServiceServicer):
    """Test double for the transport layer only: each request's n picks a behaviour."""

    async def GetCandidates(self, request, context):  # type: ignore[no-untyped-def]
        if request.n == 1:
            raise InvalidArgument([FieldViolation("n", "too small"), FieldViolation("context.user_id", "empty")])
        if request.n == 2:
            raise RuntimeError("database password is hunter2 at /etc/secret")
        if request.n == 3:
            raise FailedPrecondition("no model in this artefact")
        if request.n == 4:
            await asyncio.sleep(0.5)
        if request.n == 5:  # what this service would hand the next hop
            model = dict(tracing.outgoing_metadata() or ()).get("traceparent", "")
            return candidates_pb2.GetCandidatesResponse(model=model)
        return candidates_pb2.GetCandidatesResponse(items=[common_pb2.ScoredItem(item_id="a", score=1.0)], model="m")


class Harness:
    def __init__(self, ready: asyncio.Event, server: grpc.aio.Server, port: int, health_servicer) -> None:  # type: ignore[no-untyped-def]
        self.ready, self.server, self.port, self.health = ready, server, port, health_servicer
        self.channel = open_channel(f"127.0.0.1:{port}")
        self.stub = candidates_pb2_grpc.CandidateServiceStub(self.channel)

    async def call(self, n: int, timeout: float = 5.0) -> candidates_pb2.GetCandidatesResponse:
        return await self.stub.GetCandidates(candidates_pb2.GetCandidatesRequest(n=n), timeout=timeout)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    ready = asyncio.Event()
    health_servicer = health.aio.HealthServicer()
    registration = Registration(
        candidates_pb2_grpc.add_CandidateServiceServicer_to_server, ScriptedCandidates(), SERVICE
    )
    server, port = create_server(
        [registration], health_servicer=health_servicer, ready=ready, max_message_bytes=64 * 1024
    )
    await set_serving(health_servicer, [SERVICE], serving=False)
    await server.start()
    h = Harness(ready, server, port, health_servicer)
    yield h
    await h.channel.close()
    await server.stop(0)


async def _health(h: Harness, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(h.channel).Check(health_pb2.HealthCheckRequest(service=service))
    return int(reply.status)


async def _make_ready(h: Harness) -> None:
    h.ready.set()
    await set_serving(h.health, [SERVICE], serving=True)


async def test_binds_a_free_port_when_asked_for_port_0(harness: Harness) -> None:
    assert harness.port > 0


async def test_not_serving_and_unavailable_until_ready(harness: Harness) -> None:
    assert await _health(harness) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _health(harness, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.call(10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    await _make_ready(harness)
    assert await _health(harness) == health_pb2.HealthCheckResponse.SERVING
    assert (await harness.call(10)).items[0].item_id == "a"


async def test_wait_until_serving_gives_up_with_unavailable(harness: Harness) -> None:
    with pytest.raises(Unavailable):
        await wait_until_serving(harness.channel, timeout_s=0.3)
    await _make_ready(harness)
    await wait_until_serving(harness.channel, timeout_s=2.0)


async def test_invalid_argument_carries_field_violations(harness: Harness) -> None:
    await _make_ready(harness)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.call(1)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("n", "too small"),
        ("context.user_id", "empty"),
    ]
    # A caller one hop up keeps the violations.
    mapped = domain_error_from_rpc(raised.value, "candidates")
    assert isinstance(mapped, InvalidArgument)
    assert [v.field for v in mapped.violations] == ["n", "context.user_id"]


async def test_unexpected_errors_are_internal_without_internals(harness: Harness) -> None:
    await _make_ready(harness)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.call(2)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    details = raised.value.details() or ""
    assert "hunter2" not in details and "/etc" not in details and "Traceback" not in details
    assert "reference" in details
    # The server survives and keeps answering.
    assert (await harness.call(10)).model == "m"


async def test_refusals_pass_through_a_hop(harness: Harness) -> None:
    await _make_ready(harness)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.call(3)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(domain_error_from_rpc(raised.value, "candidates"), FailedPrecondition)


async def test_oversized_messages_are_refused(harness: Harness) -> None:
    await _make_ready(harness)
    request = candidates_pb2.GetCandidatesRequest(n=10, exclude_item_ids=["x" * 1000] * 100)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.GetCandidates(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_deadline_exceeded_maps_to_a_domain_error(harness: Harness) -> None:
    await _make_ready(harness)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.call(4, timeout=0.1)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(domain_error_from_rpc(raised.value, "candidates"), DeadlineExceeded)


async def test_graceful_stop_lets_in_flight_calls_finish(harness: Harness) -> None:
    await _make_ready(harness)
    in_flight = asyncio.create_task(harness.call(4))
    await asyncio.sleep(0.1)
    await harness.health.enter_graceful_shutdown()
    await harness.server.stop(grace=2.0)
    reply = await in_flight
    assert reply.model == "m"


async def test_reflection_lists_the_services(harness: Harness) -> None:
    def list_services() -> list[str]:
        # The reflection client is synchronous: run it off the loop that serves it.
        with grpc.insecure_channel(f"127.0.0.1:{harness.port}") as channel:
            return list(ProtoReflectionDescriptorDatabase(channel).get_services())

    names = await asyncio.to_thread(list_services)
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


def test_deadline_budget_is_cut_to_what_the_caller_has_left() -> None:
    assert Deadline(None).timeout(0.3) == 0.3
    soon = Deadline(time.monotonic() + 0.1)
    assert 0.0 < soon.timeout(0.3) <= 0.1
    assert Deadline(time.monotonic() + 10).timeout(0.3) == pytest.approx(0.3)
    with pytest.raises(DeadlineExceeded):
        Deadline(time.monotonic() - 1).timeout(0.3)


async def test_overload_is_refused_at_once_with_resource_exhausted() -> None:
    """Beyond max_concurrent_rpcs, calls are refused immediately instead of queueing behind slow ones."""
    ready = asyncio.Event()
    ready.set()
    registration = Registration(
        candidates_pb2_grpc.add_CandidateServiceServicer_to_server, ScriptedCandidates(), SERVICE
    )
    server, port = create_server(
        [registration], health_servicer=health.aio.HealthServicer(), ready=ready, max_concurrent_rpcs=2
    )
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}")
    stub = candidates_pb2_grpc.CandidateServiceStub(channel)
    try:

        async def slow_call() -> tuple[str, float]:
            started = time.perf_counter()
            try:
                await stub.GetCandidates(candidates_pb2.GetCandidatesRequest(n=4), timeout=5)  # sleeps 0.5 s
                return "OK", time.perf_counter() - started
            except grpc.aio.AioRpcError as error:
                return error.code().name, time.perf_counter() - started

        outcomes = await asyncio.gather(*(slow_call() for _ in range(8)))
        refused = [seconds for code, seconds in outcomes if code == "RESOURCE_EXHAUSTED"]
        assert sum(code == "OK" for code, _ in outcomes) == 2
        assert len(refused) == 6 and max(refused) < 0.4, outcomes  # refused without waiting for the slow ones
        # Once the slow calls are done, calls are served again (the slots free up as the calls are finished).
        for _ in range(40):
            code, _ = await slow_call()
            if code == "OK":
                break
            await asyncio.sleep(0.05)
        assert code == "OK"
    finally:
        await channel.close()
        await server.stop(0)


async def test_a_callers_trace_context_passes_through_without_instrumentation(harness: Harness) -> None:
    await _make_ready(harness)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = candidates_pb2.GetCandidatesRequest(n=5)
    reply = await harness.stub.GetCandidates(request, timeout=5, metadata=[("traceparent", traceparent)])
    assert reply.model == traceparent  # no exporter here: no span of our own, the caller's context goes on as is
    assert (await harness.stub.GetCandidates(request, timeout=5)).model == ""  # no trace, nothing passed on
    assert tracing.outgoing_metadata() is None  # and nothing stays attached after the call
