"""The gateway's downstream calls over real gRPC connections: the circuit breakers' verdicts (cancelled calls,
the caller's own deadline, reads apart from writes) and a start without the synthetic service."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health

from recsys.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, synthetic_pb2
from recsys_runtime.models.popularity import PopularityRanking
from services.common.clients import Deadline
from services.common.errors import DeadlineExceeded, Unavailable
from services.common.server import create_server
from services.common.settings import DEFAULT_MAX_MESSAGE_BYTES
from services.common.validation import EventInput
from services.gateway.adapters import Addresses, BreakerSettings, Downstream, StageBudgets, user_state
from services.gateway.core import CandidateList, GatewayCore
from services.gateway.servicer import GatewayServicer, registration
from tests.stage_servers import DOWN, HANG, OK, SLOW, Candidates, Features, Ranking, StageServer, Synthetic, serve

MAX_MESSAGE_BYTES = DEFAULT_MAX_MESSAGE_BYTES


@dataclass
class Stages:
    features: Features
    candidates: Candidates
    ranking: Ranking
    synthetic: Synthetic
    servers: dict[str, StageServer]

    def addresses(self, **overrides: str) -> Addresses:
        addresses = {name: server.address for name, server in self.servers.items()}
        return Addresses(**{**addresses, **overrides})


@pytest.fixture
async def stages() -> AsyncIterator[Stages]:
    features, candidates, ranking, synthetic = Features(), Candidates(), Ranking(), Synthetic()
    servers = {
        "features": await serve(features.registration()),
        "candidates": await serve(candidates.registration()),
        "ranking": await serve(ranking.registration()),
        "synthetic": await serve(synthetic.registration()),
    }
    yield Stages(features, candidates, ranking, synthetic, servers)
    await asyncio.gather(*(server.stop() for server in servers.values()))


@pytest.fixture
async def downstreams() -> AsyncIterator[list[Downstream]]:
    """Every Downstream a test opens is closed after it, passed or failed."""
    opened: list[Downstream] = []
    yield opened
    await asyncio.gather(*(downstream.close() for downstream in opened))


def open_downstream(
    opened: list[Downstream], addresses: Addresses, budget_s: float = 1.0, failures: int = 3, open_s: float = 0.1
) -> Downstream:
    budgets = StageBudgets(features=budget_s, candidates=budget_s, ranking=budget_s, synthetic=budget_s)
    downstream = Downstream(addresses, budgets, MAX_MESSAGE_BYTES, BreakerSettings(failures, open_s))
    downstream.open()
    opened.append(downstream)
    return downstream


def within(seconds: float) -> Deadline:
    return Deadline(time.monotonic() + seconds)


CONTEXT = user_state("known-1", common_pb2.UserContext(user_id="known-1", known_user=True))
EVENTS = [EventInput("known-1", "i2", 1_700_000_000, "e1", 0.0)]


async def candidates_of(downstream: Downstream) -> CandidateList:
    return await downstream.candidates(CONTEXT, 3, [], within(5))


async def test_a_cancelled_half_open_trial_does_not_keep_the_circuit_open(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    downstream = open_downstream(downstreams, stages.addresses(), failures=1, open_s=0.05)
    packed = await candidates_of(downstream)
    stages.ranking.behaviour.mode = DOWN
    with pytest.raises(Unavailable, match="ranking is unavailable"):
        await downstream.rank(CONTEXT, packed, 3, within(5))  # one failure opens the circuit
    await asyncio.sleep(0.1)  # half-open: the next call is the trial

    stages.ranking.behaviour.mode = HANG
    trial = asyncio.create_task(downstream.rank(CONTEXT, packed, 3, within(5)))
    while stages.ranking.behaviour.calls < 2:  # the trial reached the ranking stage
        await asyncio.sleep(0.01)
    trial.cancel()  # the caller went away mid-trial
    with pytest.raises(asyncio.CancelledError):
        await trial
    while stages.ranking.behaviour.cancelled < 1:  # the cancellation reached the stage over the connection
        await asyncio.sleep(0.01)

    stages.ranking.behaviour.mode = OK
    ranked = await downstream.rank(CONTEXT, packed, 3, within(5))  # the next call is let through as the trial
    assert [item.item_id for item in ranked] == ["i3", "i2", "i1"]
    await downstream.rank(CONTEXT, packed, 3, within(5))  # and its success closed the circuit


async def test_the_callers_short_deadline_does_not_open_the_circuit(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    downstream = open_downstream(downstreams, stages.addresses(), budget_s=1.0, failures=3)
    stages.features.user_context.mode = SLOW  # 0.2 s: well inside the stage's budget
    for _ in range(5):  # callers that give the whole request 10 ms
        with pytest.raises(DeadlineExceeded):
            await downstream.user_context("known-1", {}, within(0.01))
    # Everyone else still gets through: the circuit did not open.
    context = await downstream.user_context("known-1", {}, within(5))
    assert context.known_user


async def test_a_stage_out_of_its_own_budget_still_opens_the_circuit(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    downstream = open_downstream(downstreams, stages.addresses(), budget_s=0.05, failures=3, open_s=5.0)
    stages.features.user_context.mode = SLOW
    for _ in range(3):
        with pytest.raises(DeadlineExceeded):
            await downstream.user_context("known-1", {}, within(5))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="circuit open"):
        await downstream.user_context("known-1", {}, within(5))
    assert time.monotonic() - started < 0.05  # refused at once, without waiting out the budget
    assert stages.features.user_context.calls == 3


async def test_failing_feature_writes_do_not_open_the_circuit_for_reads_nor_the_other_way(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    downstream = open_downstream(downstreams, stages.addresses(), failures=2, open_s=5.0)
    stages.features.record.mode = DOWN  # e.g. the online store refuses writes
    for _ in range(2):
        with pytest.raises(Unavailable, match="features is unavailable"):
            await downstream.record(EVENTS, within(5))
    with pytest.raises(Unavailable, match="circuit open"):
        await downstream.record(EVENTS, within(5))
    assert (await downstream.user_context("known-1", {}, within(5))).known_user  # reads go on

    stages.features.record.mode = OK
    reads = open_downstream(downstreams, stages.addresses(), failures=2, open_s=5.0)
    stages.features.user_context.mode = DOWN
    for _ in range(2):
        with pytest.raises(Unavailable, match="features is unavailable"):
            await reads.user_context("known-1", {}, within(5))
    with pytest.raises(Unavailable, match="circuit open"):
        await reads.user_context("known-1", {}, within(5))
    assert await reads.record(EVENTS, within(5)) == (1, 0)  # writes go on


async def test_failing_item_registration_does_not_open_the_circuit_for_cold_users_nor_the_other_way(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    register = synthetic_pb2.RegisterItemsRequest(items=[common_pb2.Item(item_id="new-1")])
    downstream = open_downstream(downstreams, stages.addresses(), failures=2, open_s=5.0)
    stages.synthetic.items.mode = DOWN
    for _ in range(3):
        with pytest.raises(Unavailable):
            await downstream.register_items(register, within(5))
    assert stages.synthetic.items.calls == 2  # the third was refused by the open circuit
    history, version = await downstream.cold_history("cold-1", {}, within(5))
    assert [entry.item_id for entry in history] == ["i3"] and version == "gan-1"

    stages.synthetic.items.mode = OK
    cold = open_downstream(downstreams, stages.addresses(), failures=2, open_s=5.0)
    stages.synthetic.cold_history.mode = DOWN
    calls_before = stages.synthetic.cold_history.calls
    for _ in range(3):
        with pytest.raises(Unavailable):
            await cold.cold_history("cold-1", {}, within(5))
    assert stages.synthetic.cold_history.calls - calls_before == 2
    assert (await cold.register_items(register, within(5))).registered == 1


async def test_failing_synthetic_streams_count_with_item_registration_not_with_cold_users(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    downstream = open_downstream(downstreams, stages.addresses(), failures=2, open_s=5.0)
    request = synthetic_pb2.GenerateSyntheticRequest(kind=synthetic_pb2.GenerateSyntheticRequest.KIND_ITEMS, count=3)
    rows = [chunk async for chunk in downstream.generate(request, Deadline(None))]
    assert len(rows) == 3
    stages.synthetic.items.mode = DOWN
    for _ in range(2):
        with pytest.raises(Unavailable, match="synthetic is unavailable"):
            _ = [chunk async for chunk in downstream.generate(request, Deadline(None))]
    register = synthetic_pb2.RegisterItemsRequest(items=[common_pb2.Item(item_id="new-1")])
    with pytest.raises(Unavailable, match="circuit open"):
        await downstream.register_items(register, within(5))
    history, _ = await downstream.cold_history("cold-1", {}, within(5))
    assert [entry.item_id for entry in history] == ["i3"]


async def test_candidates_the_gateway_made_are_packed_for_ranking_and_packed_ones_handed_on(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    downstream = open_downstream(downstreams, stages.addresses())
    own = CandidateList(["i4", "i5"], np.array([2.0, 1.0], np.float32), "popularity")
    assert [(i.item_id, i.score) for i in await downstream.rank(CONTEXT, own, 2, within(5))] == [
        ("i5", 1.0),
        ("i4", 2.0),
    ]
    packed = await candidates_of(downstream)
    assert list(packed.item_ids) == ["i1", "i2", "i3"] and packed.wire is not None
    assert [i.item_id for i in await downstream.rank(CONTEXT, packed, 3, within(5))] == ["i3", "i2", "i1"]


async def test_a_generated_history_is_a_new_flagged_context_and_the_features_one_stays_as_it_was(
    stages: Stages, downstreams: list[Downstream]
) -> None:
    downstream = open_downstream(downstreams, stages.addresses())
    cold = await downstream.user_context("cold-1", {}, within(5))
    assert not cold.known_user and not cold.has_history
    generated = await downstream.with_generated_history(cold, {}, within(5))
    assert generated.has_history and generated.user_id == "cold-1" and not generated.known_user
    assert isinstance(generated.wire, common_pb2.UserContext) and isinstance(cold.wire, common_pb2.UserContext)
    assert generated.wire.generated_history and generated.wire.artifact_version == "gan-1"
    assert [entry.item_id for entry in generated.wire.history] == ["i3"]
    assert not cold.wire.history and not cold.wire.generated_history
    await downstream.candidates(generated, 3, [], within(5))
    assert stages.candidates.generated_history == [True]


def popularity() -> PopularityRanking:
    ids = np.array(Candidates.ITEMS)
    index = {item: i + 1 for i, item in enumerate(Candidates.ITEMS)}

    def encode(items: list[str]) -> np.ndarray:
        return np.array([index.get(item, 0) for item in items], dtype=np.int32)

    return PopularityRanking(ids, np.array([0.0, 5, 4, 3, 2, 1], dtype=np.float32), encode)


async def test_the_gateway_starts_and_serves_without_the_synthetic_service(
    stages: Stages, downstreams: list[Downstream], caplog: pytest.LogCaptureFixture
) -> None:
    await stages.servers["synthetic"].stop()
    synthetic_port = stages.servers["synthetic"].port  # nothing listens here now
    downstream = open_downstream(downstreams, stages.addresses(synthetic=f"127.0.0.1:{synthetic_port}"), open_s=0.2)
    caplog.set_level(logging.INFO, logger="services.gateway.adapters")
    started = time.monotonic()
    await downstream.wait_until_ready(timeout_s=1.0)  # features, candidates and ranking serve
    assert time.monotonic() - started < 0.9
    assert any("started without the synthetic service" in r.getMessage() for r in caplog.records)

    servicer = GatewayServicer(downstream, default_deadline_s=2.0)
    servicer.core = GatewayCore(downstream, popularity(), "v1", candidates_n=5, max_events=10)
    ready = asyncio.Event()
    ready.set()
    gateway, port = create_server([registration(servicer)], health_servicer=health.aio.HealthServicer(), ready=ready)
    await gateway.start()
    synthetic: StageServer | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            cold = gateway_pb2.RecommendRequest(user_id="cold-1", k=3)
            answer = await stub.Recommend(cold, timeout=5)
            assert list(answer.degraded_stages) == [gateway_pb2.STAGE_SYNTHETIC] and answer.cold_start
            assert len(answer.items) == 3 and stages.candidates.generated_history == [False]
            warm = await stub.Recommend(gateway_pb2.RecommendRequest(user_id="known-1", k=3), timeout=5)
            assert not warm.degraded_stages and [i.item_id for i in warm.items] == ["i5", "i4", "i3"]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RegisterItems(synthetic_pb2.RegisterItemsRequest(items=[common_pb2.Item(item_id="n")]))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            # The synthetic service comes up: cold users get their generated history from then on.
            synthetic = await serve(stages.synthetic.registration(), port=synthetic_port)
            give_up = time.monotonic() + 10  # the channel's reconnect backoff, capped at 10 s
            while (answer := await stub.Recommend(cold, timeout=5)).degraded_stages and time.monotonic() < give_up:
                await asyncio.sleep(0.1)
            assert not answer.degraded_stages and stages.candidates.generated_history[-1]
            while not any("synthetic service serving now" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < give_up
                await asyncio.sleep(0.05)
    finally:
        await gateway.stop(0)
        if synthetic is not None:
            await synthetic.stop()
