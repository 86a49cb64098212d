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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_runtime.models.generator import Generator
from trainer import distributed
from trainer.progress import SILENT, Throttled, TrainingProgress

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


def _mlp(sizes: list[int], output: str | None, name: str) -> Any:
    import keras

    layers = [keras.Input((sizes[0],))]
    for i, size in enumerate(sizes[1:-1]):
        layers.append(keras.layers.Dense(size, activation="relu", name=f"{name}_hidden{i}"))
    layers.append(keras.layers.Dense(sizes[-1], activation=output, name=f"{name}_out"))
    return keras.Sequential(layers, name=name)


def _projection_critic(output_size: int, condition_size: int, hidden: list[int]) -> Any:
    """A projection critic (Miyato & Koyama, ICLR 2018): features h of the row, scored as w.h plus the inner
    product of h with an embedding of the condition. The condition enters multiplicatively, so the critic
    cannot ignore it, which a critic fed [row, condition] side by side tends to do when the row is wide."""
    import keras

    row = keras.Input((output_size,), name="row")
    condition = keras.Input((condition_size,), name="condition")
    h = row
    for i, size in enumerate(hidden):
        h = keras.layers.Dense(size, activation="relu", name=f"critic_hidden{i}")(h)
    unconditional = keras.layers.Dense(1, name="critic_out")(h)
    projection = keras.layers.Dense(hidden[-1], use_bias=False, name="critic_projection")(condition)
    score = unconditional + keras.ops.sum(h * projection, axis=1, keepdims=True)
    return keras.Model([row, condition], score, name="critic")


def _sparse_rows(matrix: sp.csr_matrix, output_size: int) -> Any:
    """A function from row indices to those rows of a CSR matrix, dense: the graph holds only the non-zeros, and
    a batch is densified on its own (batch x output_size), never the whole table."""
    import tensorflow as tf

    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()  # one entry per cell, so the segment sum below puts each value in place
    row_splits = tf.constant(matrix.indptr.astype(np.int64))
    columns = tf.RaggedTensor.from_row_splits(tf.constant(matrix.indices.astype(np.int64)), row_splits)
    values = tf.RaggedTensor.from_row_splits(tf.constant(matrix.data.astype(np.float32)), row_splits)

    def rows_of(rows: tf.Tensor) -> tf.Tensor:
        picked_columns, picked_values = tf.gather(columns, rows), tf.gather(values, rows)
        cells = picked_columns.value_rowids() * output_size + picked_columns.flat_values  # row-major positions
        count = tf.size(rows, out_type=tf.int64)
        flat = tf.math.unsorted_segment_sum(picked_values.flat_values, cells, count * output_size)
        return tf.reshape(flat, [rows.shape[0] if rows.shape[0] is not None else -1, output_size])

    return rows_of


def planned_steps(config: dict[str, Any], output_size: int) -> int:
    """Generator updates to run: `steps`, fewer on wide rows (updates x output_size at most `update_budget`, 0:
    no cap): a critic update's cost grows with the width of the rows, which for users is the catalogue."""
    steps = int(config["steps"])
    if int(config.get("update_budget", 0)) > 0:
        steps = min(steps, int(config["update_budget"]) // output_size)
    return max(1, steps)


def train_conditional_wgan(
    conditions: np.ndarray,
    targets: np.ndarray | sp.csr_matrix,
    config: dict[str, Any],
    seed: int,
    output: str,
    reconstruction_weight: float = 0.0,
    row_weights: np.ndarray | None = None,
    progress: TrainingProgress = SILENT,
    task: str = "generator updates",
) -> tuple[Generator, GanCurves]:
    """WGAN-GP on (condition, target) rows: critic_steps critic updates per generator update. Batches draw
    rows uniformly, or in proportion to row_weights. targets: dense rows, or a CSR matrix (wide, sparse rows,
    such as users' interactions with the catalogue) of which only each batch's rows are made dense.

    Under a multi-worker strategy each round runs on every worker (strategy.run) and the optimizers all-reduce
    the gradients: each worker samples its share of the batch from its own slice of the rows, so the workers'
    batches are disjoint and together as large as one process's."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    noise_size, hidden = int(config["noise"]), list(config["hidden"])
    n, condition_size = conditions.shape
    output_size = targets.shape[1]
    with distributed.scope():
        generator = _mlp([noise_size + condition_size, *hidden, output_size], output, "generator")
        critic = _projection_critic(output_size, condition_size, hidden)
        g_optimizer = keras.optimizers.Adam(config["learning_rate"], beta_1=0.5, beta_2=0.9)
        c_optimizer = keras.optimizers.Adam(config["learning_rate"], beta_1=0.5, beta_2=0.9)
        # Slots made here, in the strategy's scope, not on first use inside a replica's step.
        g_optimizer.build(generator.trainable_variables)
        c_optimizer.build(critic.trainable_variables)
    gp_weight = float(config["gradient_penalty"])
    batch_size = min(int(config["batch_size"]), n)
    replicas = distributed.replicas()
    # The summed gradients of the replicas' losses, each over its share of the batch, are the batch mean's.
    share = 1.0 / replicas

    def generate(c: tf.Tensor) -> tf.Tensor:
        z = tf.random.normal((tf.shape(c)[0], noise_size))
        return generator(tf.concat([z, c], axis=1), training=True)

    def critic_step(x: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        fake = generate(c)
        with tf.GradientTape() as tape:
            real_score = critic([x, c], training=True)
            fake_score = critic([fake, c], training=True)
            mix = tf.random.uniform((tf.shape(x)[0], 1))
            between = mix * x + (1.0 - mix) * fake
            with tf.GradientTape() as inner:
                inner.watch(between)
                between_score = critic([between, c], training=True)
            gradients = inner.gradient(between_score, between)
            penalty = tf.reduce_mean((tf.norm(gradients + 1e-12, axis=1) - 1.0) ** 2)
            distance = tf.reduce_mean(real_score) - tf.reduce_mean(fake_score)
            loss = -distance + gp_weight * penalty
            scaled = loss * share if replicas > 1 else loss
        c_optimizer.apply_gradients(
            zip(tape.gradient(scaled, critic.trainable_variables), critic.trainable_variables, strict=True)
        )
        return distance, penalty

    def generator_step(x: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            fake = generate(c)
            adversarial = -tf.reduce_mean(critic([fake, c], training=True))
            reconstruction = tf.reduce_mean(tf.reduce_sum((fake - x) ** 2, axis=1))
            loss = adversarial + reconstruction_weight * reconstruction
            scaled = loss * share if replicas > 1 else loss
        g_optimizer.apply_gradients(
            zip(tape.gradient(scaled, generator.trainable_variables), generator.trainable_variables, strict=True)
        )
        return adversarial, reconstruction

    # Every worker holds all rows and seeds its random ops alike; sampling from its own slice is what makes
    # the workers' batches differ (the whole table and batch in a single process).
    mine = distributed.shard()
    local_targets = targets[mine]
    local_n = local_targets.shape[0]
    local_batch = min(max(1, math.ceil(batch_size / replicas)), local_n)
    if sp.issparse(local_targets):
        target_rows = _sparse_rows(local_targets, output_size)
    else:
        x_all = tf.constant(local_targets.astype(np.float32))

        def target_rows(rows: tf.Tensor) -> tf.Tensor:
            return tf.gather(x_all, rows)

    c_all = tf.constant(conditions[mine].astype(np.float32))
    critic_steps = int(config["critic_steps"])

    log_weights = None
    if row_weights is not None:
        log_weights = tf.constant(np.log(np.maximum(row_weights[mine], 1e-12))[None, :].astype(np.float32))

    def batch() -> tuple[tf.Tensor, tf.Tensor]:
        if log_weights is None:
            rows = tf.random.shuffle(tf.range(local_n))[:local_batch]
        else:
            rows = tf.random.categorical(log_weights, local_batch)[0]
        return target_rows(rows), tf.gather(c_all, rows)

    def replica_round() -> tf.Tensor:
        for _ in range(critic_steps):
            distance, penalty = critic_step(*batch())
        adversarial, reconstruction = generator_step(*batch())
        return tf.stack([distance, adversarial, penalty, reconstruction])

    @tf.function
    def train_round() -> tf.Tensor:
        """critic_steps critic updates, then one generator update: one graph call, not six."""
        if replicas == 1:
            return replica_round()
        per_replica = distributed.strategy().run(replica_round)
        return distributed.strategy().reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    curves = GanCurves()
    total = planned_steps(config, output_size)
    report = Throttled(progress, task, total)
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
    weights = generator.get_weights()
    return Generator(weights[0::2], weights[1::2], noise_size, output), curves
