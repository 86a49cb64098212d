"""The conditional GANs and what is built on them: cold-user histories that follow the attributes,
seeded synthetic streams, and the round trip through the artefact."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_runtime.synthesis import SYNTHETIC_USER_PREFIX, Synthesis, item_set_key
from recsys_runtime.workflow import Workflow
from trainer.config import load_config
from trainer.demo import AGE_GROUPS, TOPICS, generate
from trainer.models import gan
from trainer.models.gan import train_conditional_wgan
from trainer.synthesis import fit_synthesis


@pytest.fixture(scope="module")
def demo() -> tuple[Workflow, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    data = generate(n_users=600, n_items=120, mean_history=20, seed=3)
    workflow = Workflow.fit(data.interactions, 50, items=data.items, users=data.users)
    return workflow, data.interactions, data.users, data.items


@pytest.fixture(scope="module")
def synthesis(demo: tuple[Workflow, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> Synthesis:
    workflow, interactions, users, items = demo
    encoded = workflow.encode_interactions(interactions)
    config = dict(load_config()["gan"], steps=2500, item_steps=200, cold_history=10)
    targets = np.random.default_rng(0).standard_normal((workflow.items.size, 6)).astype(np.float32)
    return fit_synthesis(encoded, workflow, users, items, targets, config, seed=0)


def cold_ids(synthesis: Synthesis, user_id: str, attributes: dict[str, str], length: int = 0) -> list[str]:
    indices, likelihoods = synthesis.cold_history(user_id, attributes, length)
    assert np.all(np.diff(likelihoods) >= 0), "least likely first"
    return [str(i) for i in synthesis.workflow.items.decode(indices)]


def topic_share(items: pd.DataFrame, item_ids: list[str], topic: str) -> float:
    genres = items.set_index("item_id")["genres"]
    return float(np.mean([topic in genres[i] for i in item_ids]))


def test_generated_users_follow_the_attributes(
    synthesis: Synthesis, demo: tuple[Workflow, pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    """In the demo data the age group raises the prior of topic (2 * age) % 8. Conditioned on each real user's
    attributes, the generator puts more of its mass on that topic for users of that age group than for the
    others: at least half the gap the real histories show."""
    workflow, interactions, users, items = demo
    genres = items.set_index("item_id")["genres"]
    real = interactions.merge(users, on="user_id")
    users = users.astype(str)
    records = [{str(k): v for k, v in row.items()} for row in users.drop(columns="user_id").to_dict("records")]
    conditions = synthesis.user_conditions(records)
    expected = synthesis.users.expected(conditions, np.random.default_rng(0), 16)
    for age, group in enumerate(AGE_GROUPS[:4]):
        topic = TOPICS[(2 * age) % len(TOPICS)]
        in_topic = real["item_id"].map(genres).str.contains(topic)
        real_gain = in_topic[real["age_group"] == group].mean() - in_topic[real["age_group"] != group].mean()
        topic_items = workflow.items.encode([i for i in genres.index if topic in genres[i]])
        shares = expected[:, topic_items].sum(axis=1) / expected[:, 1:].sum(axis=1)
        mine = (users["age_group"] == group).to_numpy()
        generated_gain = shares[mine].mean() - shares[~mine].mean()
        assert generated_gain > 0.5 * real_gain > 0, (group, generated_gain, real_gain)


def test_cold_histories_lean_to_the_attributes_topic(
    synthesis: Synthesis, demo: tuple[Workflow, pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    items = demo[3]
    topic = TOPICS[2]  # the age group 25-34's
    own = [topic_share(items, cold_ids(synthesis, f"a{n}", {"age_group": "25-34"}), topic) for n in range(5)]
    other = [topic_share(items, cold_ids(synthesis, f"b{n}", {"age_group": "55+"}), topic) for n in range(5)]
    assert np.mean(own) > np.mean(other)


def test_cold_history_is_deterministic_and_never_the_oov_bucket(synthesis: Synthesis) -> None:
    first = cold_ids(synthesis, "visitor", {"age_group": "25-34", "country": "fr"})
    assert first == cold_ids(synthesis, "visitor", {"age_group": "25-34", "country": "fr"})
    assert len(first) == 10 and len(set(first)) == 10
    assert len(cold_ids(synthesis, "visitor", {}, length=3)) == 3


def test_interaction_stream_is_exact_chunked_seeded_and_time_ordered(synthesis: Synthesis) -> None:
    chunks = list(synthesis.generate_interactions(1234, seed=5, conditions={"country": "de"}, chunk=100))
    rows = [row for _, chunk in chunks for row in chunk]
    users = [user for chunk_users, _ in chunks for user in chunk_users]
    assert len(rows) == 1234 and all(len(chunk) <= 100 for _, chunk in chunks)
    assert all(attributes["country"] == "de" for _, attributes in users)
    assert {u for u, _, _ in rows} == {u for u, _ in users}
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    assert not frame.duplicated(["user_id", "item_id"]).any(), "an item at most once per synthetic user"
    assert all(group["timestamp"].is_monotonic_increasing for _, group in frame.groupby("user_id"))
    assert frame["user_id"].str.startswith(SYNTHETIC_USER_PREFIX).all()
    again = [row for _, chunk in synthesis.generate_interactions(1234, 5, {"country": "de"}, 100) for row in chunk]
    assert again == rows
    other = [row for _, chunk in synthesis.generate_interactions(1234, 6, {"country": "de"}, 100) for row in chunk]
    assert other != rows


def test_users_and_items_streams(synthesis: Synthesis) -> None:
    users = [u for chunk in synthesis.generate_users(25, 1, {"gender": "x"}, 10) for u in chunk]
    assert len(users) == 25 and all(a["gender"] == "x" and "age_group" in a for _, a in users)
    items = [i for chunk in synthesis.generate_items(7, 1, {}, 10) for i in chunk]
    assert len(items) == 7 and all("genres" in a and "title" not in a for _, a in items)


def test_round_trip(
    synthesis: Synthesis, demo: tuple[Workflow, pd.DataFrame, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    synthesis.save(tmp_path)
    loaded = Synthesis.load(tmp_path, demo[0])
    assert cold_ids(loaded, "u", {"age_group": "55+"}) == cold_ids(synthesis, "u", {"age_group": "55+"})
    vectors = loaded.item_vectors([{"genres": "horror"}], ["new"])
    np.testing.assert_allclose(vectors, synthesis.item_vectors([{"genres": "horror"}], ["new"]))
    assert vectors.shape == (1, 6)
    assert set(loaded.curves) == {"users", "items"} and len(loaded.curves["users"]["critic"]) >= 1


def test_generated_candidates_blend_the_generator_with_the_model() -> None:
    from recsys_runtime.models.candidates import blend_generated

    best, scores = np.array([5, 6, 7]), np.array([0.6, 0.3, 0.1])  # the model's top items
    generated, likelihoods = np.array([2, 7]), np.array([0.2, 0.8])  # least likely first
    items, mixed = blend_generated(best, scores, generated, likelihoods, 4, 0.8, exclude=np.array([6]))
    # 6 is excluded, so the model's shares are over 5 and 7 only.
    # 7: 0.8 * 0.8 + 0.2 * 0.1 / 0.7; 5: 0.2 * 0.6 / 0.7; 2: 0.8 * 0.2.
    assert items.tolist() == [7, 5, 2]
    np.testing.assert_allclose(mixed, [0.64 + 0.02 / 0.7, 0.12 / 0.7, 0.16])
    only_model, _ = blend_generated(best, scores, generated, likelihoods, 2, 0.0)
    assert only_model.tolist() == [5, 6]


def test_unknown_candidates_keep_their_candidate_place() -> None:
    from services.ranking.core import keep_place_of_unknown

    candidate_scores = np.array([0.9, 0.8, 0.7, 0.6])  # candidate order: a, b, c, d
    ranker = np.array([0.1, 0.0, 0.5, 0.3])  # b is unknown to the rankers (0)
    out = keep_place_of_unknown(ranker, np.array([False, True, False, False]), candidate_scores)
    # b was 2nd among candidates: it takes the 2nd best known ranker score (0.3), beside d.
    assert out.tolist() == [0.1, 0.3, 0.5, 0.3]
    same = keep_place_of_unknown(ranker, np.zeros(4, bool), candidate_scores)
    assert same.tolist() == ranker.tolist()


def test_quality_figures(synthesis: Synthesis, demo: tuple[Workflow, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    from trainer.synthetic_quality import sample_users, synthetic_quality

    _, interactions, users, _ = demo
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable").astype({"timestamp": np.int64})
    last = ordered.groupby("user_id").tail(1)
    train, test = ordered.drop(last.index), last
    quality = synthetic_quality(synthesis, train, test, users)
    fidelity, utility, privacy = quality["fidelity"], quality["utility"], quality["privacy"]
    assert fidelity["synthetic_interactions"] == len(train)
    assert fidelity["item_popularity_jensen_shannon"] < 0.1 and fidelity["item_popularity_spearman"] > 0.7
    assert fidelity["history_length_ks"] < 0.2
    assert set(fidelity["attribute_marginals_total_variation"]) == {"age_group", "gender", "country"}
    # Trained on synthetic interactions, the recommender keeps a good part of what real data gives it.
    assert utility["hr10_ratio"] > 0.5, utility
    assert privacy["synthetic_users_equal_to_a_training_user"] == 0
    assert privacy["synthetic_closer_than_the_holdout_5th_percentile"] < 0.2

    # On large data the report compares with a sample of the users, and as many synthetic interactions.
    half = train["user_id"].nunique() // 2
    sampled = synthetic_quality(synthesis, train, test, users, seed=3, max_users=half)
    reference = sample_users(train, half, 3)
    assert reference["user_id"].nunique() == sampled["fidelity"]["real_users"] == half
    assert sampled["fidelity"]["synthetic_interactions"] == len(reference) < len(train)
    # Test users are still scored from their whole histories, all of them.
    assert sampled["utility"]["test_users"] == len(test)
    assert sample_users(train, half, 3).equals(reference) and sample_users(train, None, 3) is train


# A GAN small enough to train in a second or two.
SMALL_GAN: dict[str, Any] = {
    "noise": 4,
    "hidden": [8],
    "steps": 30,
    "batch_size": 32,
    "critic_steps": 2,
    "gradient_penalty": 10.0,
    "learning_rate": 1e-3,
}


def small_rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(conditions, multi-hot rows) of 300 entities over 40 items."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((300, 3)).astype(np.float32), (rng.random((300, 40)) < 0.1).astype(np.float32)


def test_sparse_and_dense_rows_train_the_same_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GAN makes only each batch's rows dense from a CSR matrix (conditions and targets alike): same rows,
    same random draws, so the same generator as from the dense tables."""
    conditions, dense = small_rows(1)
    from_dense, dense_curves = train_conditional_wgan(conditions, dense, SMALL_GAN, 4, "sigmoid")
    monkeypatch.setattr(gan, "DENSE_TABLE_BYTES", 0)  # these small tables would otherwise be made dense
    from_sparse, sparse_curves = train_conditional_wgan(
        sp.csr_matrix(conditions), sp.csr_matrix(dense), SMALL_GAN, 4, "sigmoid"
    )
    expected_weights = from_dense.kernels + from_dense.biases
    for expected, actual in zip(expected_weights, from_sparse.kernels + from_sparse.biases, strict=True):
        np.testing.assert_array_equal(actual, expected)
    assert sparse_curves.critic == dense_curves.critic


def test_fit_synthesis_never_makes_the_users_by_items_matrix_dense() -> None:
    """30k users x 10k items would be 1.2 GB as float32, and the items' bags of title tokens (10k items x
    their vocabulary) 0.2 GB: the traced peak of Python's and numpy's allocations stays far below both."""
    data = generate(n_users=30_000, n_items=10_000, mean_history=3, seed=5)
    items = data.items
    workflow = Workflow.fit(data.interactions, 50, items=items, users=data.users)
    title_bytes = (
        workflow.items.size * max(len(c.vocabulary) for c in workflow.item_attributes.columns if c.kind == "text") * 4
    )
    assert title_bytes > 0.2e9
    encoded = workflow.encode_interactions(data.interactions)
    dense_bytes = workflow.users.size * workflow.items.size * 4
    assert dense_bytes > 1.2e9
    config = {**load_config()["gan"], **SMALL_GAN, "steps": 1, "item_steps": 1, "batch_size": 1024, "critic_steps": 1}
    targets = np.random.default_rng(0).standard_normal((workflow.items.size, 2)).astype(np.float32)
    # TensorFlow's first graph in a process allocates some 150 MB of Python objects: not what is measured.
    train_conditional_wgan(*small_rows(2), dict(SMALL_GAN, steps=1), 0, "sigmoid")
    tracemalloc.start()
    try:
        synthesis = fit_synthesis(encoded, workflow, data.users, items, targets, config, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < title_bytes / 4, f"{peak / 1e6:.0f} MB traced at peak"
    assert synthesis.items is not None and synthesis.users.output_size == workflow.items.size
    some_users = encoded[encoded["user_index"].isin(range(1, 200))].groupby("user_index")["item_index"]
    assert {item_set_key(np.unique(items)) for _, items in some_users} <= synthesis.training_sets
