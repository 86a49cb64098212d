"""GRU4Rec and Caser: the numpy inference Triton runs equals the Keras models they were exported from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.config import load_config
from trainer.models.markov import Markov
from trainer.models.ranking import Ranker, fit_weights
from trainer.models.sequential import (
    Caser,
    GRU4Rec,
    build_caser,
    build_gru4rec,
    caser_windows,
    gru_chunks,
    softmax_over,
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


def test_gru4rec_numpy_matches_keras(tmp_path: Path) -> None:
    config = dict(load_config()["gru4rec"], max_length=8, embedding=6, units=5, epochs=1)
    model = build_gru4rec(N_ITEMS, config)
    chunks = gru_chunks(sequences(), config["max_length"])
    model.fit(chunks[:, :-1], chunks[:, 1:], epochs=2, verbose=0)
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


def test_caser_numpy_matches_keras(tmp_path: Path) -> None:
    config = dict(load_config()["caser"], length=4, embedding=6, vertical_filters=2, horizontal_filters=3)
    model = build_caser(N_ITEMS, N_USERS, config)
    windows, owners, targets = caser_windows(sequences(), list(range(1, N_USERS)), config["length"])
    model.fit([windows, owners], targets, epochs=2, verbose=0)
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
