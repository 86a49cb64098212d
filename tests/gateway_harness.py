"""A real recsys.v1 Gateway server on 127.0.0.1 with a servicer that answers at once, for the tests of what
sits in front of the handlers (authentication, quotas): create_server, real channels, real calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recsys.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, synthetic_pb2
from services.common.auth import current_client_id
from services.common.server import Registration, create_server, set_serving

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
# GenerateSynthetic with this seed sends one chunk, then stays open until the test lets it go.
HOLD_OPEN = 7


class ImmediateGateway(gateway_pb2_grpc.GatewayServicer):
    """Stands in for the stages behind the gateway; says who it thinks is calling (model_version)."""

    def __init__(self) -> None:
        self.let_go = asyncio.Event()
        self.streams_open = 0

    async def Recommend(self, request, context):  # type: ignore[no-untyped-def]
        return gateway_pb2.RecommendResponse(
            items=[common_pb2.ScoredItem(item_id="i1", score=1.0)], model_version=current_client_id() or ""
        )

    async def RecordEvents(self, request, context):  # type: ignore[no-untyped-def]
        return gateway_pb2.RecordEventsResponse(accepted=len(request.events))

    async def RegisterItems(self, request, context):  # type: ignore[no-untyped-def]
        return synthetic_pb2.RegisterItemsResponse(registered=len(request.items))

    async def GenerateSynthetic(self, request, context):  # type: ignore[no-untyped-def]
        self.streams_open += 1
        try:
            yield synthetic_pb2.GenerateSyntheticResponse(users=[common_pb2.User(user_id=current_client_id() or "")])
            if request.seed == HOLD_OPEN:
                await self.let_go.wait()
        finally:
            self.streams_open -= 1


@dataclass
class Harness:
    server: grpc.aio.Server
    port: int
    servicer: ImmediateGateway
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def channel(self) -> grpc.aio.Channel:
        """A connection of its own (closed with the server), as another client would have."""
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.channels.append(channel)
        return channel

    def stub(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(self.channel())

    async def health(self) -> int:
        """Health asked without any token."""
        reply = await health_pb2_grpc.HealthStub(self.channel()).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.asynccontextmanager
async def serve_gateway(
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    extra: Sequence[Registration] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[Harness]:
    servicer = ImmediateGateway()
    health_servicer = health.aio.HealthServicer()
    registrations = [Registration(gateway_pb2_grpc.add_GatewayServicer_to_server, servicer, GATEWAY), *extra]
    ready = asyncio.Event()
    server, port = create_server(
        registrations, health_servicer=health_servicer, ready=ready, interceptors=interceptors, credentials=credentials
    )
    await server.start()
    ready.set()
    await set_serving(health_servicer, [r.full_name for r in registrations], serving=True)
    harness = Harness(server, port, servicer)
    try:
        yield harness
    finally:
        servicer.let_go.set()
        for channel in harness.channels:
            await channel.close()
        await server.stop(0)


def recommend() -> gateway_pb2.RecommendRequest:
    return gateway_pb2.RecommendRequest(user_id="u1", k=1)


def events() -> gateway_pb2.RecordEventsRequest:
    return gateway_pb2.RecordEventsRequest(events=[common_pb2.Event(user_id="u1", item_id="i1", timestamp=1)])


def register() -> synthetic_pb2.RegisterItemsRequest:
    return synthetic_pb2.RegisterItemsRequest(items=[common_pb2.Item(item_id="new")])


def synthetic(seed: int = 0) -> synthetic_pb2.GenerateSyntheticRequest:
    return synthetic_pb2.GenerateSyntheticRequest(
        kind=synthetic_pb2.GenerateSyntheticRequest.KIND_USERS, count=1, seed=seed
    )
