"""Ranking: the candidates re-ordered by the ranking models, which run in Triton."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from recsys_runtime.layout import WORKFLOW_DIR
from recsys_runtime.workflow import Workflow
from services.common.clients import Deadline
from services.common.errors import Violations
from services.common.validation import MAX_K, check_id

MODEL_NAME = "ranker_blend"
# Cold users' generated histories are unordered guesses, not sequences: the sequence models, which predict
# what follows a history, push its (likely) items down (measured on ml-100k's cold users: P@10 0.47 ranked,
# 0.54 in candidate order), so those requests keep the candidate stage's order.
CANDIDATE_ORDER = "candidate_order"


@dataclass(frozen=True)
class Ranked:
    item_id: str
    score: float


class RankerPort(Protocol):
    async def score(
        self,
        history: np.ndarray,
        user: int,
        candidates: np.ndarray,
        candidate_scores: np.ndarray,
        timeout_s: float,
        max_history: int,
    ) -> np.ndarray:
        """One score per candidate; history (oldest first, unknown items left out) is at most max_history long
        when it comes from this version's workflow."""


def keep_place_of_unknown(scores: np.ndarray, unknown: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """Items the rankers never saw (registered online after training) would score as nothing; instead each
    keeps its place in the candidate order: it takes the ranker score that sits at its candidate position
    among the known items' scores."""
    if not unknown.any() or unknown.all():
        return scores
    place = np.empty(len(scores), np.int64)
    place[np.argsort(-candidate_scores, kind="stable")] = np.arange(len(scores))
    known_best_first = np.sort(scores[~unknown])[::-1]
    out = scores.copy()
    out[unknown] = known_best_first[np.minimum(place[unknown], len(known_best_first) - 1)]
    return out


@dataclass(frozen=True)
class RankInput:
    """One ranking request, decoded: the candidates in the candidate stage's order (best first by its scores)."""

    user_id: str
    history: np.ndarray  # the user's item indices in this version's vocabulary, oldest first (0: unknown)
    candidate_ids: Sequence[str]
    candidate_scores: np.ndarray  # float32, one per candidate when well formed (checked here)
    k: int  # 0 keeps every candidate
    # The history was generated for a cold user rather than recorded (see CANDIDATE_ORDER).
    generated_history: bool
    # One per candidate id in this version's vocabulary when the candidate stage of this version packed them
    # (services.common.encoding.packed_indices); None when the ids must be checked and encoded here.
    candidate_indices: np.ndarray | None = None


@dataclass(frozen=True)
class Ranking:
    items: list[Ranked]  # best first
    model: str  # MODEL_NAME, or CANDIDATE_ORDER when the rankers were not asked


class RankingCore:
    def __init__(self, version_dir: Path, version: str, ranker: RankerPort) -> None:
        self.version = version
        self.workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        self.ranker = ranker

    async def rank(self, request: RankInput, deadline: Deadline, budget_s: float) -> Ranking:
        """The candidates re-ordered best first and cut to k: by the rankers, whose call takes at most
        `budget_s` cut to what is left of `deadline`; a generated history keeps the candidate order."""
        if request.generated_history:
            return Ranking(
                self.in_candidate_order(request.candidate_ids, request.candidate_scores, request.k), CANDIDATE_ORDER
            )
        indices = request.candidate_indices
        if indices is None:
            indices = self.candidate_indices(request.candidate_ids, request.candidate_scores, request.k)
        else:
            # Packed by this version's candidate stage: the ids were its own, no need to check and encode them.
            self.check(request.candidate_ids, request.candidate_scores, request.k)
        ranked = await self._by_rankers(
            request.history,
            request.user_id,
            request.candidate_ids,
            indices,
            request.candidate_scores,
            request.k,
            deadline.timeout(budget_s),  # after the checks: bad input is refused as such, whatever the deadline
        )
        return Ranking(ranked, MODEL_NAME)

    def candidate_indices(self, candidate_ids: Sequence[str], candidate_scores: np.ndarray, k: int) -> np.ndarray:
        """Checks the candidates and k, and encodes the ids in this version's vocabulary (0: unknown)."""
        violations = self._violations(candidate_ids, candidate_scores, k)
        for i, item_id in enumerate(candidate_ids):
            check_id(violations, f"candidates[{i}].item_id", item_id)
        violations.raise_if_any()
        return self.workflow.items.encode(list(candidate_ids))

    @staticmethod
    def check(candidate_ids: Sequence[str], candidate_scores: np.ndarray, k: int) -> None:
        RankingCore._violations(candidate_ids, candidate_scores, k).raise_if_any()

    @staticmethod
    def _violations(candidate_ids: Sequence[str], candidate_scores: np.ndarray, k: int) -> Violations:
        violations = Violations()
        violations.check(1 <= len(candidate_ids) <= MAX_K, "candidates", f"must hold 1..{MAX_K} items")
        violations.check(len(candidate_ids) == len(candidate_scores), "candidates", "one score per candidate")
        violations.check(0 <= k <= MAX_K, "k", f"must be in 0..{MAX_K}, got {k}")
        return violations

    def in_candidate_order(self, candidate_ids: Sequence[str], candidate_scores: np.ndarray, k: int) -> list[Ranked]:
        self.check(candidate_ids, candidate_scores, k)
        order = np.argsort(-np.asarray(candidate_scores, np.float64), kind="stable")[: k or len(candidate_ids)]
        return [Ranked(candidate_ids[i], float(candidate_scores[i])) for i in order]

    async def _by_rankers(
        self,
        history: np.ndarray,
        user_id: str,
        candidate_ids: Sequence[str],
        indices: np.ndarray,
        candidate_scores: np.ndarray,
        k: int,
        timeout_s: float,
    ) -> list[Ranked]:
        """Candidates (checked, with their indices in this version's vocabulary) re-ordered best first, cut to k
        (0 keeps them all)."""
        user = int(self.workflow.users.encode([user_id])[0])
        scores = await self.ranker.score(
            history[history > 0],
            user,
            indices,
            np.asarray(candidate_scores, dtype=np.float32),
            timeout_s,
            self.workflow.max_history,
        )
        scores = keep_place_of_unknown(scores, indices == 0, np.asarray(candidate_scores, dtype=np.float64))
        order = np.argsort(-scores, kind="stable")[: k or len(scores)]
        return [Ranked(candidate_ids[i], float(scores[i])) for i in order]
