"""The gateway's downstream calls: one channel per service, every call with a deadline, errors mapped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

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
from services.common import tracing
from services.common.breaker import CircuitBreaker
from services.common.clients import Deadline, domain_error_from_rpc, open_channel, wait_until_serving
from services.common.encoding import packed_scores
from services.common.errors import DeadlineExceeded, Unavailable
from services.common.validation import EventInput
from services.gateway.core import Scored


@dataclass(frozen=True)
class Addresses:
    features: str
    candidates: str
    ranking: str
    synthetic: str


@dataclass(frozen=True)
class StageBudgets:
    """The most each stage may take of a request, in seconds (cut further by the caller's deadline)."""

    features: float
    candidates: float
    ranking: float
    synthetic: float


# What a Recommend reads of the user's context: the model inputs are the history's indices, not the encoded
# sequence and attributes, which the features service then does not compute.
_RECOMMEND_READS = field_mask_pb2.FieldMask(
    paths=["user_id", "known_user", "history", "seen_item_ids", "seen_item_indices", "artifact_version"]
)


def _scored(items: Sequence[common_pb2.ScoredItem]) -> list[Scored]:
    return [Scored(i.item_id, i.score, i.source) for i in items]


@dataclass(frozen=True)
class BreakerSettings:
    failures: int
    open_s: float


class Downstream:
    def __init__(
        self, addresses: Addresses, budgets: StageBudgets, max_message_bytes: int, breakers: BreakerSettings
    ) -> None:
        self.addresses = addresses
        self.budgets = budgets
        self.max_message_bytes = max_message_bytes
        self._channels: dict[str, grpc.aio.Channel] = {}
        # One per downstream: a stage that keeps failing is skipped at once instead of timing out per call.
        self._breakers = {name: CircuitBreaker(name, breakers.failures, breakers.open_s) for name in vars(addresses)}

    def open(self) -> None:
        """Channels belong to the running event loop, so they are made inside it."""
        self._channels = {
            name: open_channel(address, self.max_message_bytes) for name, address in vars(self.addresses).items()
        }
        self._features = features_pb2_grpc.FeatureServiceStub(self._channels["features"])
        self._candidates = candidates_pb2_grpc.CandidateServiceStub(self._channels["candidates"])
        self._ranking = ranking_pb2_grpc.RankingServiceStub(self._channels["ranking"])
        self._synthetic = synthetic_pb2_grpc.SyntheticServiceStub(self._channels["synthetic"])

    async def wait_until_ready(self, timeout_s: float) -> None:
        await asyncio.gather(*(wait_until_serving(channel, timeout_s) for channel in self._channels.values()))

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        self._channels = {}

    async def _call(self, stage: str, method: Callable[..., Awaitable[Any]], request: Any, timeout: float) -> Any:
        breaker = self._breakers[stage]
        breaker.before_call()
        try:
            reply = await method(request, timeout=timeout, metadata=tracing.outgoing_metadata())
        except grpc.aio.AioRpcError as error:
            domain_error = domain_error_from_rpc(error, stage)
            if isinstance(domain_error, (Unavailable, DeadlineExceeded)):
                breaker.failed()
            else:
                breaker.succeeded()  # it answered; the request was what it refused
            raise domain_error from None
        breaker.succeeded()
        return reply

    async def user_context(
        self, user_id: str, attributes: Mapping[str, str], deadline: Deadline
    ) -> common_pb2.UserContext:
        request = features_pb2.GetUserContextRequest(user_id=user_id, attributes=attributes, read_mask=_RECOMMEND_READS)
        context: common_pb2.UserContext = await self._call(
            "features", self._features.GetUserContext, request, deadline.timeout(self.budgets.features)
        )
        return context

    async def candidates(
        self, context: common_pb2.UserContext, n: int, exclude: Sequence[str], deadline: Deadline
    ) -> common_pb2.PackedCandidates:
        request = candidates_pb2.GetCandidatesRequest(context=context, n=n, exclude_item_ids=exclude, packed=True)
        reply = await self._call(
            "candidates", self._candidates.GetCandidates, request, deadline.timeout(self.budgets.candidates)
        )
        if len(packed_scores(reply.packed)) != len(reply.packed.item_ids):
            raise Unavailable("the candidate stage answered without one score per candidate")
        return reply.packed

    async def rank(
        self, context: common_pb2.UserContext, candidates: common_pb2.PackedCandidates, k: int, deadline: Deadline
    ) -> list[Scored]:
        request = ranking_pb2.RankRequest(packed_candidates=candidates, k=k)
        # Ranking reads the user and the history only; the seen items stay behind (the candidate stage left
        # them out). A copy then two cleared fields costs a third of building the context field by field.
        request.context.CopyFrom(context)
        request.context.ClearField("seen_item_ids")
        request.context.ClearField("seen_item_indices")
        reply = await self._call("ranking", self._ranking.Rank, request, deadline.timeout(self.budgets.ranking))
        return _scored(reply.items)

    async def record(self, events: Sequence[EventInput], deadline: Deadline) -> tuple[int, int]:
        request = features_pb2.FeatureRecordEventsRequest(
            events=[
                common_pb2.Event(
                    user_id=e.user_id, item_id=e.item_id, timestamp=e.timestamp, event_id=e.event_id, rating=e.rating
                )
                for e in events
            ]
        )
        reply = await self._call(
            "features", self._features.RecordEvents, request, deadline.timeout(self.budgets.features)
        )
        return int(reply.accepted), int(reply.duplicates)

    async def cold_history(
        self, user_id: str, attributes: Mapping[str, str], deadline: Deadline
    ) -> tuple[list[common_pb2.HistoryEntry], str]:
        request = synthetic_pb2.GenerateHistoryRequest(user_id=user_id, attributes=attributes)
        reply = await self._call(
            "synthetic", self._synthetic.GenerateHistory, request, deadline.timeout(self.budgets.synthetic)
        )
        return list(reply.history), reply.model_version

    async def register_items(
        self, request: synthetic_pb2.RegisterItemsRequest, deadline: Deadline
    ) -> synthetic_pb2.RegisterItemsResponse:
        reply: synthetic_pb2.RegisterItemsResponse = await self._call(
            "synthetic", self._synthetic.RegisterItems, request, deadline.timeout(self.budgets.synthetic)
        )
        return reply

    async def generate(
        self, request: synthetic_pb2.GenerateSyntheticRequest, deadline: Deadline
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        # A stream may run long: it is bounded by the caller's deadline only, not a stage budget.
        timeout = None if deadline.expires_at is None else deadline.timeout(float("inf"))
        try:
            async for chunk in self._synthetic.GenerateSynthetic(
                request, timeout=timeout, metadata=tracing.outgoing_metadata()
            ):
                yield chunk
        except grpc.aio.AioRpcError as error:
            raise domain_error_from_rpc(error, "synthetic") from None
