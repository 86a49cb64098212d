"""Request orchestration: features → candidates → ranking, with degraded answers instead of failures."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recsys_runtime.models.popularity import PopularityRanking
from services.common import metrics
from services.common.clients import Deadline
from services.common.errors import DeadlineExceeded, FailedPrecondition, Unavailable, Violations
from services.common.validation import (
    MAX_K,
    EventInput,
    check_attributes,
    check_id,
    check_k,
    validate_events,
)

log = logging.getLogger(__name__)

# Failures of a stage that the gateway answers around rather than passes on.
DEGRADABLE = (Unavailable, DeadlineExceeded)


class Stage(enum.Enum):
    FEATURES = "features"
    CANDIDATES = "candidates"
    RANKING = "ranking"
    SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float
    source: str


@dataclass
class Recommendation:
    items: list[Scored]
    model_version: str
    cold_start: bool
    degraded: list[Stage] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class UserState:
    """What the gateway decides on about a user. `wire` is the port's own form of the whole state (the stages'
    input), handed back to the port as it came: the core never reads it, so it is never decoded here."""

    user_id: str
    known_user: bool
    online_state_missing: bool  # the training history only: recent events may be missing
    has_history: bool
    seen_item_ids: Sequence[str]  # may be a view over `wire`, not a copy
    wire: object = None


@dataclass(frozen=True, eq=False)
class CandidateList:
    """Candidates best first, one score each. `wire` is the port's packed form when they came from the candidate
    stage (handed on to ranking as it came); None when the gateway made them, for the port to pack."""

    item_ids: Sequence[str]  # may be a view over `wire`, not a copy
    scores: np.ndarray
    source: str
    wire: object = None

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.item_ids):
            raise ValueError(f"{len(self.item_ids)} candidates with {len(self.scores)} scores")


class DownstreamPort(Protocol):
    async def user_context(self, user_id: str, attributes: Mapping[str, str], deadline: Deadline) -> UserState: ...

    async def candidates(
        self, state: UserState, n: int, exclude: Sequence[str], deadline: Deadline
    ) -> CandidateList: ...

    async def rank(self, state: UserState, candidates: CandidateList, k: int, deadline: Deadline) -> list[Scored]: ...

    async def record(self, events: Sequence[EventInput], deadline: Deadline) -> tuple[int, int]: ...

    async def with_generated_history(
        self, state: UserState, attributes: Mapping[str, str], deadline: Deadline
    ) -> UserState:
        """`state` with a history generated from the user's attributes in place of its own, flagged as generated
        (so it is never excluded as seen). Raises FailedPrecondition when the artefact has no generators."""
        ...


class GatewayCore:
    def __init__(
        self,
        downstream: DownstreamPort,
        fallback: PopularityRanking,
        model_version: str,
        candidates_n: int,
        max_events: int,
    ) -> None:
        self.downstream = downstream
        self.fallback = fallback
        self.model_version = model_version
        self.candidates_n = candidates_n
        self.max_events = max_events

    @staticmethod
    def validate_recommend(user_id: str, k: int, attributes: Mapping[str, str], exclude: Sequence[str]) -> None:
        violations = Violations()
        check_id(violations, "user_id", user_id)
        check_k(violations, "k", k)
        check_attributes(violations, "user_attributes", attributes)
        if len(exclude) > MAX_K:
            violations.add("exclude_item_ids", f"at most {MAX_K} ids, got {len(exclude)}")
        else:
            for i, item_id in enumerate(exclude):
                check_id(violations, f"exclude_item_ids[{i}]", item_id)
        violations.raise_if_any()

    async def recommend(
        self, user_id: str, k: int, attributes: Mapping[str, str], exclude: Sequence[str], deadline: Deadline
    ) -> Recommendation:
        self.validate_recommend(user_id, k, attributes, exclude)
        # Without the user's history nothing guarantees seen items stay out: no answer rather than a wrong one.
        with metrics.StageTimer(Stage.FEATURES.value):
            state = await self.downstream.user_context(user_id, attributes, deadline)
        degraded: list[Stage] = []
        if state.online_state_missing:  # the training history only: recent events may be missing
            degraded.append(Stage.FEATURES)
        if not state.known_user and not state.has_history:
            try:
                with metrics.StageTimer(Stage.SYNTHETIC.value):
                    state = await self._generate_history(state, attributes, deadline)
            except DEGRADABLE as error:
                log.warning("cold-user history degraded to popularity", extra={"error": str(error)})
                degraded.append(Stage.SYNTHETIC)
        never = {*state.seen_item_ids, *exclude}
        n = min(max(self.candidates_n, k), MAX_K)
        # Candidates stay packed (ids, indices, scores) from the candidate stage to ranking: the gateway hands
        # them on without a message per item.
        try:
            with metrics.StageTimer(Stage.CANDIDATES.value):
                candidates = await self.downstream.candidates(state, n, list(exclude), deadline)
        except DEGRADABLE as error:
            log.warning("candidates degraded to popularity", extra={"error": str(error)})
            degraded.append(Stage.CANDIDATES)
            popular = self.fallback.top(n, sorted(never))
            # float32: the scores' precision on the wire, so a degraded answer scores as a packed one would.
            scores = np.array([s for _, s in popular], np.float32)
            candidates = CandidateList([i for i, _ in popular], scores, "popularity")
        ranked: list[Scored] = []
        if candidates.item_ids:
            # Items the candidate stage could not exclude by index (registered online, so unknown to the
            # trained vocabulary) are dropped below: ask for as many more, so the answer still has k.
            slipped = sum(1 for item_id in candidates.item_ids if item_id in never)
            try:
                with metrics.StageTimer(Stage.RANKING.value):
                    ranked = await self.downstream.rank(state, candidates, min(k + slipped, MAX_K), deadline)
            except DEGRADABLE as error:
                log.warning("ranking degraded to candidate order", extra={"error": str(error)})
                degraded.append(Stage.RANKING)
                ranked = [
                    Scored(i, float(s), candidates.source)
                    for i, s in zip(candidates.item_ids, candidates.scores, strict=True)
                ]
        # A last guard: whatever a stage returned, nothing seen or excluded leaves the gateway.
        items = [item for item in ranked if item.item_id not in never][:k]
        for stage in degraded:
            metrics.degraded(stage.value)
        return Recommendation(items, self.model_version, not state.known_user, degraded)

    async def _generate_history(self, state: UserState, attributes: Mapping[str, str], deadline: Deadline) -> UserState:
        """A cold user's history, generated from their attributes, becomes the models' input (flagged, so it is
        never excluded as seen). An artefact trained without generators leaves the user to popularity."""
        try:
            return await self.downstream.with_generated_history(state, attributes, deadline)
        except FailedPrecondition:
            return state

    async def record_events(self, events: Sequence[EventInput], deadline: Deadline) -> tuple[int, int]:
        validate_events(events, self.max_events)
        return await self.downstream.record(events, deadline)
