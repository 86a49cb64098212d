"""Candidate generation: the trained candidate model (Mult-VAE/DAE or item-kNN) blended with popularity
by history length; pure popularity for users without history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys_runtime.layout import MODELS_DIR, WORKFLOW_DIR
from recsys_runtime.models.candidates import DEFAULT_GENERATED_WEIGHT, blend_generated, load_candidate_scorer
from recsys_runtime.models.popularity import PopularityRanking, load_popularity
from recsys_runtime.workflow import Workflow
from services.common.errors import Violations
from services.common.item_registry import RegisteredItem
from services.common.validation import MAX_K

POPULARITY_NAME = "popularity"
GENERATED_NAME = "gan+autoencoder"


@dataclass(frozen=True)
class Candidate:
    item_id: str
    score: float


@dataclass(frozen=True)
class CandidateQuery:
    """One candidates request, decoded."""

    history: np.ndarray  # item indices in this version's vocabulary, oldest first (0: unknown)
    # Every item the user interacted with, as indices (0: unknown): never returned for a recorded history.
    seen: np.ndarray
    # One per history entry: the generator's likelihood of the item, read only for a generated history.
    likelihoods: np.ndarray
    exclude: Sequence[str]  # item ids never returned
    n: int
    # The history was generated for a cold user (by the synthetic service) rather than recorded.
    generated_history: bool


@dataclass(frozen=True)
class Candidates:
    """Best first: the items' ids, their indices in the workflow's vocabulary (0 for items registered online,
    which the other stages' models do not know) and scores, and the model that chose them."""

    item_ids: list[str]
    indices: np.ndarray
    scores: np.ndarray
    model: str

    def as_list(self) -> list[Candidate]:
        return [Candidate(i, float(s)) for i, s in zip(self.item_ids, self.scores, strict=True)]


class CandidateCore:
    def __init__(self, version_dir: Path, version: str, config: dict[str, Any]) -> None:
        self.version = version
        self.workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        self.popularity = load_popularity(version_dir / MODELS_DIR)
        self.scorer = load_candidate_scorer(version_dir / MODELS_DIR, config, self.popularity)
        # Artefacts trained before the setting existed take today's default.
        self.generated_weight = float(config["candidates"].get("generated_weight", DEFAULT_GENERATED_WEIGHT))
        self._item_ids = self.workflow.items.ids.to_numpy()
        self.popular_ranking = PopularityRanking(self._item_ids, self.popularity, self.workflow.items.encode)

    @staticmethod
    def _check_n(n: int) -> None:
        violations = Violations()
        violations.check(1 <= n <= MAX_K, "n", f"must be in 1..{MAX_K}, got {n}")
        violations.raise_if_any()

    def _found(self, best: np.ndarray, scores: np.ndarray, model: str) -> Candidates:
        best = np.asarray(best, np.int64)
        # Registered items are past the end of the workflow's vocabulary: 0 (unknown) to the other stages.
        indices = np.where(best < self.workflow.items.size, best, 0)
        return Candidates(self._item_ids[best - 1].tolist(), indices, np.asarray(scores, np.float32), model)

    def candidates(self, query: CandidateQuery) -> Candidates:
        """Top-n best first, never an excluded item, nor a seen one of a recorded history; with the name of the
        model that chose them."""
        self._check_n(query.n)
        excluded = self.workflow.items.encode(list(query.exclude)) if query.exclude else None
        if query.generated_history:
            return self._from_generated(query.history, query.likelihoods, excluded, query.n)
        return self._from_recorded(query.history, query.seen, excluded, query.n)

    def _from_recorded(self, recent: np.ndarray, seen: np.ndarray, excluded: np.ndarray | None, n: int) -> Candidates:
        best, scores = self.scorer.top(recent[recent > 0], seen, n, excluded)
        model = self.scorer.model.name if np.any(seen > 0) else POPULARITY_NAME
        return self._found(best, scores, model)

    def _from_generated(
        self, generated: np.ndarray, likelihoods: np.ndarray, excluded: np.ndarray | None, n: int
    ) -> Candidates:
        """A cold user's candidates from their generated history: it is the model's input, its items stay
        recommendable, and the generator's own likelihoods weigh in (candidates.generated_weight)."""
        known = generated > 0
        generated, likelihoods = generated[known], likelihoods[known]
        best, scores = self.scorer.top(generated, generated, n, excluded, exclude_seen=False)
        best, mixed = blend_generated(best, scores, generated, likelihoods, n, self.generated_weight, excluded)
        return self._found(best, mixed, GENERATED_NAME)

    @property
    def registered(self) -> int:
        return len(self._item_ids) - (self.workflow.items.size - 1)

    def add_registered(self, items: Sequence[RegisteredItem]) -> int:
        """Items registered online join the catalogue after the trained ones, scored by their generated
        vectors. Ids the artefact already knows, or already added, are skipped. Returns how many joined."""
        known = set(self._item_ids.tolist())
        fresh = [item for item in items if item.item_id not in known and not self.workflow.items.contains(item.item_id)]
        if not fresh:
            return 0
        # Both replaced together, with no await between: a request sees the old pair or the new one.
        scorer = self.scorer.with_items(np.vstack([item.vector for item in fresh]).astype(np.float32))
        self.scorer, self._item_ids = scorer, np.append(self._item_ids, [item.item_id for item in fresh])
        return len(fresh)

    def popular(self, exclude: Sequence[str], n: int) -> list[Candidate]:
        self._check_n(n)
        return [Candidate(item_id, score) for item_id, score in self.popular_ranking.top(n, exclude)]
