"""GatewayCore's degradation rules, against an in-process DownstreamPort: which stage failures it answers
around (and how), which it passes on, and that nothing seen or excluded is ever returned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from recsys_runtime.models.popularity import PopularityRanking
from services.common.clients import Deadline
from services.common.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from services.common.validation import EventInput
from services.gateway.core import CandidateList, GatewayCore, Scored, Stage, UserState

CATALOGUE = [f"i{n}" for n in range(1, 11)]  # i1 most popular, i10 least
NO_DEADLINE = Deadline(None)


@dataclass
class ScriptedDownstream:
    """Each stage answers from its script, or raises the error set for it; calls are recorded."""

    history: list[str] = field(default_factory=lambda: ["i2"])
    known_user: bool = True
    online_state_missing: bool = False
    candidate_ids: list[str] = field(default_factory=lambda: ["i5", "i4", "i3", "i2"])
    generated: list[str] = field(default_factory=lambda: ["i7", "i8"])
    failures: dict[str, DomainError] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)
    states: list[UserState] = field(default_factory=list)  # what candidates and ranking were given
    ranked: list[CandidateList] = field(default_factory=list)  # what ranking was given

    def _maybe_fail(self, stage: str) -> None:
        if stage in self.failures:
            raise self.failures[stage]

    async def user_context(self, user_id: str, attributes: Mapping[str, str], deadline: Deadline) -> UserState:
        self.calls.append(("features", user_id))
        self._maybe_fail("features")
        return UserState(
            user_id=user_id,
            known_user=self.known_user,
            online_state_missing=self.online_state_missing,
            has_history=bool(self.history),
            seen_item_ids=tuple(self.history),
        )

    async def candidates(self, state: UserState, n: int, exclude: Sequence[str], deadline: Deadline) -> CandidateList:
        self.calls.append(("candidates", n))
        self.states.append(state)
        self._maybe_fail("candidates")
        ids = self.candidate_ids[:n]
        return CandidateList(ids, np.linspace(1.0, 0.1, len(ids), dtype=np.float32), "autoencoder")

    async def rank(self, state: UserState, candidates: CandidateList, k: int, deadline: Deadline) -> list[Scored]:
        self.calls.append(("ranking", (list(candidates.item_ids), k, candidates.source)))
        self.states.append(state)
        self.ranked.append(candidates)
        self._maybe_fail("ranking")
        # The ranker reverses the candidate order, so its answer is told apart from the candidates'.
        reversed_ids = list(candidates.item_ids)[::-1]
        return [Scored(i, float(len(reversed_ids) - r), "ranker") for r, i in enumerate(reversed_ids)][:k]

    async def record(self, events: Sequence[EventInput], deadline: Deadline) -> tuple[int, int]:
        self.calls.append(("record", len(events)))
        return len(events), 0

    async def with_generated_history(
        self, state: UserState, attributes: Mapping[str, str], deadline: Deadline
    ) -> UserState:
        self.calls.append(("synthetic", state.user_id))
        self._maybe_fail("synthetic")
        # A generated history is never seen: the seen items stay as they were.
        return replace(state, has_history=bool(self.generated))


def popularity() -> PopularityRanking:
    index = {item: n + 1 for n, item in enumerate(CATALOGUE)}
    scores = np.array([0.0, *range(len(CATALOGUE), 0, -1)], np.float32)
    return PopularityRanking(
        np.array(CATALOGUE), scores, lambda ids: np.array([index.get(i, 0) for i in ids], np.int32)
    )


def gateway(downstream: ScriptedDownstream, candidates_n: int = 4) -> GatewayCore:
    return GatewayCore(downstream, popularity(), "v1", candidates_n=candidates_n, max_events=10)


def ids(items: list[Scored]) -> list[str]:
    return [item.item_id for item in items]


async def test_healthy_stages_give_the_rankers_order_without_seen_or_excluded_items() -> None:
    downstream = ScriptedDownstream()
    answer = await gateway(downstream).recommend("u1", 3, {}, ["i3"], NO_DEADLINE)
    # Candidates i5 i4 i3 i2, reversed by the ranker; i2 is seen and i3 excluded.
    assert ids(answer.items) == ["i4", "i5"]
    assert answer.degraded == [] and not answer.cold_start
    assert {item.source for item in answer.items} == {"ranker"}
    # Two candidates (i3, i2) cannot be returned, so ranking is asked for two more than k.
    assert ("ranking", (["i5", "i4", "i3", "i2"], 5, "autoencoder")) in downstream.calls


@pytest.mark.parametrize("error", [Unavailable("down"), DeadlineExceeded("slow")])
async def test_candidates_down_falls_back_to_popularity_then_ranks_it(error: DomainError) -> None:
    downstream = ScriptedDownstream(failures={"candidates": error})
    answer = await gateway(downstream).recommend("u1", 3, {}, ["i1"], NO_DEADLINE)
    assert answer.degraded == [Stage.CANDIDATES]
    # Popularity without the seen (i2) and excluded (i1) items, handed to ranking, which reverses them.
    ranked_input = next(args for stage, args in downstream.calls if stage == "ranking")
    assert ranked_input == (["i3", "i4", "i5", "i6"], 3, "popularity")
    assert ids(answer.items) == ["i6", "i5", "i4"]


@pytest.mark.parametrize("error", [Unavailable("down"), DeadlineExceeded("slow")])
async def test_ranking_down_keeps_the_candidate_order(error: DomainError) -> None:
    downstream = ScriptedDownstream(failures={"ranking": error})
    answer = await gateway(downstream).recommend("u1", 2, {}, [], NO_DEADLINE)
    assert answer.degraded == [Stage.RANKING]
    assert ids(answer.items) == ["i5", "i4"]
    assert {item.source for item in answer.items} == {"autoencoder"}


async def test_candidates_and_ranking_down_answer_with_popularity() -> None:
    downstream = ScriptedDownstream(failures={"candidates": Unavailable("down"), "ranking": Unavailable("down")})
    answer = await gateway(downstream).recommend("u1", 3, {}, [], NO_DEADLINE)
    assert answer.degraded == [Stage.CANDIDATES, Stage.RANKING]
    assert ids(answer.items) == ["i1", "i3", "i4"]
    assert {item.source for item in answer.items} == {"popularity"}


async def test_features_down_is_no_answer_rather_than_one_with_seen_items() -> None:
    downstream = ScriptedDownstream(failures={"features": Unavailable("down")})
    with pytest.raises(Unavailable):
        await gateway(downstream).recommend("u1", 3, {}, [], NO_DEADLINE)
    assert [stage for stage, _ in downstream.calls] == ["features"]


async def test_missing_online_state_is_reported_as_degraded_features() -> None:
    answer = await gateway(ScriptedDownstream(online_state_missing=True)).recommend("u1", 2, {}, [], NO_DEADLINE)
    assert answer.degraded == [Stage.FEATURES]
    assert ids(answer.items) == ["i3", "i4"]


@pytest.mark.parametrize("stage", ["candidates", "ranking"])
@pytest.mark.parametrize(
    "error", [ResourceExhausted("quota"), FailedPrecondition("no such version"), InvalidArgument([], "bad")]
)
async def test_errors_that_are_not_outages_pass_on(stage: str, error: DomainError) -> None:
    downstream = ScriptedDownstream(failures={stage: error})
    with pytest.raises(type(error)):
        await gateway(downstream).recommend("u1", 2, {}, [], NO_DEADLINE)


async def test_cold_user_gets_a_generated_history() -> None:
    downstream = ScriptedDownstream(history=[], known_user=False)
    answer = await gateway(downstream).recommend("new", 2, {"age": "30"}, [], NO_DEADLINE)
    assert answer.cold_start and answer.degraded == []
    assert ("synthetic", "new") in downstream.calls
    # The later stages get the state with the generated history, not the one the features stage gave.
    assert [state.has_history for state in downstream.states] == [True, True]


async def test_popularity_candidates_reach_ranking_without_a_wire_form_for_the_port_to_pack() -> None:
    downstream = ScriptedDownstream(failures={"candidates": Unavailable("down")})
    await gateway(downstream).recommend("u1", 3, {}, [], NO_DEADLINE)
    (candidates,) = downstream.ranked
    assert candidates.wire is None and candidates.source == "popularity"
    assert candidates.scores.dtype == np.float32  # the precision they would have packed


async def test_cold_user_with_the_generator_down_is_degraded_synthetic_and_still_answered() -> None:
    downstream = ScriptedDownstream(history=[], known_user=False, failures={"synthetic": Unavailable("down")})
    answer = await gateway(downstream).recommend("new", 2, {}, [], NO_DEADLINE)
    assert answer.degraded == [Stage.SYNTHETIC]
    # No history, so nothing is excluded: the ranker's order of all four candidates.
    assert ids(answer.items) == ["i2", "i3"]


async def test_artefact_without_generators_is_not_a_degradation() -> None:
    downstream = ScriptedDownstream(history=[], known_user=False, failures={"synthetic": FailedPrecondition("none")})
    answer = await gateway(downstream).recommend("new", 2, {}, [], NO_DEADLINE)
    assert answer.degraded == []


async def test_invalid_request_reaches_no_stage() -> None:
    downstream = ScriptedDownstream()
    with pytest.raises(InvalidArgument) as raised:
        await gateway(downstream).recommend("", 0, {}, ["i1"], NO_DEADLINE)
    assert {v.field for v in raised.value.violations} >= {"user_id", "k"}
    assert downstream.calls == []
