"""The candidate stage's scoring, shared by the trainer (validation, evaluation) and the candidates service.

A candidate model gives a probability-like score over every item index; it is blended with popularity
by how much history the user has, so a user with one or two interactions does not get noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recsys_runtime.models.autoencoder import AutoencoderScorer
from recsys_runtime.models.cold_items import ColdItemTransfer
from recsys_runtime.models.item_index import ItemIndex
from recsys_runtime.models.item_knn import ItemKNN
from recsys_runtime.models.neighbours import top_n

# Popularity orders what no model score separates, without moving real scores.
TIE_BREAK = 1e-9
# Items sampled to estimate the softmax normaliser outside the approximate index's pool.
NORMALISER_SAMPLE = 4096
# candidates.generated_weight for artefacts trained before the setting existed: the trainer's default
# (trainer/defaults.toml), kept here so that serving does not read the trainer's configuration.
DEFAULT_GENERATED_WEIGHT = 0.8


class CandidateModel(Protocol):
    name: str

    def save(self, models_dir: Path) -> None: ...

    def probabilities(self, recent: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Non-negative scores over all item indices that sum to 1 (or are all 0 when it has no opinion).

        recent: the last max_history item indices, oldest first; seen: every item index of the user."""


def shares(scores: np.ndarray) -> np.ndarray:
    """Non-negative scores as shares of their sum (all zeros when they sum to nothing)."""
    total = float(scores.sum())
    return scores / total if total > 0 else np.zeros_like(scores)


@dataclass
class AutoencoderCandidates:
    scorer: AutoencoderScorer
    transfer: ColdItemTransfer | None = None
    name: str = "autoencoder"

    def save(self, models_dir: Path) -> None:
        self.scorer.save(models_dir)
        if self.transfer is not None:
            self.transfer.save(models_dir)

    def probabilities(self, recent: np.ndarray, seen: np.ndarray) -> np.ndarray:
        if not np.any(seen > 0):
            return np.zeros(self.scorer.size, dtype=np.float64)
        logits = self.scorer.score(seen).astype(np.float64)
        return self._from_logits(logits[None, :], np.ones(1, dtype=bool))[0]

    def probabilities_many(self, seens: Sequence[np.ndarray]) -> np.ndarray:
        """probabilities for many users at once, [users, items] (the candidate model does not read `recent`)."""
        kernel, bias = self.scorer.item_matrix()
        logits = (self.scorer.user_states(seens) @ kernel + bias).astype(np.float64)  # as score(): float32
        return self._from_logits(logits, np.array([np.any(seen > 0) for seen in seens], dtype=bool))

    def _from_logits(self, logits: np.ndarray, has_history: np.ndarray) -> np.ndarray:
        """[users, items] logits -> a softmax per user with a history (zeros otherwise), cold items' share
        transferred from their warm neighbours."""
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities = exp / exp.sum(axis=1, keepdims=True)
        probabilities[~has_history] = 0.0
        if self.transfer is not None:
            for row in np.flatnonzero(has_history):
                probabilities[row] = shares(self.transfer.apply(probabilities[row]))
        return probabilities


@dataclass
class ItemKNNCandidates:
    model: ItemKNN
    name: str = "item_knn"

    def save(self, models_dir: Path) -> None:
        self.model.save(models_dir)

    def probabilities(self, recent: np.ndarray, seen: np.ndarray) -> np.ndarray:
        return shares(self.model.score(recent).astype(np.float64))


def load_candidate_model(models_dir: Path, config: dict[str, Any]) -> CandidateModel:
    name = config["candidates"]["model"]
    if name == "autoencoder":
        return AutoencoderCandidates(AutoencoderScorer.load(models_dir), ColdItemTransfer.load(models_dir))
    return ItemKNNCandidates(ItemKNN.load(models_dir, config["item_knn"]["recency_decay"]))


def history_weight(seen: np.ndarray, shrinkage: float) -> float:
    """alpha = n / (n + shrinkage) for a user with n known items: how much the model counts against popularity."""
    known = int(np.count_nonzero(np.unique(seen[seen > 0])))
    return known / (known + shrinkage) if known + shrinkage > 0 else 1.0


def _blend(model_scores: np.ndarray, seen: np.ndarray, popular: np.ndarray, shrinkage: float) -> np.ndarray:
    alpha = history_weight(seen, shrinkage) if model_scores.any() else 0.0
    return (alpha * model_scores + (1.0 - alpha) * popular + TIE_BREAK * popular).astype(np.float64)


def candidate_scores(
    model: CandidateModel, recent: np.ndarray, seen: np.ndarray, popularity: np.ndarray, shrinkage: float
) -> np.ndarray:
    """alpha * model + (1 - alpha) * popularity over the whole catalogue (see history_weight)."""
    return _blend(model.probabilities(recent, seen), seen, shares(popularity.astype(np.float64)), shrinkage)


@dataclass
class CandidateScorer:
    """The candidate stage: top-n of the blended scores, exactly (dense over the catalogue) or, with an item
    index, approximately: the index's top items by the autoencoder's logits plus the most popular items form
    a pool, which is scored exactly, with the softmax normalised over the pool."""

    model: CandidateModel
    popularity: np.ndarray
    shrinkage: float
    index: ItemIndex | None = None

    def __post_init__(self) -> None:
        self.popular_probabilities = shares(self.popularity.astype(np.float64))
        # Most popular first; ties by index, as in top_n.
        self.popular_order = np.lexsort((np.arange(len(self.popularity)), -self.popularity))
        # Item rows [W[:, j], b[j]] contiguous, so gathering a pool of items is cheap.
        self._item_rows = np.zeros((0, 0), np.float32)
        if self.index is not None and isinstance(self.model, AutoencoderCandidates):
            self._item_rows = item_vectors(self.model.scorer)
        # Items appended after the index was built are not in it: always in the pool.
        indexed = self.index.size if self.index is not None else len(self.popularity)
        self._outside_index = np.arange(indexed, len(self.popularity))
        sample_size = min(NORMALISER_SAMPLE, len(self.popularity) - 1)
        self._normaliser_sample = 1 + np.random.default_rng(0).choice(
            len(self.popularity) - 1, sample_size, replace=False
        )

    def with_items(self, vectors: np.ndarray) -> CandidateScorer:
        """The scorer with new items appended after the last index (their popularity is 0): items
        registered online with a generated vector."""
        if not isinstance(self.model, AutoencoderCandidates):
            raise TypeError(f"the {self.model.name} candidate model cannot take items without interactions")
        model = AutoencoderCandidates(self.model.scorer.with_items(vectors), self.model.transfer)
        popularity = np.append(self.popularity, np.zeros(len(vectors), self.popularity.dtype))
        return CandidateScorer(model, popularity, self.shrinkage, self.index)

    def top_many(
        self, recents: Sequence[np.ndarray], seens: Sequence[np.ndarray], n: int, chunk: int = 256
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """top(recent, seen, n) for many users (seen items excluded): the exact path computed a chunk of users at
        a time, which is what makes per-epoch validation cheap. Other paths (an index, item-kNN) go user by user."""
        if self.index is not None or not isinstance(self.model, AutoencoderCandidates):
            return [self.top(recent, seen, n) for recent, seen in zip(recents, seens, strict=True)]
        lists: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(seens), chunk):
            part = seens[start : start + chunk]
            probabilities = self.model.probabilities_many(part)
            for seen, model_scores in zip(part, probabilities, strict=True):
                scores = _blend(model_scores, seen, self.popular_probabilities, self.shrinkage)
                best = top_n(scores, n, seen)
                lists.append((best, scores[best]))
        return lists

    def top(
        self,
        recent: np.ndarray,
        seen: np.ndarray,
        n: int,
        exclude: np.ndarray | None = None,
        exclude_seen: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores) best first; never index 0, an excluded item, nor (with exclude_seen) a seen
        one. Without exclude_seen, `seen` is model input only (a generated history)."""
        parts = [seen] if exclude_seen else []
        if exclude is not None:
            parts.append(exclude)
        excluded = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if self.index is None or not isinstance(self.model, AutoencoderCandidates) or not np.any(seen > 0):
            # Popularity's shares are computed once, not per request.
            scores = _blend(self.model.probabilities(recent, seen), seen, self.popular_probabilities, self.shrinkage)
            best = top_n(scores, n, excluded)
            return best, scores[best]
        scorer = self.model.scorer
        state = scorer.user_state(seen)
        reach = n + len(excluded) + 1
        found, _ = self.index.search(np.append(state, 1.0), reach)
        transfer = self.model.transfer
        cold = transfer.cold if transfer is not None else np.zeros(0, np.int64)
        pool = np.unique(np.concatenate([found, self.popular_order[:reach], cold, self._outside_index]))
        pool = pool[(pool > 0) & ~np.isin(pool, excluded)]
        query = np.append(state, 1.0).astype(np.float32)
        logits = self._item_rows[pool] @ query
        shift = logits.max()
        pooled = np.exp(logits - shift)
        # The softmax normaliser also counts the items outside the pool: estimated from a fixed random sample.
        outside = self._normaliser_sample[~np.isin(self._normaliser_sample, pool, assume_unique=True)]
        rest = 0.0
        if len(outside):
            sampled = np.exp(self._item_rows[outside] @ query - shift)
            rest = float(sampled.mean()) * max(len(self.popularity) - 1 - len(pool), 0)
        normaliser = pooled.sum() + rest
        model_probabilities = pooled / normaliser
        if transfer is not None and len(cold):
            is_cold = np.isin(pool, cold)
            neighbours = transfer.neighbours.indices[pool[is_cold]]
            weights = transfer.neighbours.values[pool[is_cold]]
            borrowed = np.exp(self._item_rows[neighbours] @ query - shift) / normaliser
            total = weights.sum(axis=1)
            model_probabilities[is_cold] = transfer.content_weight * np.where(
                total > 0, (weights * borrowed).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0
            )
        alpha = history_weight(seen, self.shrinkage)
        popular = self.popular_probabilities[pool]
        scores = alpha * model_probabilities + (1.0 - alpha) * popular + TIE_BREAK * popular
        order = np.lexsort((pool, -scores))[:n]
        return pool[order], scores[order]


def blend_generated(
    best: np.ndarray,
    scores: np.ndarray,
    generated: np.ndarray,
    likelihoods: np.ndarray,
    n: int,
    generated_weight: float,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of a user whose history was generated: over the model's top items and the generated ones,
    generated_weight * the generator's share + (1 - generated_weight) * the model's share; top n, best first,
    never an excluded item nor index 0."""
    pool = np.union1d(best, generated)
    pool = pool[(pool > 0) & ~np.isin(pool, exclude if exclude is not None else np.zeros(0, np.int64))]
    model = np.zeros(len(pool))
    model[np.searchsorted(pool, best[np.isin(best, pool)])] = scores[np.isin(best, pool)]
    prior = np.zeros(len(pool))
    kept = np.isin(generated, pool)
    prior[np.searchsorted(pool, generated[kept])] = np.maximum(likelihoods[kept], 0.0)
    mixed = generated_weight * shares(prior) + (1.0 - generated_weight) * shares(model)
    order = np.lexsort((pool, -mixed))[:n]
    return pool[order], mixed[order]


def item_vectors(scorer: AutoencoderScorer) -> np.ndarray:
    """Item j's vector [W[:, j], b[j]]: its inner product with [state, 1] is item j's logit."""
    kernel, bias = scorer.item_matrix()
    return np.hstack([kernel.T, bias[:, None]]).astype(np.float32)


def load_candidate_scorer(models_dir: Path, config: dict[str, Any], popularity: np.ndarray) -> CandidateScorer:
    model = load_candidate_model(models_dir, config)
    index = ItemIndex.load(models_dir / "autoencoder") if isinstance(model, AutoencoderCandidates) else None
    return CandidateScorer(model, popularity, float(config["candidates"]["popularity_shrinkage"]), index)
