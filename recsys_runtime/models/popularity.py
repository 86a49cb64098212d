"""Popularity: how often each item was interacted with, optionally decayed with age."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from recsys_runtime.models.neighbours import top_n

SECONDS_PER_DAY = 86_400.0


def fit_popularity(item_index: np.ndarray, timestamps: np.ndarray, size: int, half_life_days: float) -> np.ndarray:
    """Scores indexed by item index (0 = OOV, always 0); larger is more popular."""
    if half_life_days > 0 and len(timestamps):
        age_days = (timestamps.max() - timestamps) / SECONDS_PER_DAY
        weights = 0.5 ** (age_days / half_life_days)
    else:
        weights = np.ones(len(item_index))
    scores = np.bincount(item_index, weights=weights, minlength=size).astype(np.float32)
    scores[0] = 0.0
    return scores


def save_popularity(directory: Path, scores: np.ndarray) -> None:
    np.save(directory / "popularity.npy", scores, allow_pickle=False)


def load_popularity(directory: Path) -> np.ndarray:
    return np.load(directory / "popularity.npy", allow_pickle=False)


class PopularityRanking:
    """The most popular items by client id, for cold users and as the last-resort fallback."""

    def __init__(self, item_ids: np.ndarray, scores: np.ndarray, encode: Callable[[list[str]], np.ndarray]) -> None:
        self.item_ids = item_ids  # index i + 1 is item_ids[i]
        self.scores = scores
        self.encode = encode

    def top(self, n: int, exclude: Sequence[str]) -> list[tuple[str, float]]:
        excluded = self.encode(list(exclude)) if exclude else np.zeros(0, dtype=np.int32)
        return [(str(self.item_ids[i - 1]), float(self.scores[i])) for i in top_n(self.scores, n, excluded)]
