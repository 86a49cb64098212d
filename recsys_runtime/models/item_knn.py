"""Item co-occurrence model (item-kNN): cosine similarity of items over the users who consumed them.

The candidate model until the autoencoders land: a user's score for item j is the recency-weighted
sum of j's similarity to the items in the user's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_runtime.models.neighbours import TopNeighbours, recency_weights

NAME = "item_knn"


@dataclass
class ItemKNN:
    neighbours: TopNeighbours
    recency_decay: float

    @classmethod
    def fit(
        cls,
        user_index: np.ndarray,
        item_index: np.ndarray,
        n_users: int,
        n_items: int,
        neighbours: int,
        shrinkage: float,
        recency_decay: float,
    ) -> ItemKNN:
        ones = np.ones(len(user_index), dtype=np.float32)
        users_items = sp.csr_matrix((ones, (user_index, item_index)), shape=(n_users, n_items))
        users_items.data[:] = 1.0  # repeated interactions count once
        co = (users_items.T @ users_items).tocoo()
        counts = np.asarray(users_items.sum(axis=0)).ravel()
        off_diagonal = co.row != co.col
        rows, cols, together = co.row[off_diagonal], co.col[off_diagonal], co.data[off_diagonal]
        cosine = together / np.sqrt(counts[rows] * counts[cols])
        similarity = cosine * together / (together + shrinkage)
        matrix = sp.csr_matrix((similarity.astype(np.float32), (rows, cols)), shape=(n_items, n_items))
        return cls(TopNeighbours.from_sparse(matrix, neighbours), recency_decay)

    def score(self, history: np.ndarray) -> np.ndarray:
        """Scores over all item indices for a history of item indices, oldest first."""
        return self.neighbours.accumulate(history, recency_weights(len(history), self.recency_decay))

    def save(self, directory: Path) -> None:
        self.neighbours.save(directory, NAME)

    @classmethod
    def load(cls, directory: Path, recency_decay: float) -> ItemKNN:
        return cls(TopNeighbours.load(directory, NAME), recency_decay)
