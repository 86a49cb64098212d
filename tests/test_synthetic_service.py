"""The synthetic service on its own (it is a separate server, callable directly): it checks every request
itself, sizes each streamed message to fit the message limit, ends a stream that runs too long, and keeps
answering other calls while the generator works. Real SyntheticServicer on 127.0.0.1, a tiny trained GAN."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from recsys.v1 import common_pb2, synthetic_pb2, synthetic_pb2_grpc
from recsys_runtime.layout import WORKFLOW_DIR
from recsys_runtime.synthesis import GAN_DIR
from recsys_runtime.workflow import Workflow
from services.common.item_registry import SQLiteItemRegistry
from services.common.server import create_server, set_serving
from services.common.settings import DEFAULT_MAX_MESSAGE_BYTES, EnvReader, ServerSettings, SettingsError
from services.synthetic.core import SyntheticCore
from services.synthetic.servicer import DEFAULT_MAX_STREAM_S, StreamLimits, SyntheticServicer, registration
from trainer.config import load_config
from trainer.demo import generate
from trainer.synthesis import fit_synthesis

Request = synthetic_pb2.GenerateSyntheticRequest
KINDS = (Request.KIND_USERS, Request.KIND_ITEMS, Request.KIND_INTERACTIONS)
DEFAULT_MESSAGE_BYTES = DEFAULT_MAX_MESSAGE_BYTES
# 64 conditions of 64 bytes (key and value): the most conditions a request may carry, copied into every row.
HEAVY_CONDITIONS = {f"c{i:02d}": "v" * 61 for i in range(64)}


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny artefact with just what the synthetic service loads: the fitted workflow and the generators."""
    directory = tmp_path_factory.mktemp("artefact") / "v1"
    data = generate(n_users=200, n_items=60, mean_history=10, seed=3)
    workflow = Workflow.fit(data.interactions, 50, items=data.items, users=data.users)
    config = dict(load_config()["gan"], steps=20, item_steps=10, cold_history=10)
    targets = np.random.default_rng(0).standard_normal((workflow.items.size, 6)).astype(np.float32)
    synthesis = fit_synthesis(
        workflow.encode_interactions(data.interactions), workflow, data.users, data.items, targets, config, seed=0
    )
    workflow.save(directory / WORKFLOW_DIR)
    synthesis.save(directory / GAN_DIR)
    return directory


@dataclass
class Served:
    servicer: SyntheticServicer
    address: str
    stub: synthetic_pb2_grpc.SyntheticServiceStub
    channel: grpc.aio.Channel


async def serve(version_dir: Path, state: Path, limits: StreamLimits) -> AsyncIterator[Served]:
    registry = SQLiteItemRegistry(state / "registered_items.sqlite")
    await registry.open()
    servicer = SyntheticServicer(limits)
    servicer.core = SyntheticCore(version_dir, "v1", registry)
    ready, health_servicer = asyncio.Event(), health.aio.HealthServicer()
    names = [registration(servicer).full_name]
    server, port = create_server(
        [registration(servicer)],
        health_servicer=health_servicer,
        ready=ready,
        max_message_bytes=limits.max_message_bytes,
    )
    await server.start()
    ready.set()
    await set_serving(health_servicer, names, serving=True)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],  # the server's limit is tested
    )
    try:
        yield Served(servicer, address, synthetic_pb2_grpc.SyntheticServiceStub(channel), channel)
    finally:
        await channel.close()
        await server.stop(0)
        await registry.close()


@pytest.fixture
async def synthetic(version_dir: Path, tmp_path: Path) -> AsyncIterator[Served]:
    async for served in serve(version_dir, tmp_path, StreamLimits()):
        yield served


async def stream(served: Served, request: synthetic_pb2.GenerateSyntheticRequest, timeout: float | None = 60):
    return [chunk async for chunk in served.stub.GenerateSynthetic(request, timeout=timeout)]  # type: ignore[no-untyped-def]


async def refused_fields(call: object) -> list[str]:
    """The field violations of an INVALID_ARGUMENT answer."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    status = rpc_status.from_call(refused.value)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        fields += [v.field for v in bad_request.field_violations]
    return fields


# ---------------------------------------------------------------- every RPC checks its own request


async def test_an_unknown_kind_is_invalid_argument_naming_kind(synthetic: Served) -> None:
    for kind in (0, 7):
        assert await refused_fields(stream(synthetic, Request(kind=kind, count=5))) == ["kind"]  # type: ignore[arg-type]


async def test_a_direct_call_is_checked_like_one_through_the_gateway(synthetic: Served) -> None:
    bad = Request(kind=Request.KIND_USERS, count=0, chunk_size=-1, conditions={"age\u202egroup": "x"})
    assert sorted(await refused_fields(stream(synthetic, bad))) == [
        "chunk_size",
        "conditions['age\\u202egroup']",
        "count",
    ]
    over_budget = Request(kind=Request.KIND_ITEMS, count=5, conditions={f"c{i}": "v" * 1000 for i in range(8)})
    assert await refused_fields(stream(synthetic, over_budget)) == ["conditions"]
    history = synthetic_pb2.GenerateHistoryRequest(user_id="new\x7fuser", length=5000)
    assert sorted(await refused_fields(synthetic.stub.GenerateHistory(history, timeout=10))) == ["length", "user_id"]
    items = synthetic_pb2.RegisterItemsRequest(
        items=[common_pb2.Item(item_id="\ufeffitem", attributes={"genres": "a"})]
    )
    assert await refused_fields(synthetic.stub.RegisterItems(items, timeout=10)) == ["items[0].item_id"]


# ---------------------------------------------------------------- every message fits


async def test_default_chunks_are_cut_to_fit_the_message_limit(synthetic: Served) -> None:
    """1000 users (the default chunk) carrying the most conditions allowed take over 4 MiB: the service sends
    fewer per message instead, and every row arrives."""
    request = Request(kind=Request.KIND_USERS, count=1500, seed=1, conditions=HEAVY_CONDITIONS)
    chunks = await stream(synthetic, request)
    users = [user for chunk in chunks for user in chunk.users]
    assert len(users) == 1500 and len({u.user_id for u in users}) == 1500
    assert all(HEAVY_CONDITIONS.items() <= dict(u.attributes).items() for u in users)
    assert len(chunks[0].users) < 1000 and max(chunk.ByteSize() for chunk in chunks) <= DEFAULT_MESSAGE_BYTES


async def test_a_chunk_size_that_cannot_fit_one_message_is_refused(synthetic: Served) -> None:
    request = Request(kind=Request.KIND_USERS, count=20_000, chunk_size=10_000, conditions=HEAVY_CONDITIONS)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stream(synthetic, request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "chunk_size: at most" in str(refused.value.details())
    assert await refused_fields(stream(synthetic, request)) == ["chunk_size"]


@pytest.mark.parametrize("kind", KINDS, ids=["users", "items", "interactions"])
async def test_the_largest_chunks_fit_the_servers_message_limit(version_dir: Path, tmp_path: Path, kind: int) -> None:
    """With a small limit on the server (which refuses to send anything larger) and the heaviest conditions,
    the default chunks are cut to a few rows that stream whole and come close to the limit: the bound is
    tight, not merely safe."""
    limit = 32 * 1024
    async for served in serve(version_dir, tmp_path, StreamLimits(max_message_bytes=limit)):
        request = Request(kind=kind, count=200, seed=2, conditions=HEAVY_CONDITIONS)  # type: ignore[arg-type]
        chunks = await stream(served, request)
        sizes = [chunk.ByteSize() for chunk in chunks]
        rows = sum(len(c.interactions) if c.interactions else len(c.users) + len(c.items) for c in chunks)
        assert rows == 200 and max(sizes) <= limit and len(chunks) > 20
        if kind != Request.KIND_INTERACTIONS:  # a user or an item is nearly all conditions
            assert max(sizes) > limit * 0.8, sizes


# ---------------------------------------------------------------- a stream has a maximum duration


async def test_a_stream_ends_at_its_maximum_duration_even_without_a_caller_deadline(
    version_dir: Path, tmp_path: Path
) -> None:
    async for served in serve(version_dir, tmp_path, StreamLimits(max_stream_s=1.0)):
        request = Request(kind=Request.KIND_INTERACTIONS, count=10_000_000, chunk_size=20)
        started, received = time.monotonic(), 0
        call = served.stub.GenerateSynthetic(request)  # no deadline
        with pytest.raises(grpc.aio.AioRpcError) as stopped:
            async for _ in call:
                received += 1
        elapsed = time.monotonic() - started
        assert stopped.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "maximum duration of 1 s" in str(stopped.value.details())
        assert received > 0 and 1.0 <= elapsed < 5.0


def test_the_maximum_duration_is_a_setting(tmp_path: Path) -> None:
    environ = {"RECSYS_ARTIFACTS": str(tmp_path)}
    env = EnvReader(environ)
    assert StreamLimits.read(env, ServerSettings.read(env)) == StreamLimits(DEFAULT_MAX_STREAM_S, DEFAULT_MESSAGE_BYTES)
    env = EnvReader({**environ, "RECSYS_SYNTHETIC_MAX_STREAM_S": "30", "RECSYS_MAX_MESSAGE_BYTES": "65536"})
    assert StreamLimits.read(env, ServerSettings.read(env)) == StreamLimits(30.0, 65536)
    env = EnvReader({**environ, "RECSYS_SYNTHETIC_MAX_STREAM_S": "0"})
    StreamLimits.read(env, ServerSettings.read(env))
    with pytest.raises(SettingsError, match="RECSYS_SYNTHETIC_MAX_STREAM_S"):
        env.finish()


# ---------------------------------------------------------------- the generator runs off the event loop


def _health_during_a_cold_history(address: str) -> tuple[float, float, bool]:
    """From another thread (its own client, so nothing of it waits on the server's event loop): start a cold
    history, then time a health check while it runs. Returns (history s, health check s, history still running
    when the health check answered)."""
    with grpc.insecure_channel(address) as channel:
        synthetic_stub = synthetic_pb2_grpc.SyntheticServiceStub(channel)
        health_stub = health_pb2_grpc.HealthStub(channel)
        health_stub.Check(health_pb2.HealthCheckRequest(), timeout=10)  # connected
        started = time.monotonic()
        history = synthetic_stub.GenerateHistory.future(
            synthetic_pb2.GenerateHistoryRequest(user_id="cold-user", attributes={"country": "x"}), timeout=60
        )
        time.sleep(0.3)
        asked = time.monotonic()
        reply = health_stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
        answered = time.monotonic()
        running = not history.done()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING and len(history.result().history) > 0
        return time.monotonic() - started, answered - asked, running


async def test_health_answers_while_a_cold_history_is_generated(synthetic: Served) -> None:
    core = synthetic.servicer.core
    assert core is not None and core.synthesis is not None
    # More generator samples per cold user make one history take seconds on this tiny model.
    core.synthesis.samples = 250_000
    history_s, health_s, running = await asyncio.to_thread(_health_during_a_cold_history, synthetic.address)
    assert history_s > 1.0, "the cold history was too quick to show anything"
    assert running and health_s < 0.5, f"health took {health_s:.2f} s while a {history_s:.2f} s cold history ran"
