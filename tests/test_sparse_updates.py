"""Large embedding tables trained at the cost of the rows a batch looks up (trainer/models/sparse_updates.py):
RowEmbedding looks up as Embedding does, and LazyAdam is Adam on the rows it updates and leaves the others."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.models.sparse_updates import LazyAdam, RowEmbedding

ROWS, DIM = 40, 3


def table(layer: type[keras.layers.Embedding], initial: np.ndarray) -> Any:
    embedding = layer(ROWS, DIM)
    embedding.build((None,))
    embedding.set_weights([initial])
    return embedding


def train(
    layer: type[keras.layers.Embedding], optimizer: Any, batches: list[np.ndarray], dense: bool = False
) -> np.ndarray:
    """Each batch: minimise sum((rows - 1)^2) of the looked-up rows (repeats count twice). `dense`: the
    optimizer gets the gradient as a dense tensor, the reference Adam (Keras' Adam squares the parts of a
    row-sparse gradient of a row looked up twice, not their sum)."""
    initial = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)
    embedding = table(layer, initial)
    for batch in batches:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((embedding(tf.constant(batch)) - 1.0) ** 2)
        gradients = tape.gradient(loss, embedding.trainable_variables)
        assert isinstance(gradients[0], tf.IndexedSlices)
        if dense:
            gradients = [tf.convert_to_tensor(gradients[0])]
        optimizer.apply_gradients(zip(gradients, embedding.trainable_variables, strict=True))
    return np.asarray(embedding.get_weights()[0])


def test_row_embedding_looks_up_as_embedding_does() -> None:
    initial = np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM)
    ids = np.array([[3, 0, 39], [3, 3, 1]], np.int64)
    expected = table(keras.layers.Embedding, initial)(ids)
    np.testing.assert_array_equal(table(RowEmbedding, initial)(ids), expected)
    masked = RowEmbedding(ROWS, DIM, mask_zero=True)
    assert masked.compute_mask(ids).numpy().tolist() == [[True, False, True], [True, True, True]]


def test_lazy_adam_is_adam_when_every_row_is_looked_up_each_step() -> None:
    everything = [np.concatenate([np.arange(ROWS), [5, 5]]) for _ in range(4)]  # repeats: summed gradients
    lazy = train(RowEmbedding, LazyAdam(0.05, min_rows=1), everything)
    reference = train(RowEmbedding, keras.optimizers.Adam(0.05), everything, dense=True)
    np.testing.assert_allclose(lazy, reference, rtol=1e-5, atol=1e-5)


def test_lazy_adam_leaves_rows_no_batch_looked_up_and_moves_the_others_as_adam_would() -> None:
    batches = [np.array([1, 2, 2]), np.array([2, 7])]
    initial = train(RowEmbedding, LazyAdam(0.05, min_rows=1), [])
    lazy = train(RowEmbedding, LazyAdam(0.05, min_rows=1), batches)
    reference = train(RowEmbedding, keras.optimizers.Adam(0.05), batches, dense=True)
    untouched = np.setdiff1d(np.arange(ROWS), [1, 2, 7])
    np.testing.assert_array_equal(lazy[untouched], initial[untouched])
    # Rows 2 and 7 were looked up by the last batch: both optimizers agree on them. Row 1 was looked up only
    # in the first: Adam's momentum moves it again, lazy Adam does not.
    np.testing.assert_allclose(lazy[[2, 7]], reference[[2, 7]], rtol=1e-5)
    assert not np.allclose(lazy[1], reference[1])
    once = train(RowEmbedding, LazyAdam(0.05, min_rows=1), batches[:1])
    np.testing.assert_array_equal(lazy[1], once[1])


def test_tables_below_min_rows_get_adams_exact_update() -> None:
    batches = [np.array([1, 2, 2]), np.array([2, 7])]
    below = train(RowEmbedding, LazyAdam(0.05, min_rows=ROWS + 1), batches)
    np.testing.assert_array_equal(below, train(RowEmbedding, keras.optimizers.Adam(0.05), batches))


def test_lazy_adam_checks_and_serialises_its_argument() -> None:
    with pytest.raises(ValueError, match="min_rows"):
        LazyAdam(0.01, min_rows=0)
    restored = LazyAdam.from_config(LazyAdam(0.01, min_rows=123).get_config())
    assert isinstance(restored, LazyAdam) and restored.min_rows == 123
    layer = keras.layers.deserialize(keras.layers.serialize(RowEmbedding(ROWS, DIM, mask_zero=True)))
    assert isinstance(layer, RowEmbedding) and layer.mask_zero
