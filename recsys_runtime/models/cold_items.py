"""Cold items at serving time: an item with attributes but no interactions borrows the candidate model's score
of its nearest warm items in the item autoencoder's content space (trainer.models.item_autoencoder fits it);
the neighbour lists are plain .npy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys_runtime.models.neighbours import TopNeighbours

NAME = "cold_items"


@dataclass
class ColdItemTransfer:
    """Cold item j's model score = content_weight * the similarity-weighted mean of its warm neighbours'."""

    neighbours: TopNeighbours
    cold: np.ndarray  # indices of cold items
    content_weight: float

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        if len(self.cold) == 0:
            return probabilities
        weights = self.neighbours.values[self.cold]
        borrowed = (weights * probabilities[self.neighbours.indices[self.cold]]).sum(axis=1)
        total = weights.sum(axis=1)
        out = probabilities.copy()
        out[self.cold] = self.content_weight * np.where(total > 0, borrowed / np.where(total > 0, total, 1), 0.0)
        return out

    def save(self, directory: Path) -> None:
        self.neighbours.save(directory, NAME)
        np.save(directory / f"{NAME}.cold.npy", self.cold.astype(np.int64), allow_pickle=False)
        np.save(directory / f"{NAME}.weight.npy", np.array([self.content_weight], np.float32), allow_pickle=False)

    @classmethod
    def load(cls, directory: Path) -> ColdItemTransfer | None:
        if not (directory / f"{NAME}.cold.npy").is_file():
            return None
        return cls(
            TopNeighbours.load(directory, NAME),
            np.load(directory / f"{NAME}.cold.npy", allow_pickle=False),
            float(np.load(directory / f"{NAME}.weight.npy", allow_pickle=False)[0]),
        )
