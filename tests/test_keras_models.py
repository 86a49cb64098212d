"""The trainer's Keras classes: each rejects bad constructor arguments with a ValueError naming the argument, and
each model rebuilds from its get_config(); the Mult-VAE and the sampled-softmax trainer also survive a .keras
file (a zip of JSON and HDF5: no pickle) with the same outputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from trainer.config import load_config
from trainer.models.autoencoder import BestEpoch, MultAutoencoder, build_model
from trainer.models.batches import SparseRowBatches
from trainer.models.gan import ConditionalGenerator, ConditionalWGAN, ProjectionCritic
from trainer.models.item_autoencoder import ItemAttributeAutoencoder
from trainer.models.sequential import SampledSoftmaxTrainer, build_gru4rec, gru_chunks, item_unigrams
from trainer.progress import SILENT, BatchProgress

N_ITEMS = 30


def vae_arguments(**change: Any) -> dict[str, Any]:
    arguments = {
        "n_items": 12,
        "hidden": [16, 8],
        "latent": 4,
        "dropout": 0.5,
        "variational": True,
        "beta_max": 0.2,
        "anneal_steps": 100,
        "l2": 0.01,
    }
    return {**arguments, **change}


def gru4rec() -> Any:
    return build_gru4rec(N_ITEMS, dict(load_config()["gru4rec"], max_length=6, embedding=4, units=5))


def histories() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(1, N_ITEMS, 10).astype(np.int32) for _ in range(12)]


def wgan_arguments(**change: Any) -> dict[str, Any]:
    arguments = {
        "noise_size": 3,
        "condition_size": 2,
        "output_size": 5,
        "hidden": [8, 4],
        "output_activation": "sigmoid",
        "learning_rate": 0.001,
        "gradient_penalty": 10.0,
        "critic_steps": 2,
        "reconstruction_weight": 0.5,
    }
    return {**arguments, **change}


BAD_ARGUMENTS: list[tuple[Callable[[], Any], str]] = [
    (lambda: MultAutoencoder(**vae_arguments(n_items=1)), "n_items"),
    (lambda: MultAutoencoder(**vae_arguments(hidden=[8, 0])), "hidden"),
    (lambda: MultAutoencoder(**vae_arguments(latent=0)), "latent"),
    (lambda: MultAutoencoder(**vae_arguments(dropout=1.0)), "dropout"),
    (lambda: MultAutoencoder(**vae_arguments(dropout=-0.1)), "dropout"),
    (lambda: MultAutoencoder(**vae_arguments(beta_max=-1.0)), "beta_max"),
    (lambda: MultAutoencoder(**vae_arguments(anneal_steps=0)), "anneal_steps"),
    (lambda: MultAutoencoder(**vae_arguments(l2=-0.1)), "l2"),
    (lambda: SparseRowBatches(sp.csr_matrix((4, 3)), 0, seed=0), "batch_size"),
    (lambda: SparseRowBatches(sp.csr_matrix((0, 3)), 8, seed=0), "matrix"),
    (lambda: BestEpoch(None, 0, {}), "patience"),
    (lambda: BatchProgress(SILENT, "batches", 0, 5), "epochs"),
    (lambda: BatchProgress(SILENT, "batches", 2, 0), "steps_per_epoch"),
    (lambda: SampledSoftmaxTrainer("gru4rec", [1.0] * N_ITEMS, 4, 0), "model"),
    (
        lambda: SampledSoftmaxTrainer(keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)]), [1.0] * 3, 1, 0),
        "model",
    ),
    (lambda: SampledSoftmaxTrainer(gru4rec(), [1.0] * (N_ITEMS - 1), 4, 0), "unigrams"),
    (lambda: SampledSoftmaxTrainer(gru4rec(), [-1.0] + [1.0] * (N_ITEMS - 1), 4, 0), "unigrams"),
    (lambda: SampledSoftmaxTrainer(gru4rec(), [0.0] + [1.0] * (N_ITEMS - 1), 0, 0), "negatives"),
    (lambda: SampledSoftmaxTrainer(gru4rec(), [0.0] + [1.0] * (N_ITEMS - 1), N_ITEMS, 0), "negatives"),
    (lambda: ConditionalGenerator(0, [4], 3, "sigmoid"), "input_size"),
    (lambda: ConditionalGenerator(5, [], 3, "sigmoid"), "hidden"),
    (lambda: ConditionalGenerator(5, [4], 0, "sigmoid"), "output_size"),
    (lambda: ConditionalGenerator(5, [4], 3, "no-such-activation"), "output_activation"),
    (lambda: ProjectionCritic(0, 2, [4]), "output_size"),
    (lambda: ProjectionCritic(5, -1, [4]), "condition_size"),
    (lambda: ProjectionCritic(5, 2, [4, -1]), "hidden"),
    (lambda: ConditionalWGAN(**wgan_arguments(noise_size=0)), "noise_size"),
    (lambda: ConditionalWGAN(**wgan_arguments(learning_rate=0.0)), "learning_rate"),
    (lambda: ConditionalWGAN(**wgan_arguments(gradient_penalty=-1.0)), "gradient_penalty"),
    (lambda: ConditionalWGAN(**wgan_arguments(critic_steps=0)), "critic_steps"),
    (lambda: ConditionalWGAN(**wgan_arguments(reconstruction_weight=-0.5)), "reconstruction_weight"),
    (lambda: ConditionalWGAN(**wgan_arguments(condition_size=-1)), "condition_size"),
    (lambda: ItemAttributeAutoencoder(0, 8, 4), "features"),
    (lambda: ItemAttributeAutoencoder(10, 0, 4), "hidden"),
    (lambda: ItemAttributeAutoencoder(10, 8, 0), "code"),
]


@pytest.mark.parametrize(
    ("construct", "argument"), BAD_ARGUMENTS, ids=[f"{i}-{a}" for i, (_, a) in enumerate(BAD_ARGUMENTS)]
)
def test_bad_arguments_raise_value_error_naming_them(construct: Callable[[], Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        construct()


def built(model: Any, *inputs: Any) -> Any:
    """The model after one call (a subclassed model makes its weights on its first call)."""
    model(*inputs)
    return model


def round_trips(model: Any, *inputs: Any) -> None:
    """from_config(get_config()) rebuilds the same architecture: same config, same weights' count and shapes."""
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    if inputs:
        built(model, *inputs)
        built(clone, *inputs)
    assert len(model.weights) > 0
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]


@pytest.mark.parametrize("variational", [True, False])
def test_mult_autoencoder_round_trips(variational: bool) -> None:
    round_trips(MultAutoencoder(**vae_arguments(variational=variational)), np.zeros((2, 12), np.float32))


def test_sampled_softmax_trainer_round_trips() -> None:
    trainer = SampledSoftmaxTrainer(gru4rec(), item_unigrams(histories(), N_ITEMS), negatives=4, seed=3)
    config = trainer.get_config()
    assert (config["negatives"], config["seed"], len(config["unigrams"])) == (4, 3, N_ITEMS)
    round_trips(trainer, np.zeros((2, 6), np.int32))
    clone = SampledSoftmaxTrainer.from_config(config)
    assert [layer.name for layer in clone.ranker.layers] == [layer.name for layer in trainer.ranker.layers]


def test_gan_models_round_trip() -> None:
    round_trips(ConditionalGenerator(5, [8, 4], 3, "sigmoid"))
    round_trips(ProjectionCritic(5, 2, [8, 4]))
    round_trips(ConditionalWGAN(**wgan_arguments()), np.zeros((2, 2), np.float32))
    # The generator's weights alternate kernel and bias, the layout recsys_runtime's Generator reads.
    weights = ConditionalWGAN(**wgan_arguments()).generator.get_weights()
    assert [w.shape for w in weights] == [(5, 8), (8,), (8, 4), (4,), (4, 5), (5,)]


def test_item_attribute_autoencoder_round_trips() -> None:
    model = ItemAttributeAutoencoder(10, 8, 4)
    round_trips(model)
    assert model.encoder()(np.zeros((3, 10), np.float32)).shape == (3, 4)


def as_json(config: dict[str, Any]) -> Any:
    return json.loads(json.dumps(config))


def test_mult_vae_survives_a_keras_file(tmp_path: Path) -> None:
    matrix = (np.random.default_rng(0).random((40, 20)) < 0.2).astype(np.float32)
    config = dict(load_config()["autoencoder"], variant="vae", hidden=[16], latent=4)
    model = build_model(20, config)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(matrix, epochs=2, batch_size=8, verbose=0)  # weights (and the KL annealing's step count) trained
    model.save(tmp_path / "vae.keras")
    loaded = keras.saving.load_model(tmp_path / "vae.keras")
    assert isinstance(loaded, MultAutoencoder) and loaded.get_config() == model.get_config()
    assert float(loaded.steps.numpy()) == float(model.steps.numpy()) == 10.0
    np.testing.assert_allclose(np.asarray(loaded(matrix[:5])), np.asarray(model(matrix[:5])), rtol=1e-6)


def test_sampled_softmax_trainer_survives_a_keras_file(tmp_path: Path) -> None:
    model = gru4rec()
    chunks = gru_chunks(histories(), 6)
    trainer = SampledSoftmaxTrainer(model, item_unigrams(histories(), N_ITEMS), negatives=4, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit(chunks[:, :-1], chunks[:, 1:], epochs=2, verbose=0)
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras")
    assert isinstance(loaded, SampledSoftmaxTrainer)
    assert as_json(loaded.get_config()) == as_json(trainer.get_config())  # shapes come back as lists, not tuples
    x = chunks[:4, :-1]
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(trainer(x)), rtol=1e-6)
    # The full-logits ranker inside it, which export reads, carries the trained weights too.
    np.testing.assert_allclose(np.asarray(loaded.ranker(x)), np.asarray(model(x)), rtol=1e-6)
