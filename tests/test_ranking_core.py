"""The ranking core on its own, without a server or Triton: a generated history keeps the candidate order, the
rankers re-order a recorded one, unknown candidates keep their place, bad input names its fields, and indices
packed by this version are used as given. Built from a small real artefact (demo data, the trainer's Markov
chain); its ranker (recsys_runtime.models.ranking, the model the Triton graph computes) runs in this process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys_runtime.models.ranking import Ranker
from services.common.clients import Deadline
from services.common.errors import DeadlineExceeded, InvalidArgument
from services.common.validation import MAX_K
from services.ranking.core import CANDIDATE_ORDER, MODEL_NAME, RankingCore, RankInput
from tests.small_artefact import item_knn_artefact

BUDGET_S = 0.25
NO_DEADLINE = Deadline(None)


class InProcessRanker:
    """The artefact's ranker behind the core's RankerPort, as Triton serves it (history cut to max_history);
    it keeps what it was asked, so a test sees what reached the rankers."""

    def __init__(self, ranker: Ranker) -> None:
        self.ranker = ranker
        self.asked: list[dict[str, Any]] = []

    async def score(
        self,
        history: np.ndarray,
        user: int,
        candidates: np.ndarray,
        candidate_scores: np.ndarray,
        timeout_s: float,
        max_history: int,
    ) -> np.ndarray:
        self.asked.append({"history": history, "user": user, "candidates": candidates, "timeout_s": timeout_s})
        return self.ranker.score(history[-max_history:], user, candidates, candidate_scores)


@pytest.fixture(scope="module")
def artefact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ranker]:
    artefact = item_knn_artefact(tmp_path_factory.mktemp("artefact") / "v1", seed=13)
    # The trainer's ranker when no sequence model was kept: the Markov chain with the candidate score.
    return artefact.directory, Ranker(artefact.models.markov)


@pytest.fixture
def ranker(artefact: tuple[Path, Ranker]) -> InProcessRanker:
    return InProcessRanker(artefact[1])


@pytest.fixture
def core(artefact: tuple[Path, Ranker], ranker: InProcessRanker) -> RankingCore:
    return RankingCore(artefact[0], "v1", ranker)


def item_ids(core: RankingCore, indices: Sequence[int] | np.ndarray) -> list[str]:
    return [str(i) for i in core.workflow.items.decode(np.asarray(indices))]


def rank_input(
    core: RankingCore,
    candidates: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    k: int = 0,
    *,
    history: Sequence[int] = (1, 2, 3),
    generated: bool = False,
    indices: np.ndarray | None = None,
) -> RankInput:
    return RankInput(
        user_id=str(core.workflow.users.ids[0]),  # index 1
        history=np.asarray(history, np.int32),
        candidate_ids=candidates,
        candidate_scores=np.asarray(scores, np.float32),
        k=k,
        generated_history=generated,
        candidate_indices=indices,
    )


async def test_a_generated_history_keeps_the_candidate_order_without_asking_the_rankers(
    core: RankingCore, ranker: InProcessRanker
) -> None:
    candidates = item_ids(core, [10, 11, 12, 13])
    request = rank_input(core, candidates, [0.2, 0.9, 0.1, 0.5], k=3, generated=True)
    ranking = await core.rank(request, NO_DEADLINE, BUDGET_S)
    assert ranking.model == CANDIDATE_ORDER
    assert [(r.item_id, r.score) for r in ranking.items] == [
        (candidates[1], pytest.approx(0.9)),
        (candidates[3], pytest.approx(0.5)),
        (candidates[0], pytest.approx(0.2)),
    ]
    assert ranker.asked == []
    # Nothing waits on the rankers: a passed deadline does not matter.
    late = await core.rank(request, Deadline(time.monotonic() - 1), BUDGET_S)
    assert late.items == ranking.items


async def test_a_recorded_history_is_ranked_by_the_rankers(
    core: RankingCore, ranker: InProcessRanker, artefact: tuple[Path, Ranker]
) -> None:
    indices = np.arange(10, 30, dtype=np.int32)
    scores = np.linspace(1.0, 0.05, len(indices), dtype=np.float32)
    history = [5, 0, 7, 9]  # 0: an item this version does not know, never sent to the rankers
    request = rank_input(core, item_ids(core, indices), scores, k=5, history=history)
    ranking = await core.rank(request, NO_DEADLINE, BUDGET_S)
    assert ranking.model == MODEL_NAME
    [asked] = ranker.asked
    assert asked["history"].tolist() == [5, 7, 9] and asked["candidates"].tolist() == indices.tolist()
    assert asked["user"] == 1 and asked["timeout_s"] == BUDGET_S
    expected = artefact[1].score(np.array([5, 7, 9]), 1, indices, scores)
    best = np.argsort(-expected, kind="stable")[:5]
    assert [r.item_id for r in ranking.items] == item_ids(core, indices[best])
    np.testing.assert_allclose([r.score for r in ranking.items], expected[best], rtol=1e-6)
    # k = 0 keeps every candidate.
    everything = await core.rank(rank_input(core, item_ids(core, indices), scores, history=history), NO_DEADLINE, 1.0)
    assert len(everything.items) == len(indices)


async def test_the_rankers_get_the_budget_cut_to_the_callers_deadline(
    core: RankingCore, ranker: InProcessRanker
) -> None:
    request = rank_input(core, item_ids(core, [10, 11]), [0.6, 0.4])
    await core.rank(request, Deadline(time.monotonic() + 0.1), 5.0)
    assert 0 < ranker.asked[-1]["timeout_s"] <= 0.1
    with pytest.raises(DeadlineExceeded):
        await core.rank(request, Deadline(time.monotonic() - 1), 5.0)


async def test_an_unknown_candidate_keeps_its_place_in_the_candidate_order(
    core: RankingCore, ranker: InProcessRanker
) -> None:
    known = item_ids(core, range(10, 20))
    place = 3
    candidates = [*known[:place], "registered-after-training", *known[place:]]
    scores = np.linspace(1.0, 0.1, len(candidates), dtype=np.float32)  # listed in candidate order
    ranking = await core.rank(rank_input(core, candidates, scores), NO_DEADLINE, BUDGET_S)
    assert ranker.asked[-1]["candidates"][place] == 0  # the rankers see it as unknown
    order = [r.item_id for r in ranking.items]
    known_scores = sorted((r.score for r in ranking.items if r.item_id != candidates[place]), reverse=True)
    unknown = ranking.items[order.index(candidates[place])]
    # It takes the known score at its own candidate place: ranked there, beside the item that has that score.
    assert unknown.score == known_scores[place]
    assert order.index(candidates[place]) in (place, place + 1)


async def test_bad_candidates_and_k_are_invalid_argument_naming_the_fields(
    core: RankingCore, ranker: InProcessRanker
) -> None:
    async def refused(request: RankInput, deadline: Deadline = NO_DEADLINE) -> list[str]:
        with pytest.raises(InvalidArgument) as error:
            await core.rank(request, deadline, BUDGET_S)
        return [v.field for v in error.value.violations]

    good = item_ids(core, [10, 11])
    assert await refused(rank_input(core, good, [0.5, 0.4], k=-1)) == ["k"]
    assert await refused(rank_input(core, good, [0.5, 0.4], k=MAX_K + 1)) == ["k"]
    assert await refused(rank_input(core, [], [])) == ["candidates"]
    assert await refused(rank_input(core, good, [0.5])) == ["candidates"]
    too_many = [f"x{i}" for i in range(MAX_K + 1)]
    assert await refused(rank_input(core, too_many, np.zeros(MAX_K + 1))) == ["candidates"]
    bad_ids = [good[0], "", "tab\there", " padded"]
    assert await refused(rank_input(core, bad_ids, [0.4, 0.3, 0.2, 0.1], k=-2)) == [
        "k",
        "candidates[1].item_id",
        "candidates[2].item_id",
        "candidates[3].item_id",
    ]
    # Bad input is refused as such even when the caller's deadline has passed; the rankers never hear of it.
    assert await refused(rank_input(core, bad_ids, [0.4, 0.3, 0.2, 0.1]), Deadline(time.monotonic() - 1)) == [
        "candidates[1].item_id",
        "candidates[2].item_id",
        "candidates[3].item_id",
    ]
    # A generated history checks the candidates' shape and k as well.
    assert await refused(rank_input(core, good, [0.5, 0.4], k=-1, generated=True)) == ["k"]
    assert ranker.asked == []


async def test_packed_indices_are_used_as_given(
    core: RankingCore, ranker: InProcessRanker, artefact: tuple[Path, Ranker]
) -> None:
    indices = np.array([21, 22, 23, 24], np.int32)
    scores = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    # Ids the vocabulary does not hold: encoded here they would all be unknown (0); packed, their indices stand.
    candidates = ["packed-a", "packed-b", "packed-c", "packed-d"]
    ranking = await core.rank(rank_input(core, candidates, scores, indices=indices), NO_DEADLINE, BUDGET_S)
    assert ranker.asked[-1]["candidates"].tolist() == indices.tolist()
    expected = artefact[1].score(np.array([1, 2, 3]), 1, indices, scores)
    best = np.argsort(-expected, kind="stable")
    assert ranking.model == MODEL_NAME
    assert [r.item_id for r in ranking.items] == [candidates[i] for i in best]
    np.testing.assert_allclose([r.score for r in ranking.items], expected[best], rtol=1e-6)
    await core.rank(rank_input(core, candidates, scores), NO_DEADLINE, BUDGET_S)
    assert ranker.asked[-1]["candidates"].tolist() == [0, 0, 0, 0]
    # The shape and k are still checked.
    with pytest.raises(InvalidArgument) as refused:
        await core.rank(rank_input(core, candidates, [0.4, 0.3], k=-1, indices=indices), NO_DEADLINE, BUDGET_S)
    assert [v.field for v in refused.value.violations] == ["candidates", "k"]
