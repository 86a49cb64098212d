"""Conditional Wasserstein GANs with gradient penalty (Gulrajani et al., 2017), conditioned on attributes.

Two generators are trained by `recsys train`:
- users (cf. CFGAN, Chae et al. CIKM 2018): user attributes + noise -> a vector over the catalogue, the
  probability that such a user interacted with each item. The critic sees real (attributes, multi-hot
  interactions) pairs against generated ones.
- items (cf. GAR, Chen et al. SIGIR 2022): item attributes + noise -> the item's collaborative vector in
  the candidate model (its column of the Mult-VAE decoder and its bias), so an item registered with
  attributes only can be scored like a trained one. An L2 term towards the real vector keeps the
  generated vector in the region the decoder uses.

TensorFlow trains them; the generators are exported as .npy weights and run in numpy at serving time
(recsys_runtime.models.generator).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_runtime.models.generator import Generator
from trainer import distributed
from trainer.models.checks import require
from trainer.progress import SILENT, ThrottledProgress, TrainingProgress

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise in a CLI; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # after the log level, which TensorFlow reads when it loads
import tensorflow as tf


@dataclass
class GanCurves:
    critic: list[float] = field(default_factory=list)  # Wasserstein estimate, per epoch
    generator: list[float] = field(default_factory=list)
    gradient_penalty: list[float] = field(default_factory=list)
    reconstruction: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, list[float]]:
        return {
            "critic": self.critic,
            "generator": self.generator,
            "gradient_penalty": self.gradient_penalty,
            "reconstruction": self.reconstruction,
        }


def _check_sizes(name: str, sizes: Any) -> list[int]:
    sizes = list(sizes)
    require(len(sizes) >= 1 and all(int(v) >= 1 for v in sizes), f"{name} must be one or more sizes >= 1, got {sizes}")
    return [int(v) for v in sizes]


@keras.saving.register_keras_serializable(package="recsys")
class ConditionalGenerator(keras.Model):
    """[noise, condition] (input_size wide) -> relu Dense layers of `hidden` sizes -> Dense(output_size) with
    `output_activation` ("sigmoid" for probabilities, "linear" for vectors). A functional model: its layers and
    weights exist from construction, kernel then bias per layer, the order recsys_runtime's Generator reads."""

    def __init__(
        self, input_size: int, hidden: Any, output_size: int, output_activation: str | None, **kwargs: Any
    ) -> None:
        require(input_size >= 1, f"input_size must be >= 1, got {input_size}")
        hidden = _check_sizes("hidden", hidden)
        require(output_size >= 1, f"output_size must be >= 1, got {output_size}")
        try:
            keras.activations.get(output_activation)
        except ValueError as error:
            raise ValueError(f"output_activation {output_activation!r} is not a Keras activation") from error
        name = kwargs.setdefault("name", "generator")  # the layers' names start with the model's
        inputs = keras.Input((input_size,))
        x = inputs
        for i, size in enumerate(hidden):
            x = keras.layers.Dense(size, activation="relu", name=f"{name}_hidden{i}")(x)
        outputs = keras.layers.Dense(output_size, activation=output_activation, name=f"{name}_out")(x)
        super().__init__(inputs, outputs, **kwargs)
        self.input_size, self.hidden, self.output_size = int(input_size), hidden, int(output_size)
        self.output_activation = output_activation

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_size": self.input_size,
            "hidden": self.hidden,
            "output_size": self.output_size,
            "output_activation": self.output_activation,
        }


@keras.saving.register_keras_serializable(package="recsys")
class ProjectionCritic(keras.Model):
    """A projection critic (Miyato & Koyama, ICLR 2018): features h of the row, scored as w.h plus the inner
    product of h with an embedding of the condition. The condition enters multiplicatively, so the critic
    cannot ignore it, which a critic fed [row, condition] side by side tends to do when the row is wide.
    Called on [rows, conditions]."""

    def __init__(self, output_size: int, condition_size: int, hidden: Any, **kwargs: Any) -> None:
        require(output_size >= 1, f"output_size must be >= 1, got {output_size}")
        require(condition_size >= 0, f"condition_size must be >= 0 (0: no attributes), got {condition_size}")
        hidden = _check_sizes("hidden", hidden)
        row = keras.Input((output_size,), name="row")
        condition = keras.Input((condition_size,), name="condition")
        h = row
        for i, size in enumerate(hidden):
            h = keras.layers.Dense(size, activation="relu", name=f"critic_hidden{i}")(h)
        unconditional = keras.layers.Dense(1, name="critic_out")(h)
        projection = keras.layers.Dense(hidden[-1], use_bias=False, name="critic_projection")(condition)
        score = unconditional + keras.ops.sum(h * projection, axis=1, keepdims=True)
        kwargs.setdefault("name", "critic")
        super().__init__([row, condition], score, **kwargs)
        self.output_size, self.condition_size, self.hidden = int(output_size), int(condition_size), hidden

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "output_size": self.output_size,
            "condition_size": self.condition_size,
            "hidden": self.hidden,
        }


@keras.saving.register_keras_serializable(package="recsys")
class ConditionalWGAN(keras.Model):
    """A conditional WGAN-GP: a ConditionalGenerator of (noise, condition) and a ProjectionCritic of
    (row, condition), both with `hidden` layers. One training round (`train_round`) is `critic_steps` critic
    updates, each on a fresh batch, minimising fake score - real score + gradient_penalty x (|grad| - 1)^2 at
    points between real and fake rows, then one generator update minimising -fake score + reconstruction_weight
    x the squared distance of the generated row to the real one. Each side has its own Adam (learning_rate,
    beta_1 0.5, beta_2 0.9, as in Gulrajani et al.), its slots made at construction: construct the model in the
    strategy's scope, not on first use inside a replica's step. Called on conditions, it generates one row for
    each."""

    def __init__(
        self,
        noise_size: int,
        condition_size: int,
        output_size: int,
        hidden: Any,
        output_activation: str | None,
        learning_rate: float,
        gradient_penalty: float,
        critic_steps: int,
        reconstruction_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        require(noise_size >= 1, f"noise_size must be >= 1, got {noise_size}")
        require(learning_rate > 0.0, f"learning_rate must be > 0, got {learning_rate}")
        require(gradient_penalty >= 0.0, f"gradient_penalty must be >= 0, got {gradient_penalty}")
        require(critic_steps >= 1, f"critic_steps must be >= 1, got {critic_steps}")
        require(reconstruction_weight >= 0.0, f"reconstruction_weight must be >= 0, got {reconstruction_weight}")
        self.noise_size, self.condition_size, self.output_size = int(noise_size), int(condition_size), int(output_size)
        self.hidden, self.output_activation = [int(v) for v in hidden], output_activation
        self.learning_rate, self.gradient_penalty = float(learning_rate), float(gradient_penalty)
        self.critic_steps, self.reconstruction_weight = int(critic_steps), float(reconstruction_weight)
        # The generator first: each layer's initialiser draws its seed from the seeded global RNG in turn.
        self.generator = ConditionalGenerator(noise_size + condition_size, hidden, output_size, output_activation)
        self.critic = ProjectionCritic(output_size, condition_size, hidden)
        self.generator_optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.9)
        self.critic_optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.9)
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.critic_optimizer.build(self.critic.trainable_variables)

    def call(self, conditions: Any, training: bool = False) -> Any:
        return self.generate(conditions, training=training)

    def generate(self, conditions: Any, training: bool = True) -> Any:
        z = tf.random.normal((tf.shape(conditions)[0], self.noise_size))
        return self.generator(tf.concat([z, conditions], axis=1), training=training)

    def _share(self, loss: Any) -> Any:
        """The replicas' gradients are summed, each of its loss over its share of the batch: the batch mean's."""
        replicas = distributed.replicas()
        return loss * (1.0 / replicas) if replicas > 1 else loss

    def critic_step(self, x: Any, c: Any) -> tuple[Any, Any]:
        """One critic update on real rows x with conditions c: (Wasserstein estimate, gradient penalty)."""
        fake = self.generate(c)
        with tf.GradientTape() as tape:
            real_score = self.critic([x, c], training=True)
            fake_score = self.critic([fake, c], training=True)
            mix = tf.random.uniform((tf.shape(x)[0], 1))
            between = mix * x + (1.0 - mix) * fake
            with tf.GradientTape() as inner:
                inner.watch(between)
                between_score = self.critic([between, c], training=True)
            gradients = inner.gradient(between_score, between)
            penalty = tf.reduce_mean((tf.norm(gradients + 1e-12, axis=1) - 1.0) ** 2)
            distance = tf.reduce_mean(real_score) - tf.reduce_mean(fake_score)
            loss = -distance + self.gradient_penalty * penalty
            scaled = self._share(loss)
        variables = self.critic.trainable_variables
        self.critic_optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return distance, penalty

    def generator_step(self, x: Any, c: Any) -> tuple[Any, Any]:
        """One generator update against real rows x with conditions c: (adversarial loss, reconstruction)."""
        with tf.GradientTape() as tape:
            fake = self.generate(c)
            adversarial = -tf.reduce_mean(self.critic([fake, c], training=True))
            reconstruction = tf.reduce_mean(tf.reduce_sum((fake - x) ** 2, axis=1))
            loss = adversarial + self.reconstruction_weight * reconstruction
            scaled = self._share(loss)
        variables = self.generator.trainable_variables
        self.generator_optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return adversarial, reconstruction

    def train_round(self, batch: Callable[[], tuple[Any, Any]]) -> Any:
        """critic_steps critic updates then one generator update, each on a batch() of (rows, conditions):
        [Wasserstein estimate, adversarial loss, gradient penalty, reconstruction] of the last ones."""
        for _ in range(self.critic_steps):
            distance, penalty = self.critic_step(*batch())
        adversarial, reconstruction = self.generator_step(*batch())
        return tf.stack([distance, adversarial, penalty, reconstruction])

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "noise_size": self.noise_size,
            "condition_size": self.condition_size,
            "output_size": self.output_size,
            "hidden": self.hidden,
            "output_activation": self.output_activation,
            "learning_rate": self.learning_rate,
            "gradient_penalty": self.gradient_penalty,
            "critic_steps": self.critic_steps,
            "reconstruction_weight": self.reconstruction_weight,
        }


# A sparse table whose dense float32 form is at most this large is made dense: a plain gather per batch is
# cheaper than densifying each batch (ml-100k's synthetic stage: 74.9 s against 90.5 s, one run each).
DENSE_TABLE_BYTES = 64 * 2**20


def _row_lookup(matrix: np.ndarray | sp.spmatrix) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function from row indices to those rows, dense float32. A large sparse matrix stays sparse in the graph
    (only its non-zeros) and each batch is densified on its own (batch x width), never the whole table."""
    width = int(matrix.shape[1])
    if not sp.issparse(matrix) or matrix.shape[0] * width * 4 <= DENSE_TABLE_BYTES:
        dense = sp.csr_matrix(matrix).toarray() if sp.issparse(matrix) else matrix
        table = tf.constant(np.asarray(dense, np.float32))
        return lambda rows: tf.gather(table, rows)
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    matrix.sum_duplicates()  # one entry per cell, so the segment sum below puts each value in place
    row_splits = tf.constant(matrix.indptr.astype(np.int64))
    columns = tf.RaggedTensor.from_row_splits(tf.constant(matrix.indices.astype(np.int64)), row_splits)
    values = tf.RaggedTensor.from_row_splits(tf.constant(matrix.data), row_splits)

    def rows_of(rows: tf.Tensor) -> tf.Tensor:
        picked_columns, picked_values = tf.gather(columns, rows), tf.gather(values, rows)
        cells = picked_columns.value_rowids() * width + picked_columns.flat_values  # row-major positions
        count = tf.size(rows, out_type=tf.int64)
        flat = tf.math.unsorted_segment_sum(picked_values.flat_values, cells, count * width)
        return tf.reshape(flat, [rows.shape[0] if rows.shape[0] is not None else -1, width])

    return rows_of


def planned_steps(config: dict[str, Any], output_size: int) -> int:
    """Generator updates to run: `steps`, fewer on wide rows (updates x output_size at most `update_budget`, 0:
    no cap): a critic update's cost grows with the width of the rows, which for users is the catalogue."""
    steps = int(config["steps"])
    if int(config.get("update_budget", 0)) > 0:
        steps = min(steps, int(config["update_budget"]) // output_size)
    return max(1, steps)


def train_conditional_wgan(
    conditions: np.ndarray | sp.spmatrix,
    targets: np.ndarray | sp.spmatrix,
    config: dict[str, Any],
    seed: int,
    output: str,
    reconstruction_weight: float = 0.0,
    row_weights: np.ndarray | None = None,
    progress: TrainingProgress = SILENT,
    task: str = "generator updates",
) -> tuple[Generator, GanCurves]:
    """WGAN-GP on (condition, target) rows: critic_steps critic updates per generator update. Batches draw
    rows uniformly, or in proportion to row_weights. conditions and targets: dense rows, or sparse matrices
    (wide, sparse rows, such as users' interactions with the catalogue or items' bags of title tokens) of
    which only each batch's rows are made dense.

    Under a multi-worker strategy each round runs on every worker (strategy.run) and the optimizers all-reduce
    the gradients: each worker samples its share of the batch from its own slice of the rows, so the workers'
    batches are disjoint and together as large as one process's."""
    keras.utils.set_random_seed(seed)
    noise_size, hidden = int(config["noise"]), list(config["hidden"])
    n, condition_size = conditions.shape
    output_size = targets.shape[1]
    with distributed.scope():
        gan = ConditionalWGAN(
            noise_size,
            condition_size,
            output_size,
            hidden,
            output,
            learning_rate=config["learning_rate"],
            gradient_penalty=config["gradient_penalty"],
            critic_steps=config["critic_steps"],
            reconstruction_weight=reconstruction_weight,
        )
    batch_size = min(int(config["batch_size"]), n)
    replicas = distributed.replicas()

    # Every worker holds all rows and seeds its random ops alike; sampling from its own slice is what makes
    # the workers' batches differ (the whole table and batch in a single process).
    mine = distributed.shard()
    local_targets = targets[mine]
    local_n = local_targets.shape[0]
    local_batch = min(max(1, math.ceil(batch_size / replicas)), local_n)
    target_rows = _row_lookup(local_targets)
    condition_rows = _row_lookup(conditions[mine])

    log_weights = None
    if row_weights is not None:
        log_weights = tf.constant(np.log(np.maximum(row_weights[mine], 1e-12))[None, :].astype(np.float32))

    def batch() -> tuple[tf.Tensor, tf.Tensor]:
        if log_weights is None:
            rows = tf.random.shuffle(tf.range(local_n))[:local_batch]
        else:
            rows = tf.random.categorical(log_weights, local_batch)[0]
        return target_rows(rows), condition_rows(rows)

    def replica_round() -> tf.Tensor:
        return gan.train_round(batch)

    @tf.function
    def train_round() -> tf.Tensor:
        """critic_steps critic updates, then one generator update: one graph call, not six."""
        if replicas == 1:
            return replica_round()
        per_replica = distributed.strategy().run(replica_round)
        return distributed.strategy().reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    curves = GanCurves()
    total = planned_steps(config, output_size)
    report = ThrottledProgress(progress, task, total)
    per_point = min(total, max(1, math.ceil(n / batch_size)))  # one curve point per epoch (or per run, if shorter)
    done = 0
    while done < total:
        rounds = min(per_point, total - done)
        sums = np.zeros(4)
        for _ in range(rounds):
            sums += train_round().numpy()
            done += 1
            report(done)
        curves.critic.append(float(sums[0] / rounds))
        curves.generator.append(float(sums[1] / rounds))
        curves.gradient_penalty.append(float(sums[2] / rounds))
        curves.reconstruction.append(float(sums[3] / rounds))
    weights = gan.generator.get_weights()
    return Generator(weights[0::2], weights[1::2], noise_size, output), curves
