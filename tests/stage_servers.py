"""Downstream stages for the gateway's tests: real grpc.aio servers on 127.0.0.1, built by the services' own
bootstrap (health, error mapping), implementing the generated servicers with behaviour a test controls. They
stand in for the other side of a real connection, not for the code under test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health

from recsys.v1 import (
    candidates_pb2,
    candidates_pb2_grpc,
    common_pb2,
    features_pb2,
    features_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
    synthetic_pb2,
    synthetic_pb2_grpc,
)
from services.common.encoding import pack_candidates, packed_scores
from services.common.errors import Unavailable
from services.common.server import Registration, create_server, set_serving

OK, DOWN, SLOW, HANG = "ok", "down", "slow", "hang"


@dataclass
class Behaviour:
    """What one method does next: answer, refuse with UNAVAILABLE, answer after `slow_s`, or never answer."""

    mode: str = OK
    slow_s: float = 0.2
    calls: int = 0
    cancelled: int = 0

    async def act(self) -> None:
        self.calls += 1
        if self.mode == DOWN:
            raise Unavailable("scripted outage")
        try:
            if self.mode == SLOW:
                await asyncio.sleep(self.slow_s)
            elif self.mode == HANG:
                await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class Features(features_pb2_grpc.FeatureServiceServicer):
    """Users whose id starts with "known" have a history; everyone else is cold."""

    def __init__(self) -> None:
        self.user_context = Behaviour()
        self.record = Behaviour()

    def registration(self) -> Registration:
        return Registration(
            features_pb2_grpc.add_FeatureServiceServicer_to_server,
            self,
            features_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name,
        )

    async def GetUserContext(
        self, request: features_pb2.GetUserContextRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.UserContext:
        await self.user_context.act()
        if not request.user_id.startswith("known"):
            return common_pb2.UserContext(user_id=request.user_id, known_user=False)
        history = [common_pb2.HistoryEntry(item_id="i1", timestamp=1)]
        return common_pb2.UserContext(user_id=request.user_id, known_user=True, history=history, seen_item_ids=["i1"])

    async def RecordEvents(
        self, request: features_pb2.FeatureRecordEventsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.FeatureRecordEventsResponse:
        await self.record.act()
        return features_pb2.FeatureRecordEventsResponse(accepted=len(request.events))


class Candidates(candidates_pb2_grpc.CandidateServiceServicer):
    """Five items; remembers whether each request's context carried a generated history."""

    ITEMS = ("i1", "i2", "i3", "i4", "i5")

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.generated_history: list[bool] = []

    def registration(self) -> Registration:
        return Registration(
            candidates_pb2_grpc.add_CandidateServiceServicer_to_server,
            self,
            candidates_pb2.DESCRIPTOR.services_by_name["CandidateService"].full_name,
        )

    async def GetCandidates(
        self, request: candidates_pb2.GetCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> candidates_pb2.GetCandidatesResponse:
        await self.behaviour.act()
        self.generated_history.append(request.context.generated_history)
        seen = {*request.context.seen_item_ids, *request.exclude_item_ids}
        items = [item for item in self.ITEMS if item not in seen][: request.n]
        source = "autoencoder" if request.context.history else "popularity"
        scores = np.linspace(1.0, 0.5, len(items), dtype=np.float32)
        return candidates_pb2.GetCandidatesResponse(packed=pack_candidates(items, scores, source))


class Ranking(ranking_pb2_grpc.RankingServiceServicer):
    """Reverses the candidate order, so a ranked answer is told apart from candidate order."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()

    def registration(self) -> Registration:
        return Registration(
            ranking_pb2_grpc.add_RankingServiceServicer_to_server,
            self,
            ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name,
        )

    async def Rank(
        self, request: ranking_pb2.RankRequest, context: grpc.aio.ServicerContext
    ) -> ranking_pb2.RankResponse:
        await self.behaviour.act()
        packed = request.packed_candidates
        pairs = list(zip(packed.item_ids, packed_scores(packed).tolist(), strict=True))[::-1]
        items = [common_pb2.ScoredItem(item_id=i, score=float(s), source="ranker") for i, s in pairs]
        return ranking_pb2.RankResponse(items=items[: request.k or None], model="reversed")


class Synthetic(synthetic_pb2_grpc.SyntheticServiceServicer):
    """A cold user's history is one item; `items` scripts RegisterItems and GenerateSynthetic alike."""

    def __init__(self) -> None:
        self.cold_history = Behaviour()
        self.items = Behaviour()

    def registration(self) -> Registration:
        return Registration(
            synthetic_pb2_grpc.add_SyntheticServiceServicer_to_server,
            self,
            synthetic_pb2.DESCRIPTOR.services_by_name["SyntheticService"].full_name,
        )

    async def GenerateHistory(
        self, request: synthetic_pb2.GenerateHistoryRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.GenerateHistoryResponse:
        await self.cold_history.act()
        history = [common_pb2.HistoryEntry(item_id="i3", weight=0.9)]
        return synthetic_pb2.GenerateHistoryResponse(history=history, model_version="gan-1")

    async def GenerateSynthetic(
        self, request: synthetic_pb2.GenerateSyntheticRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        await self.items.act()
        for i in range(request.count):
            yield synthetic_pb2.GenerateSyntheticResponse(items=[common_pb2.Item(item_id=f"synthetic-{i}")])

    async def RegisterItems(
        self, request: synthetic_pb2.RegisterItemsRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.RegisterItemsResponse:
        await self.items.act()
        return synthetic_pb2.RegisterItemsResponse(registered=len(request.items))


@dataclass
class StageServer:
    server: grpc.aio.Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0)


async def serve(
    registration: Registration, port: int = 0, credentials: grpc.ServerCredentials | None = None
) -> StageServer:
    """A server with one service, health SERVING, through the services' own bootstrap (port 0: a free one;
    with `credentials`, TLS)."""
    ready = asyncio.Event()
    ready.set()
    health_servicer = health.aio.HealthServicer()
    server, bound = create_server(
        [registration], health_servicer=health_servicer, ready=ready, port=port, credentials=credentials
    )
    await set_serving(health_servicer, [registration.full_name], serving=True)
    await server.start()
    return StageServer(server, bound)
