"""Mult-VAE/DAE: the numpy inference the candidates service runs equals the Keras model it was exported from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_runtime.models.autoencoder import AutoencoderScorer
from trainer.config import load_config
from trainer.models.autoencoder import build_model, scorer_from_model, train_autoencoder


def small_config(variant: str = "vae", hidden: list[int] | None = None) -> dict[str, Any]:
    config = dict(load_config()["autoencoder"])
    config.update(variant=variant, hidden=hidden or [32], latent=8, epochs=3, patience=2, batch_size=16)
    return config


def random_matrix(users: int = 60, items: int = 40, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < 0.15).astype(np.float32)
    dense[:, 0] = 0.0  # index 0 is the out-of-vocabulary bucket: never interacted with
    return sp.csr_matrix(dense)


@pytest.mark.parametrize(("variant", "hidden"), [("vae", [32]), ("dae", [32]), ("vae", [32, 16])])
def test_numpy_scorer_matches_keras(variant: str, hidden: list[int], tmp_path: Path) -> None:
    import keras

    matrix = random_matrix()
    model = build_model(matrix.shape[1], small_config(variant, hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(matrix.toarray(), epochs=3, batch_size=16, verbose=0)  # weights away from their initial values
    scorer_from_model(model, {"variant": variant}).save(tmp_path)
    scorer = AutoencoderScorer.load(tmp_path)  # what the candidates service loads
    for user in range(8):
        expected = np.asarray(model(matrix[user].toarray(), training=False))[0]
        np.testing.assert_allclose(scorer.score(matrix[user].indices), expected, rtol=1e-4, atol=1e-4)


def test_empty_history_scores_without_error() -> None:
    trained = train_autoencoder(random_matrix(), small_config(), seed=0)
    assert trained.scorer.score(np.array([], dtype=np.int64)).shape == (40,)


def test_early_stopping_keeps_the_best_epoch() -> None:
    values = iter([0.1, 0.3, 0.2, 0.25, 0.05, 0.9])
    config = small_config()
    config.update(epochs=6, patience=2)
    trained = train_autoencoder(random_matrix(), config, seed=0, validate=lambda scorer: next(values))
    assert trained.best_epoch == 2
    assert trained.epochs_run == 4
    assert trained.curves["validation"] == [0.1, 0.3, 0.2, 0.25]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"dropout": 1.0}, "dropout"), ({"latent": 0}, "latent"), ({"hidden": [0]}, "hidden"), ({"beta_max": -1}, "beta")],
)
def test_model_validates_its_arguments(change: dict[str, Any], message: str) -> None:
    config = small_config()
    config.update(change)
    with pytest.raises(ValueError, match=message):
        build_model(10, config)


def test_model_config_round_trips() -> None:
    model = build_model(10, small_config("dae"))
    config = model.get_config()
    assert config["variational"] is False and config["hidden"] == [32] and config["latent"] == 8
    assert type(model).from_config(config).get_config() == config


def test_scorer_from_model_exports_every_layer() -> None:
    model = build_model(12, small_config("vae", [16, 8]))
    model(np.zeros((1, 12), np.float32))
    scorer = scorer_from_model(model, {})
    assert [k.shape for k, _ in scorer.encoder] == [(12, 16), (16, 8), (8, 8)]
    assert [k.shape for k, _ in scorer.decoder] == [(8, 8), (8, 16), (16, 12)]


@pytest.mark.parametrize("hidden", [[32], [32, 16]])
def test_batched_candidates_equal_the_per_user_path(hidden: list[int]) -> None:
    """Validation scores every epoch's candidates for all validation users at once; they must be the lists the
    per-user path (the candidates service's) gives, including users with an empty or unknown-only history."""
    from recsys_runtime.models.candidates import AutoencoderCandidates, CandidateScorer, candidate_scores

    matrix = random_matrix(users=80, items=50, seed=2)
    trained = train_autoencoder(matrix, small_config("vae", hidden), seed=0)
    state_size = trained.scorer.item_matrix()[0].shape[0]
    scorer = trained.scorer.with_items(np.random.default_rng(1).standard_normal((3, state_size + 1)))
    histories = [matrix[u].indices for u in range(80)] + [np.array([], np.int64), np.array([51, 52])]
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    candidates = CandidateScorer(AutoencoderCandidates(scorer), np.append(popularity, [0, 0, 0]), 2.0)
    batched = candidates.top_many(histories, histories, 20, chunk=16)
    exact = 0
    for history, (best, scores) in zip(histories, batched, strict=True):
        expected_best, expected_scores = candidates.top(history, history, 20)
        # Batched float32 products round differently from one user's: items whose scores tie to ~1e-7 may
        # swap. The batched list's items must score, by the per-user path, what its top 20 score.
        per_user = candidate_scores(AutoencoderCandidates(scorer), history, history, candidates.popularity, 2.0)
        np.testing.assert_allclose(per_user[best], expected_scores, rtol=1e-5)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
        exact += np.array_equal(best, expected_best)
    assert exact >= 0.9 * len(histories)
    np.testing.assert_allclose(
        scorer.user_states(histories[:5]), [scorer.user_state(h) for h in histories[:5]], atol=1e-5
    )
