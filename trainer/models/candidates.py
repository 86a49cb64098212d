"""The candidate stage's scoring, shared by the trainer (validation, evaluation) and the candidates service.

A candidate model gives a probability-like score over every item index; it is blended with popularity
by how much history the user has, so a user with one or two interactions does not get noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trainer.models.autoencoder import AutoencoderScorer
from trainer.models.item_knn import ItemKNN

# Popularity orders what no model score separates, without moving real scores.
TIE_BREAK = 1e-9


class CandidateModel(Protocol):
    name: str

    def save(self, models_dir: Path) -> None: ...

    def probabilities(self, recent: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Non-negative scores over all item indices that sum to 1 (or are all 0 when it has no opinion).

        recent: the last max_history item indices, oldest first; seen: every item index of the user."""


def _normalised(scores: np.ndarray) -> np.ndarray:
    total = float(scores.sum())
    return scores / total if total > 0 else np.zeros_like(scores)


@dataclass
class AutoencoderCandidates:
    scorer: AutoencoderScorer
    name: str = "autoencoder"

    def save(self, models_dir: Path) -> None:
        self.scorer.save(models_dir)

    def probabilities(self, recent: np.ndarray, seen: np.ndarray) -> np.ndarray:
        if not np.any(seen > 0):
            return np.zeros(self.scorer.size, dtype=np.float64)
        logits = self.scorer.score(seen).astype(np.float64)
        logits -= logits.max()
        return _normalised(np.exp(logits))


@dataclass
class ItemKNNCandidates:
    model: ItemKNN
    name: str = "item_knn"

    def save(self, models_dir: Path) -> None:
        self.model.save(models_dir)

    def probabilities(self, recent: np.ndarray, seen: np.ndarray) -> np.ndarray:
        return _normalised(self.model.score(recent).astype(np.float64))


def load_candidate_model(models_dir: Path, config: dict[str, Any]) -> CandidateModel:
    name = config["candidates"]["model"]
    if name == "autoencoder":
        return AutoencoderCandidates(AutoencoderScorer.load(models_dir))
    return ItemKNNCandidates(ItemKNN.load(models_dir, config["item_knn"]["recency_decay"]))


def candidate_scores(
    model: CandidateModel, recent: np.ndarray, seen: np.ndarray, popularity: np.ndarray, shrinkage: float
) -> np.ndarray:
    """alpha * model + (1 - alpha) * popularity, alpha = n / (n + shrinkage) for a user with n known items."""
    known = int(np.count_nonzero(np.unique(seen[seen > 0])))
    popular = _normalised(popularity.astype(np.float64))
    model_scores = model.probabilities(recent, seen)
    alpha = known / (known + shrinkage) if known + shrinkage > 0 else 1.0
    if not model_scores.any():
        alpha = 0.0
    return (alpha * model_scores + (1.0 - alpha) * popular + TIE_BREAK * popular).astype(np.float64)
