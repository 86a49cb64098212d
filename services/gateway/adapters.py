"""The gateway's downstream calls: one channel per service, every call with a deadline, errors mapped."""

from __future__ import annotations

import asyncio
import logging
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
from services.common.breaker import Attempt, CircuitBreaker
from services.common.clients import Deadline, domain_error_from_rpc, open_channel, wait_until_serving
from services.common.encoding import pack_candidates, packed_scores
from services.common.errors import DeadlineExceeded, DomainError, Unavailable
from services.common.tls import ClientCertificates
from services.common.validation import EventInput
from services.gateway.core import CandidateList, Scored, UserState

log = logging.getLogger(__name__)


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


def user_state(user_id: str, context: common_pb2.UserContext) -> UserState:
    """The core's view of a user's context. The message travels on to the stages as the state's wire form,
    never decoded: the seen items are a view over it, not a copy."""
    return UserState(
        user_id=user_id,
        known_user=context.known_user,
        online_state_missing=context.online_state_missing,
        has_history=len(context.history) > 0,
        seen_item_ids=context.seen_item_ids,
        wire=context,
    )


def _context(state: UserState) -> common_pb2.UserContext:
    if not isinstance(state.wire, common_pb2.UserContext):
        raise TypeError(f"user state without a UserContext to send: {type(state.wire).__name__}")
    return state.wire


def _packed(candidates: CandidateList) -> common_pb2.PackedCandidates:
    """As the candidate stage packed them, or packed here when the gateway made them (its popularity fallback)."""
    if candidates.wire is None:
        return pack_candidates(candidates.item_ids, candidates.scores, candidates.source)
    if not isinstance(candidates.wire, common_pb2.PackedCandidates):
        raise TypeError(f"candidates without PackedCandidates to send: {type(candidates.wire).__name__}")
    return candidates.wire


@dataclass(frozen=True)
class BreakerSettings:
    failures: int
    open_s: float


# A trial call still unreported this long after its own timeout is taken as lost.
_TRIAL_GRACE_S = 1.0

# Without these the gateway cannot answer a Recommend at all; the synthetic stage only serves cold users (who
# degrade to popularity without it), RegisterItems and GenerateSynthetic.
_REQUIRED_STAGES = ("features", "candidates", "ranking")


@dataclass(frozen=True)
class _Breakers:
    """One per call path, not per service: reads and writes fail apart (a store that refuses writes may still
    serve reads), so a failing write path must not open the circuit for the reads, nor the other way round."""

    user_context: CircuitBreaker
    record: CircuitBreaker
    candidates: CircuitBreaker
    ranking: CircuitBreaker
    cold_history: CircuitBreaker
    synthetic_items: CircuitBreaker  # RegisterItems and GenerateSynthetic

    @classmethod
    def of(cls, settings: BreakerSettings, budgets: StageBudgets) -> _Breakers:
        def breaker(name: str, budget_s: float) -> CircuitBreaker:
            return CircuitBreaker(name, settings.failures, settings.open_s, trial_expiry_s=budget_s + _TRIAL_GRACE_S)

        return cls(
            user_context=breaker("features (user context)", budgets.features),
            record=breaker("features (record events)", budgets.features),
            candidates=breaker("candidates", budgets.candidates),
            ranking=breaker("ranking", budgets.ranking),
            cold_history=breaker("synthetic (cold-user history)", budgets.synthetic),
            synthetic_items=breaker("synthetic (items and synthetic data)", budgets.synthetic),
        )


def _judge(attempt: Attempt, error: DomainError, cut_by_caller: bool) -> None:
    """A downstream error as the breaker's verdict on the stage."""
    if isinstance(error, DeadlineExceeded):
        if not cut_by_caller:
            attempt.failed()  # the stage used its whole budget
        # Otherwise the caller's own deadline ran out first, which says nothing about the stage: no verdict.
    elif isinstance(error, Unavailable):
        attempt.failed()
    else:
        attempt.succeeded()  # it answered; the request was what it refused


# How often the gateway looks at its certificate files for a rotation (a stat of three files).
CERTIFICATE_CHECK_S = 30.0


class Downstream:
    def __init__(
        self,
        addresses: Addresses,
        budgets: StageBudgets,
        max_message_bytes: int,
        breakers: BreakerSettings,
        certificates: ClientCertificates | None = None,
    ) -> None:
        self.addresses = addresses
        # mTLS to every stage when set; the channels are reopened when the files rotate (grpc keeps a
        # channel's credentials for its lifetime).
        self.certificates = certificates
        self._rotation: asyncio.Task[None] | None = None
        self.budgets = budgets
        self.max_message_bytes = max_message_bytes
        self._channels: dict[str, grpc.aio.Channel] = {}
        # A call path that keeps failing is skipped at once instead of timing out per call.
        self._breakers = _Breakers.of(breakers, budgets)
        self._synthetic_watch: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Channels belong to the running event loop, so they are made inside it."""
        credentials = None if self.certificates is None else self.certificates.credentials()
        self._channels = {
            name: open_channel(address, self.max_message_bytes, credentials)
            for name, address in vars(self.addresses).items()
        }
        self._features = features_pb2_grpc.FeatureServiceStub(self._channels["features"])
        self._candidates = candidates_pb2_grpc.CandidateServiceStub(self._channels["candidates"])
        self._ranking = ranking_pb2_grpc.RankingServiceStub(self._channels["ranking"])
        self._synthetic = synthetic_pb2_grpc.SyntheticServiceStub(self._channels["synthetic"])

    async def wait_until_ready(self, timeout_s: float) -> None:
        """Wait for the stages a Recommend needs; the synthetic stage is used whenever it answers."""
        synthetic = asyncio.create_task(wait_until_serving(self._channels["synthetic"], timeout_s))
        try:
            await asyncio.gather(*(wait_until_serving(self._channels[name], timeout_s) for name in _REQUIRED_STAGES))
        except BaseException:
            synthetic.cancel()
            raise
        if synthetic.done() and synthetic.exception() is None:
            return
        synthetic.cancel()
        log.warning(
            "started without the synthetic service: cold users get popularity answers flagged STAGE_SYNTHETIC,"
            " RegisterItems and GenerateSynthetic answer UNAVAILABLE, until it serves",
            extra={"address": self.addresses.synthetic},
        )
        self._synthetic_watch = asyncio.create_task(self._watch_synthetic(timeout_s))

    async def _watch_synthetic(self, period_s: float) -> None:
        """Only says when the synthetic service comes: calls go to it as soon as it answers, watched or not."""
        while True:
            try:
                await wait_until_serving(self._channels["synthetic"], period_s)
            except Unavailable:
                log.warning("synthetic service still not serving", extra={"address": self.addresses.synthetic})
                continue
            log.info("synthetic service serving now: cold users, RegisterItems and GenerateSynthetic go to it")
            return

    def follow_certificate_rotation(self, every_s: float = CERTIFICATE_CHECK_S) -> None:
        if self.certificates is not None and self._rotation is None:
            self._rotation = asyncio.create_task(self._follow_rotation(every_s))

    async def _follow_rotation(self, every_s: float) -> None:
        assert self.certificates is not None
        while True:
            await asyncio.sleep(every_s)
            if not await asyncio.to_thread(self.certificates.reload_if_changed):
                continue
            old = self._channels
            self.open()  # the next calls go over new connections with the new certificate
            # Calls in flight on the old channels finish within their deadlines.
            await asyncio.sleep(max(vars(self.budgets).values()))
            await asyncio.gather(*(channel.close() for channel in old.values()))

    async def close(self) -> None:
        if self._rotation is not None:
            self._rotation.cancel()
            await asyncio.gather(self._rotation, return_exceptions=True)
            self._rotation = None
        if self._synthetic_watch is not None:
            self._synthetic_watch.cancel()
            await asyncio.gather(self._synthetic_watch, return_exceptions=True)
            self._synthetic_watch = None
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        self._channels = {}

    async def _call(
        self,
        breaker: CircuitBreaker,
        stage: str,
        method: Callable[..., Awaitable[Any]],
        request: Any,
        budget_s: float,
        deadline: Deadline,
    ) -> Any:
        timeout = deadline.timeout(budget_s)
        cut_by_caller = timeout < budget_s
        # Cancelled (the caller went away) or left by any error without a verdict, the attempt frees its slot.
        with breaker.attempt() as attempt:
            try:
                reply = await method(request, timeout=timeout, metadata=tracing.outgoing_metadata())
            except grpc.aio.AioRpcError as error:
                domain_error = domain_error_from_rpc(error, stage)
                _judge(attempt, domain_error, cut_by_caller)
                raise domain_error from None
            attempt.succeeded()
        return reply

    async def user_context(self, user_id: str, attributes: Mapping[str, str], deadline: Deadline) -> UserState:
        request = features_pb2.GetUserContextRequest(user_id=user_id, attributes=attributes, read_mask=_RECOMMEND_READS)
        context: common_pb2.UserContext = await self._call(
            self._breakers.user_context,
            "features",
            self._features.GetUserContext,
            request,
            self.budgets.features,
            deadline,
        )
        return user_state(user_id, context)

    async def candidates(self, state: UserState, n: int, exclude: Sequence[str], deadline: Deadline) -> CandidateList:
        request = candidates_pb2.GetCandidatesRequest(
            context=_context(state), n=n, exclude_item_ids=exclude, packed=True
        )
        reply = await self._call(
            self._breakers.candidates,
            "candidates",
            self._candidates.GetCandidates,
            request,
            self.budgets.candidates,
            deadline,
        )
        packed = reply.packed
        scores = packed_scores(packed)  # one array over the packed bytes, not decoded per item
        if len(scores) != len(packed.item_ids):
            raise Unavailable("the candidate stage answered without one score per candidate")
        return CandidateList(packed.item_ids, scores, packed.source, wire=packed)

    async def rank(self, state: UserState, candidates: CandidateList, k: int, deadline: Deadline) -> list[Scored]:
        request = ranking_pb2.RankRequest(packed_candidates=_packed(candidates), k=k)
        # Ranking reads the user and the history only; the seen items stay behind (the candidate stage left
        # them out). A copy then two cleared fields costs a third of building the context field by field.
        request.context.CopyFrom(_context(state))
        request.context.ClearField("seen_item_ids")
        request.context.ClearField("seen_item_indices")
        reply = await self._call(
            self._breakers.ranking, "ranking", self._ranking.Rank, request, self.budgets.ranking, deadline
        )
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
            self._breakers.record, "features", self._features.RecordEvents, request, self.budgets.features, deadline
        )
        return int(reply.accepted), int(reply.duplicates)

    async def cold_history(
        self, user_id: str, attributes: Mapping[str, str], deadline: Deadline
    ) -> tuple[list[common_pb2.HistoryEntry], str]:
        request = synthetic_pb2.GenerateHistoryRequest(user_id=user_id, attributes=attributes)
        reply = await self._call(
            self._breakers.cold_history,
            "synthetic",
            self._synthetic.GenerateHistory,
            request,
            self.budgets.synthetic,
            deadline,
        )
        return list(reply.history), reply.model_version

    async def with_generated_history(
        self, state: UserState, attributes: Mapping[str, str], deadline: Deadline
    ) -> UserState:
        """Raises FailedPrecondition (from the synthetic stage) when the artefact has no generators."""
        history, version = await self.cold_history(state.user_id, attributes, deadline)
        # A new message rather than the features stage's changed in place, so a state never changes under its
        # holder; a cold user's context is a handful of fields, so the copy is cheap.
        context = common_pb2.UserContext()
        context.CopyFrom(_context(state))
        del context.history[:]
        context.history.extend(history)
        context.ClearField("sequence")  # encoded from the old history: it must not outlive it
        context.artifact_version = version
        context.generated_history = True
        return user_state(state.user_id, context)

    async def register_items(
        self, request: synthetic_pb2.RegisterItemsRequest, deadline: Deadline
    ) -> synthetic_pb2.RegisterItemsResponse:
        reply: synthetic_pb2.RegisterItemsResponse = await self._call(
            self._breakers.synthetic_items,
            "synthetic",
            self._synthetic.RegisterItems,
            request,
            self.budgets.synthetic,
            deadline,
        )
        return reply

    async def generate(
        self, request: synthetic_pb2.GenerateSyntheticRequest, deadline: Deadline
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        # A stream may run long: it is bounded by the caller's deadline only, not a stage budget.
        timeout = None if deadline.expires_at is None else deadline.timeout(float("inf"))
        # So a stream's DEADLINE_EXCEEDED is always the caller's: no verdict. A consumer that stops reading
        # closes this generator, which leaves the attempt without a verdict too.
        with self._breakers.synthetic_items.attempt() as attempt:
            try:
                async for chunk in self._synthetic.GenerateSynthetic(
                    request, timeout=timeout, metadata=tracing.outgoing_metadata()
                ):
                    yield chunk
            except grpc.aio.AioRpcError as error:
                domain_error = domain_error_from_rpc(error, "synthetic")
                _judge(attempt, domain_error, cut_by_caller=True)
                raise domain_error from None
            attempt.succeeded()
