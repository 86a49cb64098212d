"""Redis stops or hangs while the suite serves: Recommend still answers (from the artefact's training
history, flagged as degraded), and RecordEvents refuses rather than acknowledging what it did not store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import redis.asyncio as redis_asyncio
from grpc_health.v1 import health

from recsys.v1 import common_pb2, features_pb2, features_pb2_grpc
from recsys_runtime.layout import CATALOG_DIR, HISTORIES_FILE, WORKFLOW_DIR
from recsys_runtime.models.popularity import PopularityRanking, fit_popularity
from recsys_runtime.workflow import Workflow
from services.common.clients import Deadline
from services.common.errors import Unavailable
from services.common.server import create_server
from services.common.settings import DEFAULT_MAX_MESSAGE_BYTES
from services.common.validation import EventInput
from services.features.adapters import RedisEventStore
from services.features.core import FeatureCore
from services.features.servicer import FeatureServicer, registration
from services.gateway.adapters import Addresses, BreakerSettings, Downstream, StageBudgets
from services.gateway.core import GatewayCore, Stage
from tests.redis_server import RedisServer, free_port
from trainer.demo import generate

READ_TIMEOUT_S = 0.1


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the features service reads of an artefact, written as the trainer lays it out."""
    directory = tmp_path_factory.mktemp("version")
    data = generate(n_users=30, n_items=40, mean_history=6, seed=5)
    Workflow.fit(data.interactions, max_history=8, items=data.items, users=data.users).save(directory / WORKFLOW_DIR)
    ordered = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    ordered[["user_id", "item_id", "timestamp"]].to_parquet(directory / HISTORIES_FILE, index=False)
    (directory / CATALOG_DIR).mkdir()
    data.users.astype(str).to_parquet(directory / CATALOG_DIR / "users.parquet", index=False)
    return directory


@pytest.fixture
async def core(version_dir: Path, redis_server: RedisServer) -> AsyncIterator[FeatureCore]:
    store = RedisEventStore(redis_server.url(), "outage", 100, 3600.0, read_timeout_s=READ_TIMEOUT_S)
    await store.open()
    yield FeatureCore(version_dir, "v1", store, max_events=100)
    await store.close()


def a_known_user(version_dir: Path) -> tuple[str, list[str]]:
    histories = pd.read_parquet(version_dir / HISTORIES_FILE)
    user = str(histories["user_id"].iloc[0])
    return user, [str(item) for item in histories.loc[histories["user_id"] == user, "item_id"]]


async def test_a_stopped_redis_leaves_the_training_history_flagged(
    core: FeatureCore, version_dir: Path, redis_server: RedisServer
) -> None:
    user, trained = a_known_user(version_dir)
    await core.record([EventInput(user, "i00039", int(time.time()) + 3600, "late", 0.0)])
    live = await core.user_context(user, {})
    assert "i00039" in live.seen_item_ids and not live.online_state_missing

    redis_server.stop()
    degraded = await core.user_context(user, {})
    assert degraded.online_state_missing and degraded.known_user
    assert degraded.seen_item_ids == list(dict.fromkeys(trained))
    assert degraded.item_ids == trained[-8:] and degraded.sequence is not None
    # A write is never acknowledged when it was not stored.
    with pytest.raises(Unavailable, match="redis write failed"):
        await core.record([EventInput(user, "i00001", int(time.time()), "lost?", 0.0)])


async def test_a_hung_redis_costs_the_read_timeout_not_the_request(
    core: FeatureCore, version_dir: Path, redis_server: RedisServer
) -> None:
    user, _ = a_known_user(version_dir)
    admin = redis_asyncio.Redis.from_url(redis_server.url())
    await admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")  # every command waits three seconds
    try:
        started = time.monotonic()
        context = await core.user_context(user, {})
        assert context.online_state_missing
        assert time.monotonic() - started < READ_TIMEOUT_S + 0.5
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()


@pytest.fixture
async def features_address(core: FeatureCore) -> AsyncIterator[str]:
    """The features service, served in this process over real gRPC."""
    ready = asyncio.Event()
    servicer = FeatureServicer()
    servicer.core = core
    server, port = create_server([registration(servicer)], health_servicer=health.aio.HealthServicer(), ready=ready)
    await server.start()
    ready.set()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_recommend_answers_and_flags_features_when_redis_is_down(
    core: FeatureCore, features_address: str, version_dir: Path, redis_server: RedisServer
) -> None:
    user, trained = a_known_user(version_dir)
    nowhere = f"127.0.0.1:{free_port()}"  # the other stages are down too: the gateway answers from popularity
    downstream = Downstream(
        Addresses(features=features_address, candidates=nowhere, ranking=nowhere, synthetic=nowhere),
        StageBudgets(features=1.0, candidates=1.0, ranking=1.0, synthetic=1.0),
        DEFAULT_MAX_MESSAGE_BYTES,
        BreakerSettings(failures=100, open_s=1.0),
    )
    downstream.open()
    workflow = core.workflow
    histories = pd.read_parquet(version_dir / HISTORIES_FILE)
    scores = fit_popularity(workflow.items.encode(histories["item_id"].to_numpy()), np.zeros(0), workflow.items.size, 0)
    fallback = PopularityRanking(workflow.items.ids.to_numpy(), scores, workflow.items.encode)
    gateway = GatewayCore(downstream, fallback, "v1", candidates_n=20, max_events=100)
    try:
        redis_server.stop()
        answer = await gateway.recommend(user, 5, {}, [], Deadline(time.monotonic() + 5))
        assert Stage.FEATURES in answer.degraded
        assert len(answer.items) == 5 and not set(trained) & {item.item_id for item in answer.items}

        async with grpc.aio.insecure_channel(features_address) as channel:
            stub = features_pb2_grpc.FeatureServiceStub(channel)
            # The flag comes whatever the read mask asks for.
            masked = features_pb2.GetUserContextRequest(user_id=user)
            masked.read_mask.paths.append("seen_item_ids")
            context = await stub.GetUserContext(masked, timeout=5)
            assert context.online_state_missing and list(context.seen_item_ids) == list(dict.fromkeys(trained))
            event = common_pb2.Event(user_id=user, item_id="i00001", timestamp=int(time.time()) + 3600, event_id="x")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RecordEvents(features_pb2.FeatureRecordEventsRequest(events=[event]), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await downstream.close()
