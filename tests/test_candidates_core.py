"""The candidates core on its own, without a server: a recorded history against a generated one, exclusions
and seen items, the bounds on n. Built from a small real artefact (demo data, the trainer's item-kNN and
popularity, saved as the trainer lays them out)."""

from __future__ import annotations

import numpy as np
import pytest

from services.candidates.core import GENERATED_NAME, POPULARITY_NAME, CandidateCore, CandidateQuery, Candidates
from services.common.errors import InvalidArgument
from services.common.validation import MAX_K
from tests.small_artefact import item_knn_artefact

NOTHING = np.zeros(0, np.int32)
# A recorded history, oldest first, whose items are also what the user has seen.
HISTORY = np.arange(1, 9, dtype=np.int32)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> CandidateCore:
    artefact = item_knn_artefact(tmp_path_factory.mktemp("artefact") / "v1", seed=11)
    return CandidateCore(artefact.directory, "v1", artefact.config)


def query(
    history: np.ndarray,
    n: int = 10,
    *,
    seen: np.ndarray | None = None,
    likelihoods: np.ndarray | None = None,
    exclude: list[str] | None = None,
    generated: bool = False,
) -> CandidateQuery:
    return CandidateQuery(
        history=history,
        seen=history if seen is None else seen,
        likelihoods=np.zeros(len(history)) if likelihoods is None else likelihoods,
        exclude=exclude or [],
        n=n,
        generated_history=generated,
    )


def assert_well_formed(core: CandidateCore, found: Candidates, n: int) -> None:
    assert len(found.item_ids) == len(set(found.item_ids)) == len(found.indices) == len(found.scores) <= n
    assert found.scores.tolist() == sorted(found.scores.tolist(), reverse=True)
    # Trained items: their indices are the workflow's, which the ranking stage reads as they are.
    assert found.indices.tolist() == core.workflow.items.encode(found.item_ids).tolist()
    assert 0 not in found.indices


def test_a_recorded_history_gets_the_models_candidates_never_a_seen_or_excluded_item(core: CandidateCore) -> None:
    history = HISTORY
    popular = core.popular([], 3)
    exclude = [item.item_id for item in popular]
    found = core.candidates(query(history, 10, exclude=exclude))
    assert found.model == core.scorer.model.name == "item_knn"
    assert len(found.item_ids) == 10
    assert_well_formed(core, found, 10)
    seen_ids = set(core.workflow.items.decode(history).tolist())
    assert not seen_ids & set(found.item_ids)
    assert not set(exclude) & set(found.item_ids)


def test_asked_for_more_than_there_is_every_other_item_comes_back(core: CandidateCore) -> None:
    history = HISTORY
    exclude = ["i00001", "not-in-the-catalogue"]
    found = core.candidates(query(history, MAX_K, exclude=exclude))
    catalogue = set(core.workflow.items.ids.tolist())
    kept_out = set(core.workflow.items.decode(history).tolist()) | {"i00001"}
    assert "i00001" in catalogue
    assert set(found.item_ids) == catalogue - kept_out
    assert_well_formed(core, found, MAX_K)


def test_without_a_history_the_candidates_are_the_popular_items(core: CandidateCore) -> None:
    found = core.candidates(query(NOTHING, 12, exclude=["i00002"]))
    assert found.model == POPULARITY_NAME
    assert found.item_ids == [item.item_id for item in core.popular(["i00002"], 12)]
    assert_well_formed(core, found, 12)


def test_a_generated_history_blends_the_generator_in_and_keeps_its_items(core: CandidateCore) -> None:
    generated = np.array([3, 0, 5, 7], np.int32)  # 0: an item this version does not know, left out
    likelihoods = np.array([0.1, 0.9, 0.2, 0.7])
    likeliest = str(core.workflow.items.decode(np.array([7]))[0])
    excluded = str(core.workflow.items.decode(np.array([5]))[0])
    found = core.candidates(
        query(generated, 10, seen=NOTHING, likelihoods=likelihoods, exclude=[excluded], generated=True)
    )
    assert found.model == GENERATED_NAME
    assert_well_formed(core, found, 10)
    # The generator's likeliest item leads (its weight is most of the blend); an excluded one never comes back.
    assert found.item_ids[0] == likeliest
    assert excluded not in found.item_ids
    # The same items as a recorded history are seen: never candidates.
    recorded = core.candidates(query(generated, 10, likelihoods=likelihoods, exclude=[excluded]))
    assert recorded.model == "item_knn"
    assert not set(core.workflow.items.decode(generated[generated > 0]).tolist()) & set(recorded.item_ids)


def test_a_generated_history_reads_the_likelihoods_a_recorded_one_does_not(core: CandidateCore) -> None:
    history = np.array([3, 5, 7], np.int32)
    flat, steep = np.full(3, 1 / 3), np.array([0.9, 0.05, 0.05])
    recorded = [core.candidates(query(history, 10, likelihoods=weights)) for weights in (flat, steep)]
    assert recorded[0].item_ids == recorded[1].item_ids
    np.testing.assert_array_equal(recorded[0].scores, recorded[1].scores)
    generated = [
        core.candidates(query(history, 10, seen=NOTHING, likelihoods=weights, generated=True))
        for weights in (flat, steep)
    ]
    assert generated[1].item_ids[0] == str(core.workflow.items.decode(np.array([3]))[0])
    assert not np.array_equal(generated[0].scores, generated[1].scores)


@pytest.mark.parametrize("n", [0, -1, MAX_K + 1])
def test_n_out_of_bounds_is_invalid_argument_naming_n(core: CandidateCore, n: int) -> None:
    for generated in (False, True):
        with pytest.raises(InvalidArgument) as refused:
            core.candidates(query(HISTORY, n, generated=generated))
        assert [v.field for v in refused.value.violations] == ["n"]
    with pytest.raises(InvalidArgument) as refused:
        core.popular([], n)
    assert [v.field for v in refused.value.violations] == ["n"]


def test_n_at_its_bounds_is_served(core: CandidateCore) -> None:
    assert len(core.candidates(query(HISTORY, 1)).item_ids) == 1
    assert len(core.candidates(query(HISTORY, MAX_K, generated=True)).item_ids) == core.workflow.items.size - 1
