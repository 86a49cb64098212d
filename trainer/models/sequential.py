"""Next-item rankers over time-ordered histories: GRU4Rec (Hidasi et al., ICLR 2016) and Caser (Tang & Wang,
WSDM 2018). Keras 3 for training with a full softmax over the catalogue or, for large catalogues, a sampled
softmax with logQ correction (only the loss differs: the layers are the same); the trained weights are exported as
.npy arrays and run in numpy (validation, the blend's fit, `recsys evaluate`; Triton serves the same
computation as an ONNX graph, trainer/ranker_onnx.py), where the sequence is encoded once per request
and the candidates are scored against that state: cost grows with the candidates only by a dot product.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer import distributed
from trainer.progress import SILENT, TrainingProgress, keras_batches, step_plan

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


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


def sampled_softmax_trainer(model: Any, unigrams: list[float], negatives: int, seed: int) -> Any:
    """A Keras model that trains `model`'s own layers (shared variables) with a sampled softmax.

    It runs `model` up to the input of its "output" Dense layer and scores only the true next item and
    `negatives` items drawn (without replacement, shared by the batch) in proportion to `unigrams`, with
    `tf.nn.sampled_softmax_loss`: each sampled logit minus the log of its expected count (the logQ correction
    of Yi et al., RecSys 2019, which keeps popular items from being over-penalised), and a negative that
    equals the row's target removed. Positions whose target is padding (0) carry no loss. `model` keeps
    computing full logits, so export and serving read the same weights as after full-softmax training."""
    import keras
    import tensorflow as tf

    output = model.get_layer("output")
    n_items = len(unigrams)

    class SampledSoftmaxTrainer(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = keras.Model(model.inputs, output.input)
            self.output_layer = output

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
                targets, 1, negatives, True, n_items, unigrams=unigrams, seed=seed
            )
            losses = tf.nn.sampled_softmax_loss(
                weights=tf.transpose(tf.convert_to_tensor(self.output_layer.kernel)),
                biases=tf.convert_to_tensor(self.output_layer.bias),
                labels=targets,
                inputs=states,
                num_sampled=negatives,
                num_classes=n_items,
                sampled_values=sampled,
                remove_accidental_hits=True,
            )
            mean = tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), losses.dtype))
            # Replicas' gradients are summed (tf.distribute): each contributes its share, as Keras' losses do.
            return mean / tf.distribute.get_strategy().num_replicas_in_sync

    return SampledSoftmaxTrainer()


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
) -> list[float]:
    """Trains `model` (built, and compiled for the full softmax) with the chosen softmax for `epochs`, or fewer
    batches when config's `max_steps` (0: no cap) is smaller; the loss per epoch."""
    trainer = model
    if softmax.kind == "sampled":
        import keras

        with distributed.scope():
            trainer = sampled_softmax_trainer(model, unigrams, softmax.negatives, seed)
            trainer.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]))
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


def build_gru4rec(n_items: int, config: dict[str, Any]) -> Any:
    """Embedding (0 is padding, masked) -> GRU over the sequence -> logits over the catalogue at every step."""
    import keras

    inputs = keras.Input((config["max_length"],), dtype="int32")
    embedded = keras.layers.Embedding(n_items, config["embedding"], mask_zero=True, name="items")(inputs)
    embedded = keras.layers.Dropout(config["dropout"])(embedded)
    states = keras.layers.GRU(config["units"], return_sequences=True, name="gru")(embedded)
    logits = keras.layers.Dense(n_items, name="output")(states)
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(config["learning_rate"]),
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
) -> tuple[GRU4Rec, list[float]]:
    """Next-item prediction at every position of each user's sequence (softmax cross-entropy, full or sampled)."""
    import keras

    keras.utils.set_random_seed(seed)
    chunks = gru_chunks(sequences, config["max_length"])
    with distributed.scope():
        model = build_gru4rec(n_items, config)
    unigrams = item_unigrams(sequences, n_items)
    losses = _fit(model, chunks[:, :-1], chunks[:, 1:], unigrams, softmax, config, seed, progress, "GRU4Rec batches")
    return GRU4Rec.from_model(model), losses


@dataclass
class GRU4Rec:
    embedding: np.ndarray  # [n_items, e]
    kernel: np.ndarray  # [e, 3u]  (z, r, h)
    recurrent: np.ndarray  # [u, 3u]
    bias: np.ndarray  # [2, 3u]  (input, recurrent): Keras' reset_after=True layout
    out_kernel: np.ndarray  # [u, n_items]
    out_bias: np.ndarray  # [n_items]
    name: str = "gru4rec"

    @classmethod
    def from_model(cls, model: Any) -> GRU4Rec:
        embedding = model.get_layer("items").get_weights()[0]
        kernel, recurrent, bias = model.get_layer("gru").get_weights()
        out_kernel, out_bias = model.get_layer("output").get_weights()
        return cls(embedding, kernel, recurrent, bias, out_kernel, out_bias)

    def state(self, history: np.ndarray, user: int = 0) -> np.ndarray:
        units = self.recurrent.shape[0]
        h = np.zeros(units, dtype=np.float32)
        for item in history[history > 0]:
            x = self.embedding[item] @ self.kernel + self.bias[0]
            r_h = h @ self.recurrent + self.bias[1]
            z = _sigmoid(x[:units] + r_h[:units])
            r = _sigmoid(x[units : 2 * units] + r_h[units : 2 * units])
            candidate = np.tanh(x[2 * units :] + r * r_h[2 * units :])
            h = z * h + (1.0 - z) * candidate
        return h.astype(np.float32)

    def score(self, state: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return (state @ self.out_kernel[:, candidates] + self.out_bias[candidates]).astype(np.float32)

    def save(self, directory: Path) -> None:
        _save(
            directory,
            self.name,
            {k: getattr(self, k) for k in ("embedding", "kernel", "recurrent", "bias", "out_kernel", "out_bias")},
        )

    @classmethod
    def load(cls, directory: Path) -> GRU4Rec:
        arrays = _load(directory, "gru4rec")
        return cls(
            arrays["embedding"],
            arrays["kernel"],
            arrays["recurrent"],
            arrays["bias"],
            arrays["out_kernel"],
            arrays["out_bias"],
        )


# ---------------------------------------------------------------- Caser


def build_caser(n_items: int, n_users: int, config: dict[str, Any]) -> Any:
    """The last L item embeddings as an L x d image: vertical convolutions (weighted sums of the L rows) and
    horizontal ones of every height 1..L (max-pooled over time), a dense layer, the user embedding beside
    it, then logits over the catalogue.

    Caser's convolutions over a one-channel L x d image are written as the same arithmetic on the [L, d]
    sequence: a horizontal filter of height h spans all d columns, so it is a Conv1D of width h with d input
    channels, and a vertical filter is a Dense over the L positions of each column. Both train 2-3x faster
    on CPU than Conv2D with a single input channel; Caser.from_model stores the kernels in the image layout."""
    import keras

    length, dim = config["length"], config["embedding"]
    items_in = keras.Input((length,), dtype="int32")
    user_in = keras.Input((), dtype="int32")
    embedded = keras.layers.Embedding(n_items, dim, name="items")(items_in)
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
    user = keras.layers.Embedding(n_users, dim, name="users")(user_in)
    logits = keras.layers.Dense(n_items, name="output")(keras.layers.Concatenate()([z, user]))
    model = keras.Model([items_in, user_in], logits)
    model.compile(
        optimizer=keras.optimizers.Adam(config["learning_rate"]),
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
) -> tuple[Caser, list[float]]:
    """Next-item prediction from every window of L items (softmax cross-entropy, full or sampled)."""
    import keras

    keras.utils.set_random_seed(seed)
    windows, owners, targets = caser_windows(sequences, users, config["length"])
    with distributed.scope():
        model = build_caser(n_items, n_users, config)
    unigrams = item_unigrams(sequences, n_items)
    losses = _fit(model, [windows, owners], targets, unigrams, softmax, config, seed, progress, "Caser batches")
    return Caser.from_model(model, config["length"]), losses


@dataclass
class Caser:
    weights: dict[str, np.ndarray]
    length: int
    name: str = "caser"

    @classmethod
    def from_model(cls, model: Any, length: int) -> Caser:
        weights = {
            "embedding": model.get_layer("items").get_weights()[0],
            # [L, n_v] and [h, d, n_h] as the image convolutions' [L, 1, 1, n_v] and [h, d, 1, n_h].
            "vertical_kernel": model.get_layer("vertical").get_weights()[0][:, None, None, :],
            "vertical_bias": model.get_layer("vertical").get_weights()[1],
            "hidden_kernel": model.get_layer("hidden").get_weights()[0],
            "hidden_bias": model.get_layer("hidden").get_weights()[1],
            "users": model.get_layer("users").get_weights()[0],
            "out_kernel": model.get_layer("output").get_weights()[0],
            "out_bias": model.get_layer("output").get_weights()[1],
        }
        for height in range(1, length + 1):
            kernel, bias = model.get_layer(f"horizontal{height}").get_weights()
            weights[f"horizontal{height}_kernel"], weights[f"horizontal{height}_bias"] = kernel[:, :, None, :], bias
        return cls(weights, length)

    def state(self, history: np.ndarray, user: int = 0) -> np.ndarray:
        w = self.weights
        recent = history[history > 0][-self.length :]
        window = np.pad(recent, (self.length - len(recent), 0))
        e = w["embedding"][window]  # [L, d]
        vertical = np.einsum("ld,lf->df", e, w["vertical_kernel"][:, 0, 0, :]) + w["vertical_bias"]  # [d, n_v]
        parts = [vertical.reshape(-1)]
        for height in range(1, self.length + 1):
            kernel = w[f"horizontal{height}_kernel"][:, :, 0, :]  # [h, d, n_h]
            steps = np.stack(
                [np.einsum("hd,hdf->f", e[t : t + height], kernel) for t in range(self.length - height + 1)]
            )
            parts.append(np.maximum(steps + w[f"horizontal{height}_bias"], 0.0).max(axis=0))
        z = np.maximum(np.concatenate(parts) @ w["hidden_kernel"] + w["hidden_bias"], 0.0)
        user_vector = w["users"][user if 0 <= user < len(w["users"]) else 0]
        return np.concatenate([z, user_vector]).astype(np.float32)

    def score(self, state: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        w = self.weights
        return (state @ w["out_kernel"][:, candidates] + w["out_bias"][candidates]).astype(np.float32)

    def save(self, directory: Path) -> None:
        _save(directory, self.name, self.weights, {"length": self.length})

    @classmethod
    def load(cls, directory: Path) -> Caser:
        meta = json.loads((directory / "caser.json").read_text())
        return cls(_load(directory, "caser"), int(meta["length"]))


def _save(directory: Path, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        np.save(directory / f"{name}.{key}.npy", np.asarray(array, np.float32), allow_pickle=False)
    (directory / f"{name}.json").write_text(json.dumps({**(meta or {}), "arrays": sorted(arrays)}))


def _load(directory: Path, name: str) -> dict[str, np.ndarray]:
    meta = json.loads((directory / f"{name}.json").read_text())
    return {key: np.load(directory / f"{name}.{key}.npy", allow_pickle=False) for key in meta["arrays"]}


def softmax_over(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """A probability over the candidates (what the blend combines); candidates outside the mask (padding,
    unknown items) get 0."""
    if mask is not None and not mask.all():
        out = np.zeros_like(scores)
        out[mask] = softmax_over(scores[mask])
        return out
    shifted = np.exp(scores - scores.max()) if len(scores) else scores
    total = float(shifted.sum())
    return shifted / total if total > 0 and math.isfinite(total) else np.zeros_like(scores)
