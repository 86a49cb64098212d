"""Mult-VAE and Mult-DAE (Liang et al., WWW 2018): autoencoders over a user's interaction vector with a
multinomial likelihood. The candidate model: a user's history in, a score for every item out.

Keras 3 for training; the trained weights are exported as plain .npy arrays and scored with numpy
(`recsys_runtime.models.autoencoder.AutoencoderScorer`), so the candidates service never imports TensorFlow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_runtime.models.autoencoder import AutoencoderScorer
from trainer import distributed
from trainer.models.batches import SparseRowBatches
from trainer.models.checks import require
from trainer.progress import SILENT, TrainingProgress, keras_batches, step_plan

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise in a CLI; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # after the log level, which TensorFlow reads when it loads
import tensorflow as tf


@keras.saving.register_keras_serializable(package="recsys")
class MultAutoencoder(keras.Model):
    """Encoder: L2-normalised, dropout-corrupted interaction vector → tanh layers → latent (mean, log-variance
    for the VAE). Decoder: latent → tanh layers → logits over the catalogue. Loss: multinomial negative
    log-likelihood, plus beta * KL (annealed from 0 to beta_max over anneal_steps updates) for the VAE, plus L2
    on the weights."""

    def __init__(
        self,
        n_items: int,
        hidden: Sequence[int],
        latent: int,
        dropout: float,
        variational: bool,
        beta_max: float,
        anneal_steps: int,
        l2: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        require(n_items >= 2, f"n_items must be >= 2, got {n_items}")
        require(all(int(h) > 0 for h in hidden), f"hidden sizes must be positive, got {list(hidden)}")
        require(latent > 0, f"latent must be positive, got {latent}")
        require(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        require(beta_max >= 0.0, f"beta_max must be >= 0, got {beta_max}")
        require(anneal_steps > 0, f"anneal_steps must be > 0, got {anneal_steps}")
        require(l2 >= 0.0, f"l2 must be >= 0, got {l2}")
        self.n_items, self.hidden, self.latent = int(n_items), [int(h) for h in hidden], int(latent)
        self.dropout_rate, self.variational = float(dropout), bool(variational)
        self.beta_max, self.anneal_steps, self.l2 = float(beta_max), int(anneal_steps), float(l2)
        # Layers are made in this order because each draws its initialiser's seed from the seeded global RNG.
        regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
        self.normalize = keras.layers.UnitNormalization()
        self.corrupt = keras.layers.Dropout(dropout)
        self.encoder = [keras.layers.Dense(h, activation="tanh", kernel_regularizer=regularizer) for h in self.hidden]
        self.mean = keras.layers.Dense(latent, kernel_regularizer=regularizer)
        self.log_variance = keras.layers.Dense(latent) if variational else None
        self.decoder = [
            keras.layers.Dense(h, activation="tanh", kernel_regularizer=regularizer) for h in reversed(self.hidden)
        ]
        self.logits = keras.layers.Dense(n_items, kernel_regularizer=regularizer)
        # Every replica counts each step; under a multi-worker strategy the first replica's count is kept.
        self.steps = keras.Variable(
            0.0, trainable=False, dtype="float32", name="steps", aggregation="only_first_replica"
        )
        # Built now: training calls the layers, never the model, so Keras would not otherwise count it as built
        # (nor save its weights). The initial values are the same: each initialiser's seed was drawn above.
        self.build((None, self.n_items))

    def build(self, input_shape: Any) -> None:
        if self.built:  # loading a saved model builds it again from its recorded input shape
            return
        width = int(input_shape[-1])
        for layer in self.encoder:
            layer.build((None, width))
            width = layer.units
        self.mean.build((None, width))
        if self.log_variance is not None:
            self.log_variance.build((None, width))
        width = self.latent
        for layer in self.decoder:
            layer.build((None, width))
            width = layer.units
        self.logits.build((None, width))

    def encode(self, x: Any, training: bool = False) -> tuple[Any, Any]:
        h = self.corrupt(self.normalize(x), training=training)
        for layer in self.encoder:
            h = layer(h)
        mean = self.mean(h)
        log_variance = self.log_variance(h) if self.log_variance is not None else None
        return mean, log_variance

    def decode(self, z: Any) -> Any:
        for layer in self.decoder:
            z = layer(z)
        return self.logits(z)

    def call(self, x: Any, training: bool = False) -> Any:
        mean, log_variance = self.encode(x, training=training)
        z = mean
        if training and log_variance is not None:
            z = mean + tf.exp(0.5 * log_variance) * tf.random.normal(tf.shape(mean))
        return self.decode(z)

    def train_step(self, data: Any) -> dict[str, Any]:
        x = data
        with tf.GradientTape() as tape:
            mean, log_variance = self.encode(x, training=True)
            z = mean
            kl = tf.constant(0.0)
            if log_variance is not None:
                z = mean + tf.exp(0.5 * log_variance) * tf.random.normal(tf.shape(mean))
                kl = tf.reduce_mean(
                    tf.reduce_sum(0.5 * (-log_variance + tf.exp(log_variance) + tf.square(mean) - 1.0), axis=-1)
                )
            logits = self.decode(z)
            nll = -tf.reduce_mean(tf.reduce_sum(tf.nn.log_softmax(logits) * x, axis=-1))
            beta = tf.minimum(self.beta_max, self.beta_max * self.steps / float(self.anneal_steps))
            regularization = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
            loss = nll + beta * kl + regularization
            # The optimizer sums the replicas' gradients: each replica's share of the global-batch mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas if replicas > 1 else loss
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        self.steps.assign_add(1.0)
        return {"loss": loss, "nll": nll, "kl": kl, "beta": beta}

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_items": self.n_items,
            "hidden": self.hidden,
            "latent": self.latent,
            "dropout": self.dropout_rate,
            "variational": self.variational,
            "beta_max": self.beta_max,
            "anneal_steps": self.anneal_steps,
            "l2": self.l2,
        }


def build_model(n_items: int, config: dict[str, Any]) -> MultAutoencoder:
    """A MultVAE (variational) or MultDAE (denoising) for a catalogue of n_items indices, from the config's
    [autoencoder] section."""
    return MultAutoencoder(
        n_items=n_items,
        hidden=config["hidden"],
        latent=config["latent"],
        dropout=config["dropout"],
        variational=config["variant"] == "vae",
        beta_max=config["beta_max"],
        anneal_steps=config["anneal_steps"],
        l2=config["l2"],
    )


def scorer_from_model(model: MultAutoencoder, meta: dict[str, Any]) -> AutoencoderScorer:
    def pair(layer: Any) -> tuple[np.ndarray, np.ndarray]:
        kernel, bias = layer.get_weights()
        return np.asarray(kernel, np.float32), np.asarray(bias, np.float32)

    return AutoencoderScorer(
        [*(pair(layer) for layer in model.encoder), pair(model.mean)],
        [*(pair(layer) for layer in model.decoder), pair(model.logits)],
        meta,
    )


class BestEpoch(keras.callbacks.Callback):
    """Per epoch: keeps the losses and a validation score of the model's scorer (higher is better), holds the
    weights of the best epoch so far, and stops training after `patience` epochs without a better score. With
    no `validate`, only the losses (best_epoch stays 0)."""

    def __init__(
        self,
        validate: Callable[[AutoencoderScorer], float] | None,
        patience: int,
        meta: dict[str, Any],
    ) -> None:
        super().__init__()
        require(patience >= 1, f"patience must be >= 1, got {patience}")
        self.validate, self.patience, self.meta = validate, int(patience), meta
        self.curves: dict[str, list[float]] = {"loss": [], "nll": [], "kl": [], "validation": []}
        self.best_value, self.best_epoch, self.since_best = -math.inf, 0, 0
        self.best_weights: list[np.ndarray] | None = None
        self.epochs_run = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs_run = epoch + 1
        for key in ("loss", "nll", "kl"):
            self.curves[key].append(float((logs or {})[key]))
        if self.validate is None:
            return
        # Every worker must take the same early-stopping decision: the score is agreed on by all-reduce.
        value = distributed.agree(self.validate(scorer_from_model(self.model, self.meta)))
        self.curves["validation"].append(value)
        if value > self.best_value:
            self.best_value, self.best_epoch, self.since_best = value, self.epochs_run, 0
            self.best_weights = self.model.get_weights()
        else:
            self.since_best += 1
        if self.since_best >= self.patience:
            self.model.stop_training = True


@dataclass
class TrainedAutoencoder:
    scorer: AutoencoderScorer
    curves: dict[str, list[float]]
    best_epoch: int
    epochs_run: int


def train_autoencoder(
    matrix: sp.csr_matrix,
    config: dict[str, Any],
    seed: int,
    validate: Callable[[AutoencoderScorer], float] | None = None,
    progress: TrainingProgress = SILENT,
    task: str = "autoencoder batches",
) -> TrainedAutoencoder:
    """Train on a binary user x item matrix for `epochs`, or fewer batches where config's `max_steps` (0: no cap)
    is smaller; with `validate` (higher is better), keep the best epoch's weights and stop after `patience`
    epochs without improvement."""
    keras.utils.set_random_seed(seed)
    with distributed.scope():
        model = build_model(matrix.shape[1], config)
        model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]))
        if distributed.replicas() > 1:
            # Built here, in the scope: Keras cannot build a subclassed model from a one-tensor distributed batch.
            model(np.zeros((1, matrix.shape[1]), np.float32))
    batches = SparseRowBatches(matrix, config["batch_size"], seed)
    epochs, steps = step_plan(config["epochs"], len(batches), int(config.get("max_steps", 0)))
    meta = {"variant": config["variant"], "hidden": config["hidden"], "latent": config["latent"]}
    best = BestEpoch(validate, config["patience"], meta)
    model.fit(
        batches,
        epochs=epochs,
        steps_per_epoch=steps if steps < len(batches) else None,
        verbose=0,
        callbacks=[best, keras_batches(progress, task, epochs, steps)],
    )
    # No score ever counted as better (no `validate`, or none improved on -inf): the last epoch is the one kept.
    best_epoch = best.best_epoch or best.epochs_run
    # Early stopping leaves the bar short of its total: close it, saying where training stopped.
    progress.work(task, epochs * steps, epochs * steps, f"stopped after epoch {best.epochs_run}, best {best_epoch}")
    if best.best_weights is not None:
        model.set_weights(best.best_weights)
    return TrainedAutoencoder(scorer_from_model(model, meta), best.curves, best_epoch, best.epochs_run)
