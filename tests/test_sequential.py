"""GRU4Rec and Caser: the numpy inference Triton runs equals the Keras models they were exported from, whether
they were trained with a full or a sampled softmax; the catalogue size picks the softmax."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys_runtime.models.markov import Markov
from recsys_runtime.models.ranking import Ranker, fit_weights
from recsys_runtime.models.sequential import Caser, GRU4Rec, softmax_over
from trainer.config import ConfigError, load_config
from trainer.models.sequential import (
    FULL_SOFTMAX,
    SampledSoftmaxTrainer,
    build_caser,
    build_gru4rec,
    caser_windows,
    choose_softmax,
    gru_chunks,
    item_unigrams,
    train_caser,
    train_gru4rec,
)

N_ITEMS, N_USERS = 30, 6


def sequences() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(1, N_ITEMS, rng.integers(4, 20)).astype(np.int32) for _ in range(N_USERS - 1)]


def test_gru_chunks_and_caser_windows() -> None:
    chunks = gru_chunks([np.array([1, 2, 3, 4, 5])], length=3)
    assert chunks.tolist() == [[2, 3, 4, 5], [0, 0, 1, 2]]
    windows, owners, targets = caser_windows([np.array([1, 2, 3])], [4], length=2)
    assert windows.tolist() == [[0, 1], [1, 2]] and owners.tolist() == [4, 4] and targets.tolist() == [2, 3]


def fit_with(model: Any, x: Any, y: np.ndarray, softmax: str) -> None:
    """Two epochs of the full softmax (the model as compiled) or of a sampled one (8 negatives) on its layers."""
    import keras

    trainer = model
    if softmax == "sampled":
        trainer = SampledSoftmaxTrainer(model, item_unigrams(sequences(), N_ITEMS), negatives=8, seed=0)
        trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit(x, y, epochs=2, verbose=0)


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_gru4rec_numpy_matches_keras(tmp_path: Path, softmax: str) -> None:
    config = dict(load_config()["gru4rec"], max_length=8, embedding=6, units=5, epochs=1)
    model = build_gru4rec(N_ITEMS, config)
    chunks = gru_chunks(sequences(), config["max_length"])
    initial = model.get_layer("output").get_weights()[0].copy()
    fit_with(model, chunks[:, :-1], chunks[:, 1:], softmax)
    assert not np.allclose(model.get_layer("output").get_weights()[0], initial)  # the output layer was trained
    GRU4Rec.from_model(model).save(tmp_path)
    exported = GRU4Rec.load(tmp_path)
    for sequence in sequences():
        recent = sequence[-config["max_length"] :]
        padded = np.pad(recent, (config["max_length"] - len(recent), 0))[None, :]
        expected = np.asarray(model(padded, training=False))[0, -1]
        candidates = np.arange(1, N_ITEMS)
        np.testing.assert_allclose(
            exported.score(exported.state(recent), candidates), expected[candidates], rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_caser_numpy_matches_keras(tmp_path: Path, softmax: str) -> None:
    config = dict(load_config()["caser"], length=4, embedding=6, vertical_filters=2, horizontal_filters=3)
    model = build_caser(N_ITEMS, N_USERS, config)
    windows, owners, targets = caser_windows(sequences(), list(range(1, N_USERS)), config["length"])
    initial = model.get_layer("output").get_weights()[0].copy()
    fit_with(model, [windows, owners], targets, softmax)
    assert not np.allclose(model.get_layer("output").get_weights()[0], initial)
    Caser.from_model(model, config["length"]).save(tmp_path)
    exported = Caser.load(tmp_path)
    for user, sequence in enumerate(sequences(), start=1):
        for end in (2, len(sequence)):  # a short (padded) window and a full one
            history = sequence[:end]
            window = np.pad(history[-4:], (4 - len(history[-4:]), 0))[None, :]
            expected = np.asarray(model([window, np.array([user])], training=False))[0]
            candidates = np.arange(1, N_ITEMS)
            np.testing.assert_allclose(
                exported.score(exported.state(history, user), candidates), expected[candidates], rtol=1e-4, atol=1e-4
            )


def test_the_catalogue_size_picks_the_softmax() -> None:
    assert choose_softmax(30, min_items=31, negatives=8).kind == "full"
    sampled = choose_softmax(30, min_items=30, negatives=8)
    assert (sampled.kind, sampled.negatives) == ("sampled", 8)
    assert sampled.describe() == {"softmax": "sampled", "negatives": 8, "sampled_softmax_min_items": 30}
    assert choose_softmax(30, min_items=0, negatives=1000).negatives == 29  # every item but the padding
    assert choose_softmax(1, min_items=0, negatives=8).kind == "full"  # nothing to sample
    defaults = load_config()["ranking"]
    # ml-100k's 1,683 items stay on the full softmax by default
    assert choose_softmax(1683, defaults["sampled_softmax_min_items"], defaults["sampled_negatives"]).kind == "full"


def test_negatives_follow_popularity_and_never_include_padding() -> None:
    import tensorflow as tf

    unigrams = item_unigrams([np.array([1, 1, 1, 2]), np.array([2, 0, 1])], n_items=5)
    assert unigrams == [0.0, 4.0, 2.0, 1.0, 1.0]  # padding never drawn; unseen items weigh one interaction
    drawn = [
        tf.random.fixed_unigram_candidate_sampler(
            tf.constant([[1]], tf.int64), 1, 3, True, 5, unigrams=unigrams, seed=seed
        )[0].numpy()
        for seed in range(50)
    ]
    assert 0 not in np.concatenate(drawn)


def successor(item: int) -> int:
    return item % (N_ITEMS - 1) + 1


def successor_sequences() -> list[np.ndarray]:
    """Runs of consecutive items from random starts: the next item is always the planted successor."""
    rng = np.random.default_rng(1)
    starts = rng.integers(1, N_ITEMS, 40)
    return [np.array([1 + (start - 1 + step) % (N_ITEMS - 1) for step in range(12)], np.int32) for start in starts]


@pytest.mark.parametrize("sparse_update_min_rows", [0, 1], ids=["adam", "lazy-adam-on-every-table"])
def test_sampled_softmax_learns_the_planted_next_item(sparse_update_min_rows: int) -> None:
    data = successor_sequences()
    softmax = choose_softmax(N_ITEMS, min_items=N_ITEMS - 1, negatives=8)
    assert softmax.kind == "sampled"
    gru_config = dict(
        load_config()["gru4rec"],
        max_length=8,
        embedding=16,
        units=32,
        dropout=0.0,
        learning_rate=0.01,
        batch_size=16,
        epochs=10,
    )
    lazy = sparse_update_min_rows
    gru, gru_losses = train_gru4rec(data, N_ITEMS, gru_config, seed=0, softmax=softmax, sparse_update_min_rows=lazy)
    caser_config = dict(
        load_config()["caser"],
        length=2,
        embedding=16,
        vertical_filters=2,
        horizontal_filters=4,
        dropout=0.0,
        learning_rate=0.01,
        batch_size=32,
        epochs=6,
    )
    users = list(range(1, len(data) + 1))
    caser, caser_losses = train_caser(
        data, users, N_ITEMS, len(data) + 1, caser_config, seed=0, softmax=softmax, sparse_update_min_rows=lazy
    )
    candidates = np.arange(1, N_ITEMS)
    for model, losses in ((gru, gru_losses), (caser, caser_losses)):
        assert losses[-1] < losses[0] / 3
        top = [
            candidates[np.argmax(model.score(model.state(sequence[:6], user), candidates))]
            for user, sequence in zip(users, data, strict=True)
        ]
        assert np.mean([best == successor(int(sequence[5])) for best, sequence in zip(top, data, strict=True)]) >= 0.9

    # Seeded: the negatives drawn, hence the losses and weights, repeat.
    again, again_losses = train_gru4rec(data, N_ITEMS, gru_config, seed=0, softmax=softmax, sparse_update_min_rows=lazy)
    assert again_losses == gru_losses and np.array_equal(again.out_kernel, gru.out_kernel)


def test_below_the_threshold_the_full_softmax_trains_as_before() -> None:
    config = dict(load_config()["gru4rec"], max_length=8, embedding=6, units=5, epochs=1)
    full = choose_softmax(N_ITEMS, min_items=N_ITEMS + 1, negatives=8)
    _, losses = train_gru4rec(sequences(), N_ITEMS, config, seed=0, softmax=full)
    _, default_losses = train_gru4rec(sequences(), N_ITEMS, config, seed=0, softmax=FULL_SOFTMAX)
    _, sampled_losses = train_gru4rec(
        sequences(), N_ITEMS, config, seed=0, softmax=choose_softmax(N_ITEMS, min_items=0, negatives=8)
    )
    assert losses == default_losses and losses != sampled_losses


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("sampled_softmax_min_items = -1", "sampled_softmax_min_items must be >= 0"),
        ("sampled_negatives = 0", "sampled_negatives must be >= 1"),
        ("sampled_negatives = 2.5", "must be int"),
        ("sparse_update_min_rows = -1", "sparse_update_min_rows must be >= 0"),
    ],
)
def test_sampled_softmax_keys_are_validated(tmp_path: Path, override: str, problem: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[ranking]\n{override}\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(path)
    path.write_text("[ranking]\nsampled_softmax_min_items = 0\nsampled_negatives = 64\n")
    assert load_config(path)["ranking"]["sampled_softmax_min_items"] == 0


def test_softmax_over_candidates() -> None:
    probabilities = softmax_over(np.array([1.0, 2.0, 3.0], np.float32))
    assert probabilities.sum() == pytest.approx(1.0) and np.all(np.diff(probabilities) > 0)


def test_blend_weights_pick_the_component_that_finds_the_target() -> None:
    candidates = np.array([5, 6, 7])
    good = {"candidates": np.array([0.1, 0.2, 0.7]), "markov": np.array([0.8, 0.1, 0.1])}
    per_user = [(candidates, good)] * 4
    weights, alone = fit_weights(per_user, np.array([5, 5, 5, 5]), [0.0, 1.0])
    assert weights == {"candidates": 0.0, "markov": 1.0}
    assert alone["markov"]["HR@10"] == 1.0


def test_ranker_round_trips(tmp_path: Path) -> None:
    users = np.repeat(np.arange(3), 3)
    markov = Markov.fit(users, np.tile([1, 2, 3], 3), n_items=5, neighbours=3, order=1, recency_decay=1.0)
    ranker = Ranker(markov, weights={"candidates": 0.5, "markov": 1.0})
    ranker.save(tmp_path)
    loaded = Ranker.load(tmp_path)
    args = (np.array([1]), 0, np.array([2, 3, 4]), np.array([0.2, 0.5, 0.3], np.float32))
    np.testing.assert_allclose(loaded.score(*args), ranker.score(*args))
    assert loaded.gru4rec is None and loaded.caser is None and loaded.weights == ranker.weights
