"""Candidate generation: item-kNN over the user's recent history, popularity when there is none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import Violations
from services.common.validation import MAX_K
from trainer.layout import MODELS_DIR, WORKFLOW_DIR
from trainer.models.item_knn import ItemKNN, candidate_scores
from trainer.models.neighbours import top_n
from trainer.models.popularity import PopularityRanking, load_popularity
from trainer.workflow import Workflow

MODEL_NAME = "item_knn"
POPULARITY_NAME = "popularity"


@dataclass(frozen=True)
class Candidate:
    item_id: str
    score: float


class CandidateCore:
    def __init__(self, version_dir: Path, version: str, config: dict[str, Any]) -> None:
        self.version = version
        self.workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        self.popularity = load_popularity(version_dir / MODELS_DIR)
        self.item_knn = ItemKNN.load(version_dir / MODELS_DIR, config["item_knn"]["recency_decay"])
        self._item_ids = self.workflow.items.ids.to_numpy()
        self.popular_ranking = PopularityRanking(self._item_ids, self.popularity, self.workflow.items.encode)

    def _excluded(self, seen: Sequence[str], exclude: Sequence[str]) -> np.ndarray:
        return self.workflow.items.encode([*seen, *exclude]) if seen or exclude else np.zeros(0, np.int32)

    def _as_candidates(self, indices: np.ndarray, scores: np.ndarray) -> list[Candidate]:
        return [Candidate(str(self._item_ids[i - 1]), float(scores[i])) for i in indices]

    @staticmethod
    def _check_n(n: int) -> None:
        violations = Violations()
        violations.check(1 <= n <= MAX_K, "n", f"must be in 1..{MAX_K}, got {n}")
        violations.raise_if_any()

    def candidates(
        self, history: np.ndarray, seen: Sequence[str], exclude: Sequence[str], n: int
    ) -> tuple[list[Candidate], str]:
        """Top-n by item-kNN (popularity breaks ties); no seen or excluded item; with the model's name."""
        self._check_n(n)
        known_history = history[history > 0]
        scores = candidate_scores(self.item_knn, known_history, self.popularity)
        best = top_n(scores, n, self._excluded(seen, exclude))
        return self._as_candidates(best, scores), MODEL_NAME if len(known_history) else POPULARITY_NAME

    def popular(self, exclude: Sequence[str], n: int) -> list[Candidate]:
        self._check_n(n)
        return [Candidate(item_id, score) for item_id, score in self.popular_ranking.top(n, exclude)]
