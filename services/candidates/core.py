"""Candidate generation: the trained candidate model (Mult-VAE/DAE or item-kNN) blended with popularity
by history length; pure popularity for users without history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import Violations
from services.common.validation import MAX_K
from trainer.layout import MODELS_DIR, WORKFLOW_DIR
from trainer.models.candidates import load_candidate_scorer
from trainer.models.popularity import PopularityRanking, load_popularity
from trainer.workflow import Workflow

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
        self.scorer = load_candidate_scorer(version_dir / MODELS_DIR, config, self.popularity)
        self._item_ids = self.workflow.items.ids.to_numpy()
        self.popular_ranking = PopularityRanking(self._item_ids, self.popularity, self.workflow.items.encode)

    @staticmethod
    def _check_n(n: int) -> None:
        violations = Violations()
        violations.check(1 <= n <= MAX_K, "n", f"must be in 1..{MAX_K}, got {n}")
        violations.raise_if_any()

    def candidates(
        self, recent: np.ndarray, seen: Sequence[str], exclude: Sequence[str], n: int
    ) -> tuple[list[Candidate], str]:
        """Top-n best first, never a seen or excluded item; with the name of the model that chose them."""
        self._check_n(n)
        seen_indices = self.workflow.items.encode(list(seen)) if seen else np.zeros(0, np.int32)
        excluded = self.workflow.items.encode(list(exclude)) if exclude else None
        best, scores = self.scorer.top(recent[recent > 0], seen_indices, n, excluded)
        model = self.scorer.model.name if np.any(seen_indices > 0) else POPULARITY_NAME
        return [Candidate(str(self._item_ids[i - 1]), float(s)) for i, s in zip(best, scores, strict=True)], model

    def popular(self, exclude: Sequence[str], n: int) -> list[Candidate]:
        self._check_n(n)
        return [Candidate(item_id, score) for item_id, score in self.popular_ranking.top(n, exclude)]
