"""An autoencoder over item attributes whose code is a content embedding, and the transfer it enables: an item
with attributes but no interactions (a cold item) borrows the candidate model's score of its nearest warm
items in that content space.

Keras 3 for training; the codes and the cold items' neighbour lists are plain .npy arrays at serving time
(recsys_runtime.models.cold_items.ColdItemTransfer).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_runtime.attributes import AttributeEncoder
from recsys_runtime.models.neighbours import TopNeighbours
from trainer import distributed
from trainer.models.batches import SparseRowBatches

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise in a CLI; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # after the log level, which TensorFlow reads when it loads

CODES_FILE = "item_codes.npy"
# Items encoded per dense block after training.
PREDICT_ROWS = 4096


def item_features(encoder: AttributeEncoder, items: pd.DataFrame | None, item_ids: pd.Index) -> sp.csr_matrix:
    """One sparse row per item index (row 0, the OOV bucket, is empty), from the fitted workflow's encoders."""
    return encoder.sparse_table(items, item_ids)


@keras.saving.register_keras_serializable(package="recsys")
class ItemAttributeAutoencoder(keras.Model):
    """features -> relu Dense(hidden) -> Dense(code), the layer named "code" -> relu Dense(hidden) -> Dense(features):
    trained to reconstruct an item's attribute row (MSE), its code is the item's content embedding."""

    def __init__(self, features: int, hidden: int, code: int, **kwargs: Any) -> None:
        for argument, value in (("features", features), ("hidden", hidden), ("code", code)):
            if value < 1:
                raise ValueError(f"{argument} must be >= 1, got {value}")
        inputs = keras.Input((features,))
        hidden_in = keras.layers.Dense(hidden, activation="relu")(inputs)
        code_out = keras.layers.Dense(code, name="code")(hidden_in)
        hidden_out = keras.layers.Dense(hidden, activation="relu")(code_out)
        outputs = keras.layers.Dense(features)(hidden_out)
        super().__init__(inputs, outputs, **kwargs)
        self.features, self.hidden, self.code = int(features), int(hidden), int(code)

    def encoder(self) -> keras.Model:
        """The model from an attribute row to its code (sharing this model's layers)."""
        return keras.Model(self.input, self.get_layer("code").output)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "features": self.features, "hidden": self.hidden, "code": self.code}


def train_item_codes(features: sp.spmatrix, config: dict[str, Any], seed: int) -> tuple[np.ndarray, list[float]]:
    """Fit the autoencoder (features -> hidden -> code -> hidden -> features, MSE) on batches made dense one
    at a time; return every item's code and the loss per epoch."""
    keras.utils.set_random_seed(seed)
    with distributed.scope():
        model = ItemAttributeAutoencoder(features.shape[1], config["hidden"], config["code"])
        model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]), loss="mse")
    batches = SparseRowBatches(features, config["batch_size"], seed, reconstruct=True)
    history = model.fit(batches, epochs=config["epochs"], verbose=0)
    encoder = model.encoder()
    blocks = range(0, features.shape[0], PREDICT_ROWS)
    codes = np.concatenate(
        [encoder.predict(features[start : start + PREDICT_ROWS].toarray(), verbose=0) for start in blocks]
    ).astype(np.float32)
    codes[0] = 0.0
    return codes, [float(v) for v in history.history["loss"]]


def cold_neighbours(codes: np.ndarray, warm: np.ndarray, neighbours: int) -> TopNeighbours:
    """For each cold item (not warm, not index 0), its most content-similar warm items (cosine, positive only)."""
    norms = np.linalg.norm(codes, axis=1, keepdims=True)
    unit = codes / np.where(norms > 0, norms, 1.0)
    warm_indices = np.flatnonzero(warm)
    cold_indices = np.flatnonzero(~warm)
    cold_indices = cold_indices[cold_indices > 0]
    width = max(1, min(neighbours, len(warm_indices)))
    indices = np.zeros((len(codes), width), np.int32)
    values = np.zeros((len(codes), width), np.float32)
    for start in range(0, len(cold_indices), 1024):
        block = cold_indices[start : start + 1024]
        similarity = unit[block] @ unit[warm_indices].T
        best = np.argsort(-similarity, axis=1, kind="stable")[:, :width]
        indices[block] = warm_indices[best]
        values[block] = np.maximum(np.take_along_axis(similarity, best, axis=1), 0.0)
    return TopNeighbours(indices, values)
