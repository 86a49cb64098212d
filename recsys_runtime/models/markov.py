"""First-order Markov chain over time-ordered histories: P(next item | current item).

The ranking model until the CNN/RNN rankers land: a candidate's score is the recency-weighted
transition probability from the user's last few items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_runtime.models.neighbours import TopNeighbours, recency_weights

NAME = "markov"


@dataclass
class Markov:
    transitions: TopNeighbours
    order: int
    recency_decay: float

    @classmethod
    def fit(
        cls,
        user_index: np.ndarray,
        item_index: np.ndarray,
        n_items: int,
        neighbours: int,
        order: int,
        recency_decay: float,
    ) -> Markov:
        """user_index/item_index must be sorted by user, then time."""
        same_user = user_index[1:] == user_index[:-1]
        sources, targets = item_index[:-1][same_user], item_index[1:][same_user]
        ones = np.ones(len(sources), dtype=np.float32)
        counts = sp.csr_matrix((ones, (sources, targets)), shape=(n_items, n_items))
        counts.sum_duplicates()
        totals = np.asarray(counts.sum(axis=1)).ravel()
        totals[totals == 0] = 1.0
        probabilities = sp.csr_matrix(sp.diags(1.0 / totals) @ counts)
        return cls(TopNeighbours.from_sparse(probabilities, neighbours), order, recency_decay)

    def score(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Transition scores of the candidate item indices given a history, oldest first."""
        recent = history[-self.order :]
        scores = self.transitions.accumulate(recent, recency_weights(len(recent), self.recency_decay))
        inside = (candidates > 0) & (candidates < len(scores))
        return np.where(inside, scores[np.clip(candidates, 0, len(scores) - 1)], 0.0).astype(np.float32)

    def save(self, directory: Path) -> None:
        self.transitions.save(directory, NAME)

    @classmethod
    def load(cls, directory: Path, order: int, recency_decay: float) -> Markov:
        return cls(TopNeighbours.load(directory, NAME), order, recency_decay)


def blend(candidate_scores: np.ndarray, markov_scores: np.ndarray, markov_weight: float) -> np.ndarray:
    """Convex blend of the two score sets, each scaled to [0, 1] by its maximum over the candidates."""

    def scaled(values: np.ndarray) -> np.ndarray:
        top = float(np.max(values)) if len(values) else 0.0
        return values / top if top > 0 else np.zeros_like(values)

    return ((1.0 - markov_weight) * scaled(candidate_scores) + markov_weight * scaled(markov_scores)).astype(np.float32)
