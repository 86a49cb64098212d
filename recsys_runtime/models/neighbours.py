"""Top-M neighbour lists of an item-to-item matrix, and the scoring helpers built on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp


@dataclass
class TopNeighbours:
    """For each item index, its M strongest neighbours (indices, values); padding is index 0, value 0."""

    indices: np.ndarray  # int32 [n_items, M]
    values: np.ndarray  # float32 [n_items, M]

    @classmethod
    def from_sparse(cls, matrix: sp.csr_matrix, m: int) -> TopNeighbours:
        n = matrix.shape[0]
        width = max(1, min(m, int(np.diff(matrix.indptr).max(initial=0))))
        indices = np.zeros((n, width), dtype=np.int32)
        values = np.zeros((n, width), dtype=np.float32)
        for row in range(n):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            if start == end:
                continue
            cols, data = matrix.indices[start:end], matrix.data[start:end]
            if len(data) > width:
                keep = np.argpartition(-data, width - 1)[:width]
                cols, data = cols[keep], data[keep]
            order = np.argsort(-data, kind="stable")
            indices[row, : len(order)] = cols[order]
            values[row, : len(order)] = data[order]
        return cls(indices, values)

    @property
    def size(self) -> int:
        return int(self.indices.shape[0])

    def accumulate(self, sources: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Dense score vector: sum over sources of weight * neighbour value."""
        known = (sources > 0) & (sources < self.size)
        sources, weights = sources[known], weights[known]
        if len(sources) == 0:
            return np.zeros(self.size, dtype=np.float32)
        contributions = self.values[sources] * weights[:, None]
        scores = np.bincount(self.indices[sources].ravel(), contributions.ravel(), minlength=self.size)
        return scores.astype(np.float32)

    def save(self, directory: Path, name: str) -> None:
        np.save(directory / f"{name}.indices.npy", self.indices, allow_pickle=False)
        np.save(directory / f"{name}.values.npy", self.values, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, name: str) -> TopNeighbours:
        return cls(
            np.load(directory / f"{name}.indices.npy", allow_pickle=False),
            np.load(directory / f"{name}.values.npy", allow_pickle=False),
        )


def recency_weights(length: int, decay: float) -> np.ndarray:
    """Weights for a history ordered oldest first: the most recent item gets 1, the one before decay, ..."""
    return (decay ** np.arange(length - 1, -1, -1, dtype=np.float64)).astype(np.float32)


def top_n(scores: np.ndarray, n: int, exclude: np.ndarray) -> np.ndarray:
    """Indices of the n best scores, best first, never an excluded index nor the OOV index 0.

    Ties go to the smaller index, including at the cut-off, so the same scores always give the same list."""
    scores = scores.astype(np.float64, copy=True)
    scores[0] = -np.inf
    scores[exclude[(exclude >= 0) & (exclude < len(scores))]] = -np.inf
    available = int(np.isfinite(scores).sum())
    n = min(n, available)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    threshold = -np.partition(-scores, n - 1)[n - 1]
    above = np.flatnonzero(scores > threshold)
    tied = np.flatnonzero(scores == threshold)[: n - len(above)]
    best = np.concatenate([above, tied])
    return best[np.lexsort((best, -scores[best]))]
