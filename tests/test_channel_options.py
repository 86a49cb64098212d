"""The channel options every hop uses (open_channel) and what the servers accept (create_server), over real
connections on 127.0.0.1: round-robin over every resolved backend, and keepalive pings that keep an idle
channel up instead of getting it disconnected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recsys.v1 import candidates_pb2, candidates_pb2_grpc
from services.common.clients import open_channel
from services.common.server import Registration, create_server
from tests.stage_servers import StageServer, serve


class Named(candidates_pb2_grpc.CandidateServiceServicer):
    """Answers with its own name, so the client sees which backend served each call."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def GetCandidates(
        self, request: candidates_pb2.GetCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> candidates_pb2.GetCandidatesResponse:
        return candidates_pb2.GetCandidatesResponse(model=self.name)

    def registration(self) -> Registration:
        full_name = candidates_pb2.DESCRIPTOR.services_by_name["CandidateService"].full_name
        return Registration(candidates_pb2_grpc.add_CandidateServiceServicer_to_server, self, full_name)


@pytest.fixture
async def two_backends() -> AsyncIterator[list[StageServer]]:
    servers = [await serve(Named("a").registration()), await serve(Named("b").registration())]
    yield servers
    await asyncio.gather(*(server.stop() for server in servers))


async def test_calls_spread_over_every_address_the_name_resolves_to(two_backends: list[StageServer]) -> None:
    """As a dns:/// name of a headless Service resolves to every pod: here, two addresses of one target."""
    target = "ipv4:" + ",".join(server.address for server in two_backends)
    channel = open_channel(target)
    try:
        stub = candidates_pb2_grpc.CandidateServiceStub(channel)
        request = candidates_pb2.GetCandidatesRequest(n=1)
        served: list[str] = []
        for _ in range(40):
            served.append((await stub.GetCandidates(request, timeout=5)).model)
        # Round robin goes to each ready backend in turn; the first calls may all find one backend ready.
        assert served.count("a") >= 10 and served.count("b") >= 10, served
    finally:
        await channel.close()


# The keepalive timings scaled down so that a test sees several pings in a few seconds: the client's 20 s
# become 1 s (grpc core sends a ping at most once a second), the server's accepted 5 s become 250 ms.
TIME_SCALE = 20
KEEPALIVE_TIMES = (
    "grpc.keepalive_time_ms",
    "grpc.keepalive_timeout_ms",
    "grpc.http2.min_ping_interval_without_data_ms",
)


def scaled(options: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(key, value // TIME_SCALE if key in KEEPALIVE_TIMES else value) for key, value in options]


async def production_options(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options create_server and open_channel hand grpc, read on their way in."""
    seen: dict[str, list[tuple[str, Any]]] = {}

    def spy(kind: str, real: Any) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            seen[kind] = list(kwargs.get("options") or [])
            return real(*args, **kwargs)

        return record

    monkeypatch.setattr(grpc.aio, "server", spy("server", grpc.aio.server))
    monkeypatch.setattr(grpc.aio, "insecure_channel", spy("client", grpc.aio.insecure_channel))
    monkeypatch.setattr(grpc.aio, "secure_channel", spy("client", grpc.aio.secure_channel))
    create_server([], health_servicer=health.aio.HealthServicer(), ready=asyncio.Event())
    await open_channel("127.0.0.1:1").close()  # never connected: only its options are read
    monkeypatch.undo()
    return dict(seen["server"]), dict(seen["client"])


async def idle_channel_outcome(
    server_options: list[tuple[str, Any]], client_options: list[tuple[str, Any]], idle_s: float
) -> str:
    """One call, then an idle channel for idle_s: "kept" if its connection stayed up, else what it became."""
    server = grpc.aio.server(options=server_options)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options)
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        ends = time.monotonic() + idle_s
        while (left := ends - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), left)
            except TimeoutError:
                break
            return channel.get_state().name  # a GOAWAY (too_many_pings) drops the connection: IDLE
        return "kept"
    finally:
        await channel.close()
        await server.stop(0)


async def test_keepalive_pings_keep_an_idle_channel_up_and_never_get_it_disconnected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, client = await production_options(monkeypatch)
    # Both sides agree (grpc doc/keepalive.md): the client pings idle connections no more often than the
    # server accepts pings, so it is never answered with too_many_pings.
    assert client.get("grpc.keepalive_permit_without_calls") == 1 == server.get("grpc.keepalive_permit_without_calls")
    assert client.get("grpc.http2.max_pings_without_data") == 0
    assert client.get("grpc.keepalive_time_ms", 0) >= server.get("grpc.http2.min_ping_interval_without_data_ms", 1e9)

    client_options = scaled(list(client.items()))
    idle_s = 4.5  # four pings or more: the third ping that comes too soon is answered with GOAWAY
    ours, strict = await asyncio.gather(
        idle_channel_outcome(scaled(list(server.items())), client_options, idle_s),
        # A server with grpc's default policy (no pings without calls) shows that the client does ping.
        idle_channel_outcome([], client_options, idle_s),
    )
    assert strict != "kept", "the client sent no keepalive pings on an idle channel"
    assert ours == "kept"


class Peers(candidates_pb2_grpc.CandidateServiceServicer):
    """Remembers the client address of every call: a new one means a new connection."""

    def __init__(self) -> None:
        self.peers: list[str] = []

    async def GetCandidates(
        self, request: candidates_pb2.GetCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> candidates_pb2.GetCandidatesResponse:
        self.peers.append(context.peer())
        return candidates_pb2.GetCandidatesResponse(model="peers")


async def test_old_connections_are_recycled_without_failing_a_call() -> None:
    """max_connection_age: the server sends GOAWAY to a connection past its age; calls in flight finish and
    the client reconnects (re-resolving its target), so no call fails while connections turn over."""
    peers = Peers()
    full_name = candidates_pb2.DESCRIPTOR.services_by_name["CandidateService"].full_name
    registration = Registration(candidates_pb2_grpc.add_CandidateServiceServicer_to_server, peers, full_name)
    ready = asyncio.Event()
    ready.set()
    server, port = create_server(
        [registration],
        health_servicer=health.aio.HealthServicer(),
        ready=ready,
        max_connection_age_s=0.5,
        max_connection_age_grace_s=5.0,
    )
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        stub = candidates_pb2_grpc.CandidateServiceStub(channel)
        request = candidates_pb2.GetCandidatesRequest(n=1)
        ends = time.monotonic() + 3.0
        calls = 0
        while time.monotonic() < ends:
            await asyncio.gather(*(stub.GetCandidates(request, timeout=5) for _ in range(4)))
            calls += 4
            await asyncio.sleep(0.02)
        assert len(peers.peers) == calls
        assert len(set(peers.peers)) >= 3, "connections older than 0.5 s were not recycled"
    finally:
        await channel.close()
        await server.stop(0)


def test_services_recycle_connections_every_five_minutes_by_default() -> None:
    from services.common.settings import EnvReader, ServerSettings

    settings = ServerSettings.read(EnvReader({"RECSYS_ARTIFACTS": "/"}))
    assert (settings.max_connection_age_s, settings.max_connection_age_grace_s) == (300.0, 660.0)
    custom = ServerSettings.read(EnvReader({"RECSYS_ARTIFACTS": "/", "RECSYS_MAX_CONNECTION_AGE_S": "0"}))
    assert custom.max_connection_age_s == 0.0
