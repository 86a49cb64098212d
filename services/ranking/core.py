"""Ranking: blend of the candidate stage's score with first-order Markov transitions from recent items."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import Violations
from services.common.validation import MAX_K, check_id
from trainer.layout import MODELS_DIR, RANKING_FILE, WORKFLOW_DIR
from trainer.models.markov import Markov, blend
from trainer.workflow import Workflow

MODEL_NAME = "markov_blend"


@dataclass(frozen=True)
class Ranked:
    item_id: str
    score: float


class RankingCore:
    def __init__(self, version_dir: Path, version: str, config: dict[str, Any]) -> None:
        self.version = version
        self.workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        markov = config["markov"]
        self.markov = Markov.load(version_dir / MODELS_DIR, markov["order"], markov["recency_decay"])
        self.markov_weight = float(json.loads((version_dir / MODELS_DIR / RANKING_FILE).read_text())["markov_weight"])

    def rank(
        self, history: np.ndarray, candidate_ids: Sequence[str], candidate_scores: Sequence[float], k: int
    ) -> list[Ranked]:
        """Candidates re-ordered best first, cut to k (0 keeps them all)."""
        violations = Violations()
        violations.check(1 <= len(candidate_ids) <= MAX_K, "candidates", f"must hold 1..{MAX_K} items")
        violations.check(0 <= k <= MAX_K, "k", f"must be in 0..{MAX_K}, got {k}")
        for i, item_id in enumerate(candidate_ids):
            check_id(violations, f"candidates[{i}].item_id", item_id)
        violations.raise_if_any()

        indices = self.workflow.items.encode(list(candidate_ids))
        transitions = self.markov.score(history[history > 0], indices)
        scores = blend(np.asarray(candidate_scores, dtype=np.float32), transitions, self.markov_weight)
        order = np.argsort(-scores, kind="stable")[: k or len(scores)]
        return [Ranked(candidate_ids[i], float(scores[i])) for i in order]
