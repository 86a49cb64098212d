"""Next-item rankers over time-ordered histories: GRU4Rec (Hidasi et al., ICLR 2016) and Caser (Tang & Wang,
WSDM 2018). Keras 3 for training with a full softmax over the catalogue or, for large catalogues, a sampled
softmax with logQ correction (only the loss differs: the layers are the same); the trained weights are exported as
.npy arrays and run in numpy (recsys_runtime.models.sequential; Triton serves the same computation as an ONNX
graph, trainer/ranker_onnx.py).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys_runtime.models.sequential import Caser, GRU4Rec
from trainer import distributed
from trainer.models.sparse_updates import LazyAdam, RowEmbedding
from trainer.progress import SILENT, TrainingProgress, keras_batches, step_plan

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise in a CLI; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # after the log level, which TensorFlow reads when it loads
import tensorflow as tf

# ---------------------------------------------------------------- training data


def gru_chunks(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """Each user's sequence cut into chunks of length+1 (inputs = chunk[:-1], targets = chunk[1:]), left-padded."""
    rows = []
    for sequence in sequences:
        for end in range(len(sequence), 1, -length):
            chunk = sequence[max(0, end - length - 1) : end]
            rows.append(np.pad(chunk, (length + 1 - len(chunk), 0)))
    return np.asarray(rows, dtype=np.int32).reshape(-1, length + 1)


def caser_windows(sequences: list[np.ndarray], users: list[int], length: int) -> tuple[np.ndarray, ...]:
    """(last `length` items before each position, user, next item) for every position after the first."""
    windows, owners, targets = [], [], []
    for sequence, user in zip(sequences, users, strict=True):
        padded = np.pad(sequence, (length, 0))
        for position in range(1, len(sequence)):
            windows.append(padded[position : position + length])
            owners.append(user)
            targets.append(sequence[position])
    return (
        np.asarray(windows, np.int32).reshape(-1, length),
        np.asarray(owners, np.int32),
        np.asarray(targets, np.int32),
    )


# ---------------------------------------------------------------- the softmax


@dataclass(frozen=True)
class SoftmaxChoice:
    """How a sequence model's next-item loss treats the catalogue: "full" (every item's logit) or "sampled"
    (the true item against `negatives` items drawn by popularity, logQ-corrected)."""

    kind: str
    negatives: int
    min_items: int  # the catalogue size from which the sampled softmax is used

    def describe(self) -> dict[str, Any]:
        return {"softmax": self.kind, "negatives": self.negatives, "sampled_softmax_min_items": self.min_items}


FULL_SOFTMAX = SoftmaxChoice("full", 0, 0)


def choose_softmax(n_items: int, min_items: int, negatives: int) -> SoftmaxChoice:
    """Full softmax below `min_items` items (its logits are [batch, n_items] per step), sampled from there on.
    At most every item but the padding can be a negative."""
    if n_items < max(min_items, 2):
        return SoftmaxChoice("full", 0, min_items)
    return SoftmaxChoice("sampled", max(1, min(negatives, n_items - 1)), min_items)


def item_unigrams(sequences: list[np.ndarray], n_items: int) -> list[float]:
    """Each item's interaction count in the training sequences: the sampling distribution of the negatives.
    Padding (0) gets 0, so it is never drawn; items never seen get the weight of one interaction so that, as
    under the full softmax, their logits are still pushed down."""
    counts = np.bincount(np.concatenate([*sequences, np.zeros(0, np.int64)]).astype(np.int64), minlength=n_items)
    unigrams = np.maximum(counts[:n_items], 1).astype(np.float64)
    unigrams[0] = 0.0
    return [float(v) for v in unigrams]


@keras.saving.register_keras_serializable(package="recsys")
class SampledSoftmaxTrainer(keras.Model):
    """Trains `model`'s own layers (shared variables) with a sampled softmax.

    It runs `model` up to the input of its "output" Dense layer and scores only the true next item and
    `negatives` items drawn (without replacement, shared by the batch) in proportion to `unigrams`, with
    `tf.nn.sampled_softmax_loss`: each sampled logit minus the log of its expected count (the logQ correction
    of Yi et al., RecSys 2019, which keeps popular items from being over-penalised), and a negative that
    equals the row's target removed. Positions whose target is padding (0) carry no loss. `model` keeps
    computing full logits, so export and serving read the same weights as after full-softmax training.

    Called, it returns the states the output layer reads ([..., units]); `ranker` is the full-logits model."""

    def __init__(self, model: Any, unigrams: Sequence[float], negatives: int, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model, got {type(model).__name__}")
        output = next((layer for layer in model.layers if layer.name == "output"), None)
        if not isinstance(output, keras.layers.Dense):
            raise ValueError("model must end in a Dense layer named 'output' (the logits over the catalogue)")
        weights = np.asarray(unigrams, np.float64)
        if weights.ndim != 1 or len(weights) < 2 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("unigrams must be one finite weight >= 0 per item, at least 2 items")
        n_items = len(weights)
        if output.units != n_items:
            raise ValueError(f"unigrams has {n_items} items but the model's output layer has {output.units}")
        drawable = int(np.count_nonzero(weights))
        if not 1 <= negatives <= drawable:
            raise ValueError(f"negatives must be in [1, {drawable}] (items with a weight > 0), got {negatives}")
        self.unigrams, self.negatives, self.seed = [float(v) for v in weights], int(negatives), int(seed)
        self.n_items = n_items
        # The ranker last: its variables are the same ones, so the trainable variables stay encoder, then output.
        self.encoder = keras.Model(model.inputs, output.input)
        self.output_layer = output
        self.ranker = model

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.encoder(inputs, training=training)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        states = tf.reshape(y_pred, [-1, y_pred.shape[-1]])
        targets = tf.reshape(tf.cast(y, tf.int64), [-1])
        keep = targets > 0
        states, targets = tf.boolean_mask(states, keep), tf.boolean_mask(targets, keep)[:, None]
        sampled = tf.random.fixed_unigram_candidate_sampler(
            targets, 1, self.negatives, True, self.n_items, unigrams=self.unigrams, seed=self.seed
        )
        losses = tf.nn.sampled_softmax_loss(
            weights=tf.transpose(tf.convert_to_tensor(self.output_layer.kernel)),
            biases=tf.convert_to_tensor(self.output_layer.bias),
            labels=targets,
            inputs=states,
            num_sampled=self.negatives,
            num_classes=self.n_items,
            sampled_values=sampled,
            remove_accidental_hits=True,
        )
        mean = tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), losses.dtype))
        # Replicas' gradients are summed (tf.distribute): each contributes its share, as Keras' losses do.
        return mean / tf.distribute.get_strategy().num_replicas_in_sync

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.ranker),
            "unigrams": self.unigrams,
            "negatives": self.negatives,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SampledSoftmaxTrainer:
        # Deserialising consumes parts of the dict it is given: a copy keeps the caller's config whole.
        model = keras.saving.deserialize_keras_object(copy.deepcopy(config["model"]), custom_objects=custom_objects)
        return cls(**{**config, "model": model})


def adam(learning_rate: float, sparse_update_min_rows: int = 0) -> Any:
    """Adam; with sparse_update_min_rows > 0, embedding tables of at least that many rows are updated on the
    rows each batch looks up only (LazyAdam)."""
    if sparse_update_min_rows > 0:
        return LazyAdam(learning_rate, min_rows=sparse_update_min_rows)
    return keras.optimizers.Adam(learning_rate)


def _fit(
    model: Any,
    x: Any,
    y: np.ndarray,
    unigrams: list[float],
    softmax: SoftmaxChoice,
    config: dict[str, Any],
    seed: int,
    progress: TrainingProgress,
    task: str,
    sparse_update_min_rows: int,
) -> list[float]:
    """Trains `model` (built, and compiled for the full softmax) with the chosen softmax for `epochs`, or fewer
    batches when config's `max_steps` (0: no cap) is smaller; the loss per epoch."""
    trainer = model
    if softmax.kind == "sampled":
        with distributed.scope():
            trainer = SampledSoftmaxTrainer(model, unigrams, softmax.negatives, seed)
            trainer.compile(optimizer=adam(config["learning_rate"], sparse_update_min_rows))
    full_epoch = math.ceil(len(y) / config["batch_size"])
    epochs, steps = step_plan(config["epochs"], full_epoch, int(config.get("max_steps", 0)))
    history = trainer.fit(
        x,
        y,
        batch_size=config["batch_size"],
        epochs=epochs,
        steps_per_epoch=steps if steps < full_epoch else None,
        shuffle=True,
        verbose=0,
        callbacks=[keras_batches(progress, task, epochs, steps)],
    )
    return [float(v) for v in history.history["loss"]]


# ---------------------------------------------------------------- GRU4Rec


def build_gru4rec(n_items: int, config: dict[str, Any], sparse_update_min_rows: int = 0) -> Any:
    """Embedding (0 is padding, masked) -> GRU over the sequence -> logits over the catalogue at every step."""
    inputs = keras.Input((config["max_length"],), dtype="int32")
    embedded = RowEmbedding(n_items, config["embedding"], mask_zero=True, name="items")(inputs)
    embedded = keras.layers.Dropout(config["dropout"])(embedded)
    states = keras.layers.GRU(config["units"], return_sequences=True, name="gru")(embedded)
    logits = keras.layers.Dense(n_items, name="output")(states)
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=adam(config["learning_rate"], sparse_update_min_rows),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    return model


def train_gru4rec(
    sequences: list[np.ndarray],
    n_items: int,
    config: dict[str, Any],
    seed: int,
    softmax: SoftmaxChoice = FULL_SOFTMAX,
    progress: TrainingProgress = SILENT,
    sparse_update_min_rows: int = 0,
) -> tuple[GRU4Rec, list[float]]:
    """Next-item prediction at every position of each user's sequence (softmax cross-entropy, full or sampled)."""
    keras.utils.set_random_seed(seed)
    chunks = gru_chunks(sequences, config["max_length"])
    with distributed.scope():
        model = build_gru4rec(n_items, config, sparse_update_min_rows)
    unigrams = item_unigrams(sequences, n_items)
    x, y = chunks[:, :-1], chunks[:, 1:]
    losses = _fit(model, x, y, unigrams, softmax, config, seed, progress, "GRU4Rec batches", sparse_update_min_rows)
    return GRU4Rec.from_model(model), losses


# ---------------------------------------------------------------- Caser


def build_caser(n_items: int, n_users: int, config: dict[str, Any], sparse_update_min_rows: int = 0) -> Any:
    """The last L item embeddings as an L x d image: vertical convolutions (weighted sums of the L rows) and
    horizontal ones of every height 1..L (max-pooled over time), a dense layer, the user embedding beside
    it, then logits over the catalogue.

    Caser's convolutions over a one-channel L x d image are written as the same arithmetic on the [L, d]
    sequence: a horizontal filter of height h spans all d columns, so it is a Conv1D of width h with d input
    channels, and a vertical filter is a Dense over the L positions of each column. Both train 2-3x faster
    on CPU than Conv2D with a single input channel; Caser.from_model stores the kernels in the image layout."""
    length, dim = config["length"], config["embedding"]
    items_in = keras.Input((length,), dtype="int32")
    user_in = keras.Input((), dtype="int32")
    embedded = RowEmbedding(n_items, dim, name="items")(items_in)
    columns = keras.layers.Permute((2, 1))(embedded)  # [d, L]: each column's L values
    vertical = keras.layers.Flatten()(keras.layers.Dense(config["vertical_filters"], name="vertical")(columns))
    horizontal = [
        keras.layers.GlobalMaxPooling1D()(
            keras.layers.Conv1D(config["horizontal_filters"], height, activation="relu", name=f"horizontal{height}")(
                embedded
            )
        )
        for height in range(1, length + 1)
    ]
    features = keras.layers.Dropout(config["dropout"])(keras.layers.Concatenate()([vertical, *horizontal]))
    z = keras.layers.Dense(dim, activation="relu", name="hidden")(features)
    user = RowEmbedding(n_users, dim, name="users")(user_in)
    logits = keras.layers.Dense(n_items, name="output")(keras.layers.Concatenate()([z, user]))
    model = keras.Model([items_in, user_in], logits)
    model.compile(
        optimizer=adam(config["learning_rate"], sparse_update_min_rows),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def train_caser(
    sequences: list[np.ndarray],
    users: list[int],
    n_items: int,
    n_users: int,
    config: dict[str, Any],
    seed: int,
    softmax: SoftmaxChoice = FULL_SOFTMAX,
    progress: TrainingProgress = SILENT,
    sparse_update_min_rows: int = 0,
) -> tuple[Caser, list[float]]:
    """Next-item prediction from every window of L items (softmax cross-entropy, full or sampled)."""
    keras.utils.set_random_seed(seed)
    windows, owners, targets = caser_windows(sequences, users, config["length"])
    with distributed.scope():
        model = build_caser(n_items, n_users, config, sparse_update_min_rows)
    unigrams = item_unigrams(sequences, n_items)
    x = [windows, owners]
    losses = _fit(model, x, targets, unigrams, softmax, config, seed, progress, "Caser batches", sparse_update_min_rows)
    return Caser.from_model(model, config["length"]), losses
