"""trainer/config.py, recsys_runtime/workflow.py and the models in recsys_runtime/models and trainer/models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_runtime.models.candidates import ItemKNNCandidates, candidate_scores
from recsys_runtime.models.item_knn import ItemKNN
from recsys_runtime.models.markov import Markov, blend
from recsys_runtime.models.neighbours import TopNeighbours, recency_weights, top_n
from recsys_runtime.models.popularity import (
    SECONDS_PER_DAY,
    PopularityRanking,
    fit_popularity,
    load_popularity,
    save_popularity,
)
from recsys_runtime.workflow import OOV_INDEX, Vocabulary, Workflow
from trainer.config import ConfigError, defaults, load_config

NONE = np.zeros(0, dtype=np.int64)

# ---------------------------------------------------------------- config


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_load() -> None:
    config = load_config()
    assert config == defaults()
    assert config["seed"] == 42
    assert config["workflow"]["max_history"] == 50
    assert config["item_knn"]["neighbours"] == 200
    assert config["ranking"]["models"] == ["gru4rec", "caser"]
    assert config["serving"]["candidates"] == 200


def test_override_merges_with_defaults(tmp_path: Path) -> None:
    path = config_file(tmp_path, 'seed = 1\n[item_knn]\nneighbours = 20\n[ranking]\nmodels = ["caser"]\n')
    config = load_config(path)
    assert config["seed"] == 1
    assert config["item_knn"]["neighbours"] == 20
    assert config["ranking"]["models"] == ["caser"]
    # Keys the file does not name keep their defaults, in the same table and in others.
    assert config["item_knn"]["shrinkage"] == 10.0
    assert config["item_knn"]["recency_decay"] == 0.97
    assert config["markov"] == defaults()["markov"]
    # The packaged defaults are not modified by an override.
    assert defaults()["item_knn"]["neighbours"] == 200


def test_int_is_accepted_for_float(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "[item_knn]\nshrinkage = 5\nrecency_decay = 1\n"))
    assert config["item_knn"]["shrinkage"] == 5.0
    assert isinstance(config["item_knn"]["shrinkage"], float)
    assert isinstance(config["item_knn"]["recency_decay"], float)


def test_list_override(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "[ranking]\nblend_grid = [0.0, 1.0]\n"))
    assert config["ranking"]["blend_grid"] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("bogus = 1\n", "'bogus'"),
        ("[nonsense]\nx = 1\n", "'nonsense'"),
        ("[item_knn]\nneighbors = 3\n", "'item_knn.neighbors'"),
    ],
)
def test_unknown_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown configuration key {match}"):
        load_config(config_file(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('seed = "42"\n', "'seed' must be int, got str"),
        ("[item_knn]\nneighbours = 2.5\n", "'item_knn.neighbours' must be int, got float"),
        ("[item_knn]\nneighbours = true\n", "'item_knn.neighbours' must be int, got bool"),
        ("[item_knn]\nshrinkage = true\n", "'item_knn.shrinkage' must be float, got bool"),
        ("[caser]\nlength = 1.5\n", "'caser.length' must be int, got float"),
        ('[ranking]\nblend_grid = "0.5"\n', "'ranking.blend_grid' must be list"),
        ("item_knn = 3\n", "'item_knn' must be a table"),
        ("[seed]\nvalue = 1\n", "'seed' must be int, got dict"),
    ],
)
def test_wrong_type(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(config_file(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[workflow]\nmax_history = 0\n", "workflow.max_history"),
        ("[item_knn]\nneighbours = 0\n", "item_knn.neighbours"),
        ("[markov]\nneighbours = 0\n", "markov.neighbours"),
        ("[markov]\norder = 0\n", "markov.order"),
        ("[item_knn]\nrecency_decay = 0.0\n", "item_knn.recency_decay"),
        ("[item_knn]\nrecency_decay = 1.5\n", "item_knn.recency_decay"),
        ("[markov]\nrecency_decay = 0\n", "markov.recency_decay"),
        ('[ranking]\nmodels = ["sasrec"]\n', "ranking.models"),
        ("[caser]\nlength = 0\n", "caser.length"),
        ("[ranking]\nblend_grid = [0.5, 2.0]\n", "ranking.blend_grid"),
        ("[serving]\ncandidates = 0\n", "serving.candidates"),
        ("[serving]\ncandidates = 1001\n", "serving.candidates"),
        ("[serving]\ntriton_cpu_instances = 0\n", "serving.triton_cpu_instances"),
        ("[data]\nmin_item_count = 0\n", "data.min_item_count"),
        ("[data]\nmin_user_count = 0\n", "data.min_user_count"),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(config_file(tmp_path, text))


def test_range_bounds_are_inclusive(tmp_path: Path) -> None:
    text = "[item_knn]\nrecency_decay = 1.0\n[ranking]\nblend_grid = [1.0]\n[serving]\ncandidates = 1000\n"
    config = load_config(config_file(tmp_path, text))
    assert config["serving"]["candidates"] == 1000


def test_several_range_problems_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"markov\.order.*serving\.candidates"):
        load_config(config_file(tmp_path, "[markov]\norder = 0\n[serving]\ncandidates = 0\n"))


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_config(config_file(tmp_path, "[item_knn\nneighbours = 3\n"))


def test_non_numeric_blend_grid_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(config_file(tmp_path, '[ranking]\nblend_grid = ["high"]\n'))


def test_negative_shrinkage_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shrinkage"):
        load_config(config_file(tmp_path, "[item_knn]\nshrinkage = -1.0\n"))


# ---------------------------------------------------------------- workflow


def test_vocabulary_ids_sorted_and_oov() -> None:
    vocabulary = Vocabulary.fit(pd.Series(["b", "c", "a", "b", "10", "9"]), min_count=1)
    assert list(vocabulary.ids) == ["10", "9", "a", "b", "c"]
    assert len(vocabulary) == 5
    assert vocabulary.size == 6
    encoded = vocabulary.encode(["a", "unknown", "10", "c"])
    assert encoded.tolist() == [3, OOV_INDEX, 1, 5]
    assert encoded.dtype == np.int32
    assert vocabulary.decode(np.array([3, 1, 5])).tolist() == ["a", "10", "c"]
    assert vocabulary.contains("b")
    assert not vocabulary.contains("unknown")
    with pytest.raises(ValueError, match="out-of-vocabulary"):
        vocabulary.decode(np.array([2, 0]))


def test_vocabulary_is_independent_of_input_order() -> None:
    first = Vocabulary.fit(pd.Series(["x", "y", "z"]), 1)
    second = Vocabulary.fit(pd.Series(["z", "x", "y"]), 1)
    assert first.encode(["x", "y", "z"]).tolist() == second.encode(["x", "y", "z"]).tolist() == [1, 2, 3]


def test_vocabulary_min_count() -> None:
    values = pd.Series(["a", "a", "a", "b", "b", "c"])
    assert list(Vocabulary.fit(values, min_count=2).ids) == ["a", "b"]
    assert list(Vocabulary.fit(values, min_count=3).ids) == ["a"]
    assert Vocabulary.fit(values, min_count=3).encode(["b", "c", "a"]).tolist() == [0, 0, 1]
    assert len(Vocabulary.fit(values, min_count=4)) == 0


def interactions_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u2", "u1", "u3", "u2"],
            "item_id": ["i1", "i2", "i3", "i1", "i2", "i2"],
            "timestamp": [30, 20, 10, 10, 5, 30],
        }
    )


def test_encode_interactions_sorted_by_user_then_time() -> None:
    workflow = Workflow.fit(interactions_frame(), max_history=10)
    encoded = workflow.encode_interactions(interactions_frame())
    assert list(encoded.columns) == ["user_index", "item_index", "timestamp"]
    assert encoded["user_index"].tolist() == [1, 1, 2, 2, 2, 3]
    assert encoded["timestamp"].tolist() == [10, 20, 10, 30, 30, 5]
    # u2's two events at 30 keep their file order (i1, then i2).
    assert encoded["item_index"].tolist() == [1, 2, 3, 1, 2, 2]


def test_workflow_min_counts_map_rare_ids_to_oov() -> None:
    workflow = Workflow.fit(interactions_frame(), max_history=5, min_user_count=2, min_item_count=3)
    assert list(workflow.users.ids) == ["u1", "u2"]
    assert list(workflow.items.ids) == ["i2"]
    encoded = workflow.encode_interactions(interactions_frame())
    assert (encoded["user_index"] == OOV_INDEX).sum() == 1
    assert (encoded["item_index"] == OOV_INDEX).sum() == 3


def test_workflow_save_load_round_trip(tmp_path: Path) -> None:
    workflow = Workflow.fit(interactions_frame(), max_history=7, min_item_count=2)
    workflow.save(tmp_path / "workflow")
    loaded = Workflow.load(tmp_path / "workflow")
    assert loaded.max_history == 7
    assert list(loaded.users.ids) == list(workflow.users.ids) == ["u1", "u2", "u3"]
    assert list(loaded.items.ids) == list(workflow.items.ids) == ["i1", "i2"]
    probe = ["i2", "i3", "i1", "zz"]
    assert loaded.items.encode(probe).tolist() == workflow.items.encode(probe).tolist() == [2, 0, 1, 0]
    pd.testing.assert_frame_equal(
        loaded.encode_interactions(interactions_frame()), workflow.encode_interactions(interactions_frame())
    )


def test_workflow_load_rejects_other_format(tmp_path: Path) -> None:
    workflow = Workflow.fit(interactions_frame(), max_history=7)
    workflow.save(tmp_path)
    (tmp_path / "workflow.json").write_text('{"format": 99, "max_history": 7}')
    with pytest.raises(ValueError, match="format 99"):
        Workflow.load(tmp_path)


# ---------------------------------------------------------------- neighbours


def test_top_n_order_exclusions_and_oov() -> None:
    scores = np.array([9.0, 1.0, 3.0, 2.0, 4.0, 0.5], dtype=np.float32)
    assert top_n(scores, 3, NONE).tolist() == [4, 2, 3]
    assert top_n(scores, 3, np.array([4])).tolist() == [2, 3, 1]
    # Out-of-range and negative exclusions are ignored rather than failing.
    assert top_n(scores, 2, np.array([-1, 2, 99])).tolist() == [4, 3]
    # The input is not modified.
    assert scores[0] == 9.0


def test_top_n_returns_fewer_when_not_enough_items() -> None:
    scores = np.array([5.0, 1.0, 3.0, 2.0])
    result = top_n(scores, 10, np.array([2]))
    assert result.tolist() == [3, 1]
    assert top_n(scores, 10, np.array([1, 2, 3])).tolist() == []
    assert top_n(scores, 0, NONE).tolist() == []


def test_top_n_random_never_returns_excluded_or_oov() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.normal(size=40)
        exclude = rng.choice(40, size=10, replace=False)
        result = top_n(scores, 15, exclude)
        assert len(result) == 15
        assert 0 not in result
        assert not set(result.tolist()) & set(exclude.tolist())
        assert np.all(np.diff(scores[result]) <= 0)
        allowed = np.setdiff1d(np.arange(1, 40), exclude)
        assert scores[result[-1]] >= np.sort(scores[allowed])[::-1][14]


def test_recency_weights() -> None:
    np.testing.assert_allclose(recency_weights(4, 0.5), [0.125, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(recency_weights(3, 1.0), [1.0, 1.0, 1.0])
    assert recency_weights(0, 0.5).shape == (0,)
    assert recency_weights(2, 0.5).dtype == np.float32


def test_top_neighbours_keeps_strongest_m() -> None:
    dense = np.array(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.1, 0.9, 0.5],
            [0.0, 0.7, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.2, 0.8, 0.3, 0.0],
        ],
        dtype=np.float32,
    )
    neighbours = TopNeighbours.from_sparse(sp.csr_matrix(dense), 2)
    assert neighbours.size == 5
    assert neighbours.indices.shape == (5, 2)
    assert neighbours.indices[1].tolist() == [3, 4]
    np.testing.assert_allclose(neighbours.values[1], [0.9, 0.5])
    assert neighbours.indices[4].tolist() == [2, 3]
    # Fewer neighbours than M are padded with index 0, value 0.
    assert neighbours.indices[2].tolist() == [1, 0]
    np.testing.assert_allclose(neighbours.values[2], [0.7, 0.0])
    assert neighbours.indices[3].tolist() == [0, 0]
    # Width never exceeds the fullest row.
    assert TopNeighbours.from_sparse(sp.csr_matrix(dense), 50).indices.shape == (5, 3)


def test_top_neighbours_accumulate_and_save(tmp_path: Path) -> None:
    dense = np.zeros((4, 4), dtype=np.float32)
    dense[1, 2], dense[1, 3], dense[2, 3] = 0.5, 0.25, 1.0
    neighbours = TopNeighbours.from_sparse(sp.csr_matrix(dense), 2)
    scores = neighbours.accumulate(np.array([1, 2]), np.array([2.0, 1.0], dtype=np.float32))
    np.testing.assert_allclose(scores, [0.0, 0.0, 1.0, 1.5])
    # Index 0 and unknown indices contribute nothing.
    np.testing.assert_allclose(neighbours.accumulate(np.array([0, 7]), np.ones(2, dtype=np.float32)), np.zeros(4))
    neighbours.save(tmp_path, "probe")
    loaded = TopNeighbours.load(tmp_path, "probe")
    np.testing.assert_array_equal(loaded.indices, neighbours.indices)
    np.testing.assert_array_equal(loaded.values, neighbours.values)


# ---------------------------------------------------------------- item-kNN


def fit_item_knn(shrinkage: float = 1.0) -> ItemKNN:
    # Items 1 and 2 always together; 3 never with them; 4 with either group now and then.
    histories = {0: [1, 2], 1: [1, 2], 2: [1, 2, 4], 3: [3, 4], 4: [3, 4], 5: [3]}
    users = np.array([u for u, items in histories.items() for _ in items])
    items = np.array([i for seen in histories.values() for i in seen])
    return ItemKNN.fit(users, items, n_users=6, n_items=5, neighbours=10, shrinkage=shrinkage, recency_decay=0.9)


def test_item_knn_strongest_neighbour() -> None:
    model = fit_item_knn()
    assert model.neighbours.indices[1, 0] == 2
    assert model.neighbours.indices[2, 0] == 1
    assert 3 not in model.neighbours.indices[1][model.neighbours.values[1] > 0]
    # cosine 1 shrunk by 3 / (3 + 1)
    assert model.neighbours.values[1, 0] == pytest.approx(0.75)


def test_item_knn_score_ranks_co_occurring_item_first() -> None:
    model = fit_item_knn()
    scores = model.score(np.array([1]))
    assert scores.shape == (5,)
    assert scores[2] > scores[4] > scores[3]
    assert scores[3] == 0.0
    assert top_n(scores, 1, np.array([1])).tolist() == [2]


def test_item_knn_recency_weighting() -> None:
    model = fit_item_knn()
    # The most recent item weighs 1, the one before recency_decay (0.9).
    one_last = model.score(np.array([3, 1]))
    three_last = model.score(np.array([1, 3]))
    assert one_last[2] == pytest.approx(0.75)
    assert three_last[2] == pytest.approx(0.9 * 0.75)
    assert three_last[4] > one_last[4]


def test_item_knn_repeated_interactions_count_once() -> None:
    once = fit_item_knn()
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5])
    items = np.array([1, 1, 1, 2, 1, 2, 1, 2, 4, 3, 4, 3, 4, 3])
    repeated = ItemKNN.fit(users, items, n_users=6, n_items=5, neighbours=10, shrinkage=1.0, recency_decay=0.9)
    np.testing.assert_allclose(repeated.neighbours.values, once.neighbours.values)


def test_item_knn_save_load(tmp_path: Path) -> None:
    model = fit_item_knn()
    model.save(tmp_path)
    loaded = ItemKNN.load(tmp_path, recency_decay=0.9)
    np.testing.assert_allclose(loaded.score(np.array([1, 4])), model.score(np.array([1, 4])))


def test_candidate_scores_popularity_tie_break() -> None:
    model = ItemKNNCandidates(fit_item_knn())
    popularity = np.array([0.0, 3.0, 3.0, 3.0, 10.0], dtype=np.float32)
    # No history: pure popularity order.
    empty = candidate_scores(model, np.array([], dtype=np.int64), np.array([], dtype=np.int64), popularity, 2.0)
    assert top_n(empty, 4, NONE).tolist()[0] == 4
    # With a history and no shrinkage, the tie-break never overturns a real similarity.
    scores = candidate_scores(model, np.array([1]), np.array([1]), popularity, 0.0)
    assert scores[2] > scores[4]


def test_short_histories_lean_on_popularity() -> None:
    model = ItemKNNCandidates(fit_item_knn())
    popularity = np.array([0.0, 3.0, 3.0, 3.0, 10.0], dtype=np.float32)
    history = np.array([1])
    # One known item against a shrinkage of 100: alpha = 1/101, popularity decides.
    leaning = candidate_scores(model, history, history, popularity, 100.0)
    assert leaning[4] > leaning[2]
    trusting = candidate_scores(model, history, history, popularity, 0.01)
    assert trusting[2] > trusting[4]


# ---------------------------------------------------------------- Markov


def fit_markov(order: int = 3, decay: float = 0.5) -> Markov:
    users = np.repeat(np.arange(4), 3)
    items = np.tile([1, 2, 3], 4)
    return Markov.fit(users, items, n_items=5, neighbours=10, order=order, recency_decay=decay)


def test_markov_next_item() -> None:
    model = fit_markov()
    scores = model.score(np.array([1]), np.array([2, 3]))
    assert scores[0] > scores[1]
    assert scores.tolist() == [1.0, 0.0]
    scores = model.score(np.array([1, 2]), np.array([2, 3]))
    # 2 -> 3 is the most recent transition (weight 1) against 1 -> 2 (weight 0.5).
    assert scores.tolist() == [0.5, 1.0]


def test_markov_transitions_do_not_cross_users() -> None:
    model = fit_markov()
    # Each user's last item (3) is followed by the next user's first (1) in the arrays, but that is no transition.
    assert model.score(np.array([3]), np.array([1, 2, 3])).tolist() == [0.0, 0.0, 0.0]


def test_markov_probabilities_are_normalised() -> None:
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([1, 2, 1, 2, 1, 2, 1, 3])
    model = Markov.fit(users, items, n_items=4, neighbours=10, order=1, recency_decay=1.0)
    np.testing.assert_allclose(model.score(np.array([1]), np.array([2, 3])), [0.75, 0.25])


def test_markov_order_limits_voting_items() -> None:
    model = fit_markov(order=1)
    # Only the last item (2) votes, so 1 -> 2 contributes nothing to candidate 2.
    assert model.score(np.array([1, 2]), np.array([2, 3])).tolist() == [0.0, 1.0]


def test_markov_out_of_range_candidates_score_zero(tmp_path: Path) -> None:
    model = fit_markov()
    assert model.score(np.array([1]), np.array([0, 2, 99, -3])).tolist() == [0.0, 1.0, 0.0, 0.0]
    model.save(tmp_path)
    loaded = Markov.load(tmp_path, order=3, recency_decay=0.5)
    assert loaded.score(np.array([1, 2]), np.array([2, 3])).tolist() == [0.5, 1.0]


# ---------------------------------------------------------------- blend


def test_blend_scales_each_score_set_by_its_maximum() -> None:
    candidate = np.array([2.0, 4.0, 1.0], dtype=np.float32)
    markov = np.array([0.1, 0.05, 0.0], dtype=np.float32)
    np.testing.assert_allclose(blend(candidate, markov, 0.5), [0.75, 0.75, 0.125])
    assert blend(candidate, markov, 0.5).dtype == np.float32


def test_blend_weight_extremes() -> None:
    candidate = np.array([2.0, 4.0, 1.0])
    markov = np.array([0.1, 0.05, 0.0])
    np.testing.assert_allclose(blend(candidate, markov, 0.0), [0.5, 1.0, 0.25])
    np.testing.assert_allclose(blend(candidate, markov, 1.0), [1.0, 0.5, 0.0])
    assert np.argmax(blend(candidate, markov, 0.0)) == 1
    assert np.argmax(blend(candidate, markov, 1.0)) == 0


def test_blend_with_all_zero_scores() -> None:
    np.testing.assert_allclose(blend(np.array([2.0, 1.0]), np.zeros(2), 0.5), [0.5, 0.25])
    assert blend(np.array([]), np.array([]), 0.5).shape == (0,)


# ---------------------------------------------------------------- popularity


def test_popularity_counts() -> None:
    items = np.array([1, 1, 2, 3, 3, 3, 0, 0])
    scores = fit_popularity(items, np.zeros(len(items), dtype=np.int64), size=5, half_life_days=0.0)
    assert scores.tolist() == [0.0, 2.0, 1.0, 3.0, 0.0]
    assert scores.dtype == np.float32


def test_popularity_half_life_decay() -> None:
    now = 1_700_000_000
    items = np.array([1, 2, 3, 3])
    day = int(SECONDS_PER_DAY)
    timestamps = np.array([now, now - day, now - 2 * day, now - 2 * day])
    scores = fit_popularity(items, timestamps, size=4, half_life_days=1.0)
    np.testing.assert_allclose(scores, [0.0, 1.0, 0.5, 0.5])
    no_decay = fit_popularity(items, timestamps, size=4, half_life_days=0.0)
    np.testing.assert_allclose(no_decay, [0.0, 1.0, 1.0, 2.0])


def test_popularity_save_load(tmp_path: Path) -> None:
    scores = np.array([0.0, 2.0, 1.0], dtype=np.float32)
    save_popularity(tmp_path, scores)
    np.testing.assert_array_equal(load_popularity(tmp_path), scores)


def test_popularity_ranking_top_excludes_ids() -> None:
    vocabulary = Vocabulary.fit(pd.Series(["a", "b", "c", "d"]), 1)
    scores = np.array([100.0, 2.0, 1.0, 3.0, 0.5], dtype=np.float32)
    ranking = PopularityRanking(vocabulary.ids.to_numpy(), scores, vocabulary.encode)
    assert ranking.top(2, []) == [("c", 3.0), ("a", 2.0)]
    assert ranking.top(2, ["c", "unknown"]) == [("a", 2.0), ("b", 1.0)]
    assert ranking.top(10, ["a"]) == [("c", 3.0), ("b", 1.0), ("d", 0.5)]


def test_top_n_breaks_ties_by_index_even_at_the_cut_off() -> None:
    scores = np.array([0.0, 1.0, 5.0, 1.0, 5.0, 1.0, 1.0], dtype=np.float32)
    assert top_n(scores, 4, NONE).tolist() == [2, 4, 1, 3]
    assert top_n(scores[::-1].copy(), 3, NONE).tolist() == [2, 4, 1]


def test_positive_definite_inverse_matches_lu_and_refuses_indefinite() -> None:
    from trainer.evaluate import positive_definite_inverse

    rng = np.random.default_rng(0)
    ratings = (rng.random((300, 60)) < 0.1).astype(np.float32)
    gram = ratings.T @ ratings + 5.0 * np.eye(60, dtype=np.float32)
    inverse = positive_definite_inverse(gram.copy())
    np.testing.assert_allclose(inverse, np.linalg.inv(gram), rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(inverse, inverse.T)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        positive_definite_inverse(-gram)
