"""The approximate item index: the candidate stage's answers with it stay those of exact scoring."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_runtime.models.candidates import AutoencoderCandidates, CandidateScorer, item_vectors
from recsys_runtime.models.item_index import ItemIndex

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from candidates_bench import contexts, generated_catalogue


@pytest.fixture(scope="module")
def catalogue():  # type: ignore[no-untyped-def]
    scorer, topic, popularity = generated_catalogue(20_000, seed=4)
    index = ItemIndex.build(item_vectors(scorer), nprobe=128)
    users = [np.array([int(i[1:]) + 1 for i in c.seen_item_ids]) for c in contexts(topic, 60, seed=5)]
    return scorer, popularity, index, users


def test_index_keeps_the_exact_candidates(catalogue) -> None:  # type: ignore[no-untyped-def]
    scorer, popularity, index, users = catalogue
    exact = CandidateScorer(AutoencoderCandidates(scorer), popularity, 2.0)
    approximate = CandidateScorer(AutoencoderCandidates(scorer), popularity, 2.0, index)
    overlaps = []
    for seen in users:
        exact_items, _ = exact.top(seen[-50:], seen, 200)
        found, scores = approximate.top(seen[-50:], seen, 200, exclude=np.array([int(exact_items[0])]))
        assert len(found) == 200 and len(set(found.tolist())) == 200
        assert not set(found.tolist()) & {0, *seen.tolist(), int(exact_items[0])}
        assert np.all(np.diff(scores) <= 0), "best first"
        overlaps.append(len(set(found.tolist()) & set(exact_items.tolist())) / 200)
    assert np.mean(overlaps) >= 0.95


def test_users_without_history_get_popularity_without_the_index(catalogue) -> None:  # type: ignore[no-untyped-def]
    scorer, popularity, index, _ = catalogue
    approximate = CandidateScorer(AutoencoderCandidates(scorer), popularity, 2.0, index)
    found, _ = approximate.top(np.zeros(0, np.int64), np.zeros(0, np.int64), 10)
    assert found.tolist() == approximate.popular_order[approximate.popular_order > 0][:10].tolist()


def test_index_round_trips_through_its_file(catalogue, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scorer, _, index, users = catalogue
    index.save(tmp_path)
    loaded = ItemIndex.load(tmp_path)
    assert loaded is not None and loaded.nprobe == 128 and loaded.size == index.size
    query = np.append(scorer.user_state(users[0]), 1.0)
    np.testing.assert_array_equal(loaded.search(query, 50)[0], index.search(query, 50)[0])
    assert ItemIndex.load(tmp_path / "absent") is None
