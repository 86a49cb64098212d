"""Keras input from sparse matrices: batches made dense one at a time, never the whole matrix."""

from __future__ import annotations

import math
import os

import numpy as np
import scipy.sparse as sp

from trainer.models.checks import require

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise in a CLI; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # after the log level, which TensorFlow reads when it loads


class SparseRowBatches(keras.utils.PyDataset):
    """Dense, shuffled batches of rows of a sparse matrix (a user x item matrix, items' attribute rows), the
    rows reshuffled after every epoch. With `reconstruct`, a batch is (rows, rows): input and target of a
    model trained to reproduce its input."""

    def __init__(self, matrix: sp.spmatrix, batch_size: int, seed: int, reconstruct: bool = False) -> None:
        super().__init__()
        require(matrix.shape[0] >= 1, f"matrix must have at least one row, got shape {matrix.shape}")
        require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
        self.matrix, self.batch_size, self.reconstruct = sp.csr_matrix(matrix), int(batch_size), reconstruct
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(matrix.shape[0])

    def __len__(self) -> int:
        return math.ceil(self.matrix.shape[0] / self.batch_size)

    def __getitem__(self, index: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = self.matrix[rows].toarray().astype(np.float32)
        return (batch, batch) if self.reconstruct else batch

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(self.matrix.shape[0])
