"""The ranking stage's model: GRU4Rec, Caser, first-order Markov transitions and the candidate score, each
turned into a probability over the request's candidates, blended with weights fitted on validation."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys_runtime.evaluation import hit_rate_ndcg
from recsys_runtime.models.candidates import shares
from recsys_runtime.models.markov import Markov
from recsys_runtime.models.sequential import Caser, GRU4Rec, softmax_over

COMPONENTS = ("candidates", "markov", "gru4rec", "caser")
WEIGHTS_FILE = "ranker.json"


def _share(values: np.ndarray) -> np.ndarray:
    return shares(np.maximum(values.astype(np.float64), 0.0))


@dataclass
class Ranker:
    markov: Markov
    gru4rec: GRU4Rec | None = None
    caser: Caser | None = None
    weights: dict[str, float] = field(default_factory=lambda: {"candidates": 0.5, "markov": 0.5})

    def components(
        self, history: np.ndarray, user: int, candidates: np.ndarray, candidate_scores: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Each model's probability over the candidates; the sequence is encoded once per model. Item index 0
        (padding, or an item the models never saw) counts in no model's share: only the candidate stage's own
        score speaks for it."""
        n_items = self.markov.transitions.size
        history = history[(history > 0) & (history < n_items)]
        known = (candidates > 0) & (candidates < n_items)
        safe = np.where(known, candidates, 0)
        out = {
            "candidates": _share(candidate_scores),
            "markov": _share(self.markov.score(history, safe)),
        }
        if self.gru4rec is not None:
            out["gru4rec"] = softmax_over(self.gru4rec.score(self.gru4rec.state(history), safe), known)
        if self.caser is not None:
            out["caser"] = softmax_over(self.caser.score(self.caser.state(history, user), safe), known)
        return out

    def combine(self, components: dict[str, np.ndarray]) -> np.ndarray:
        total = np.zeros_like(next(iter(components.values())))
        for name, weight in self.weights.items():
            if weight and name in components:
                total = total + weight * components[name]
        return total.astype(np.float32)

    def score(self, history: np.ndarray, user: int, candidates: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
        return self.combine(self.components(history, user, candidates, candidate_scores))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.markov.save(directory)
        if self.gru4rec is not None:
            self.gru4rec.save(directory)
        if self.caser is not None:
            self.caser.save(directory)
        meta = {
            "weights": self.weights,
            "markov": {"order": self.markov.order, "recency_decay": self.markov.recency_decay},
            "gru4rec": self.gru4rec is not None,
            "caser": self.caser is not None,
        }
        (directory / WEIGHTS_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> Ranker:
        meta = json.loads((directory / WEIGHTS_FILE).read_text())
        markov = Markov.load(directory, int(meta["markov"]["order"]), float(meta["markov"]["recency_decay"]))
        return cls(
            markov,
            GRU4Rec.load(directory) if meta["gru4rec"] else None,
            Caser.load(directory) if meta["caser"] else None,
            {k: float(v) for k, v in meta["weights"].items()},
        )


def fit_weights(
    per_user: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], targets: np.ndarray, grid: Sequence[float]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The weights (one value of the grid per component) with the best NDCG@10 on the held-out targets; also
    each component alone, for the report."""
    names = [n for n in COMPONENTS if n in per_user[0][1]] if per_user else []

    def lists(weights: dict[str, float]) -> list[np.ndarray]:
        out = []
        for candidates, components in per_user:
            total = sum(w * components[n] for n, w in weights.items() if w)
            out.append(candidates[np.argsort(-np.asarray(total), kind="stable")])
        return out

    alone = {n: hit_rate_ndcg(lists({n: 1.0}), targets, 10) for n in names}
    best: tuple[float, dict[str, float]] | None = None
    for values in itertools.product(grid, repeat=len(names)):
        if not any(values):
            continue
        weights = dict(zip(names, values, strict=True))
        ndcg = hit_rate_ndcg(lists(weights), targets, 10)["NDCG@10"]
        if best is None or ndcg > best[0]:
            best = (ndcg, weights)
    return (best[1] if best else {"candidates": 1.0}), alone
