"""Quality of the synthetic data, reported by `recsys evaluate` beside the recommenders' metrics.

Synthetic users and interactions are generated as GenerateSynthetic streams them (as many interactions as
the real reference has), then compared with the real reference: the training data, or on large data a seeded
sample of its users (`max_users`; the comparison costs grow with users x users for privacy):

- fidelity: item-popularity distributions (Jensen-Shannon divergence, total variation, Spearman correlation
  of item counts), per-attribute marginals of the users (total variation per column), item co-occurrence
  (Pearson correlation of the co-occurrence counts among the most popular items), history lengths
  (Kolmogorov-Smirnov statistic);
- utility: train on synthetic, test on real: the same item-kNN recommender fitted on the synthetic
  interactions and on the real ones, both scored on the split's held-out items; HR@10 as a ratio;
- privacy: how many synthetic users' item sets equal a training user's, and the distance to the closest
  record (Jaccard distance to the nearest training user) of synthetic users beside that of a real holdout
  (training users left out of the reference set): synthetic users much closer than real strangers would be
  copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from recsys_runtime.evaluation import hit_rate_ndcg
from recsys_runtime.models.item_knn import ItemKNN
from recsys_runtime.models.neighbours import top_n
from recsys_runtime.synthesis import Synthesis, item_set_key

CO_OCCURRENCE_ITEMS = 200
HOLDOUT_SHARE = 0.2
# Item-kNN settings for the utility check (the trainer's defaults for the candidate model of that name).
KNN_NEIGHBOURS, KNN_SHRINKAGE, KNN_DECAY = 200, 10.0, 0.97


def _distribution(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else counts


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        inside = a > 0
        return float(np.sum(a[inside] * np.log2(a[inside] / m[inside])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def sample_users(interactions: pd.DataFrame, max_users: int | None, seed: int) -> pd.DataFrame:
    """The interactions of a seeded sample of max_users users (all of them when there are no more)."""
    ids = interactions["user_id"].unique()
    if max_users is None or len(ids) <= max_users:
        return interactions
    chosen = np.random.default_rng(seed).choice(ids, max_users, replace=False)
    return interactions[interactions["user_id"].isin(chosen)]


def _user_item_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    return matrix


def _closest_jaccard(queries: sp.csr_matrix, reference: sp.csr_matrix, chunk: int = 512) -> np.ndarray:
    """Per query row, the Jaccard distance to its nearest reference row."""
    query_sizes = np.asarray(queries.sum(axis=1)).ravel()
    reference_sizes = np.asarray(reference.sum(axis=1)).ravel()
    out = np.ones(queries.shape[0])
    for start in range(0, queries.shape[0], chunk):
        overlap = (queries[start : start + chunk] @ reference.T).toarray()
        union = query_sizes[start : start + chunk, None] + reference_sizes[None, :] - overlap
        similarity = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
        out[start : start + chunk] = 1.0 - similarity.max(axis=1)
    return out


def synthetic_quality(
    synthesis: Synthesis,
    train: pd.DataFrame,
    test: pd.DataFrame,
    users: pd.DataFrame | None,
    seed: int = 0,
    max_users: int | None = None,
) -> dict[str, Any]:
    """train/test: the split's interactions (user_id, item_id, timestamp; str ids); users: real user
    attributes, if any; max_users: compare with a seeded sample of that many training users (None: all)."""
    workflow = synthesis.workflow
    n_items = workflow.items.size
    full_train = train
    train = sample_users(train, max_users, seed)
    rows: list[tuple[str, str, int]] = []
    synthetic_users: list[tuple[str, dict[str, str]]] = []
    for chunk_users, chunk_rows in synthesis.generate_interactions(len(train), seed, {}, 100_000):
        synthetic_users += chunk_users
        rows += chunk_rows
    synthetic = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])

    real_items = workflow.items.encode(train["item_id"].to_numpy())
    fake_items = workflow.items.encode(synthetic["item_id"].to_numpy())
    real_counts = np.bincount(real_items, minlength=n_items)[1:].astype(np.float64)
    fake_counts = np.bincount(fake_items, minlength=n_items)[1:].astype(np.float64)
    p, q = _distribution(real_counts), _distribution(fake_counts)

    real_users, real_user_index = np.unique(train["user_id"].to_numpy(), return_inverse=True)
    fake_users, fake_user_index = np.unique(synthetic["user_id"].to_numpy(), return_inverse=True)
    real_matrix = _user_item_matrix(real_user_index, real_items, len(real_users), n_items)
    fake_matrix = _user_item_matrix(fake_user_index, fake_items, len(fake_users), n_items)

    top = np.argsort(-real_counts, kind="stable")[:CO_OCCURRENCE_ITEMS] + 1
    real_co = (real_matrix[:, top].T @ real_matrix[:, top]).toarray()
    fake_co = (fake_matrix[:, top].T @ fake_matrix[:, top]).toarray()
    upper = np.triu_indices(len(top), k=1)

    real_lengths = np.asarray(real_matrix.sum(axis=1)).ravel()
    fake_lengths = np.asarray(fake_matrix.sum(axis=1)).ravel()
    marginals: dict[str, float] = {}
    if users is not None:
        fake_attributes = pd.DataFrame([a for _, a in synthetic_users])
        for column in synthesis.user_marginals:
            if column in users.columns and column in fake_attributes.columns:
                real_share = users[column].astype(str).value_counts(normalize=True)
                fake_share = fake_attributes[column].astype(str).value_counts(normalize=True)
                joined = pd.concat([real_share, fake_share], axis=1).fillna(0.0)
                marginals[column] = round(float(0.5 * np.abs(joined.iloc[:, 0] - joined.iloc[:, 1]).sum()), 4)

    fidelity = {
        "real_users": len(real_users),
        "synthetic_users": len(fake_users),
        "synthetic_interactions": len(synthetic),
        "item_popularity_jensen_shannon": round(_jensen_shannon(p, q), 4),
        "item_popularity_total_variation": round(float(0.5 * np.abs(p - q).sum()), 4),
        "item_popularity_spearman": round(float(stats.spearmanr(real_counts, fake_counts).statistic), 4),
        "items_never_generated": int(np.count_nonzero((fake_counts == 0) & (real_counts > 0))),
        f"co_occurrence_pearson_top{len(top)}": round(float(np.corrcoef(real_co[upper], fake_co[upper])[0, 1]), 4),
        "history_length_ks": round(float(stats.ks_2samp(real_lengths, fake_lengths).statistic), 4),
        "history_length_median": {"real": float(np.median(real_lengths)), "synthetic": float(np.median(fake_lengths))},
        "attribute_marginals_total_variation": marginals,
    }
    return {
        "fidelity": fidelity,
        "utility": _train_synthetic_test_real(synthetic, train, full_train, test, synthesis),
        "privacy": _privacy(real_matrix, fake_matrix, seed),
    }


def _train_synthetic_test_real(
    synthetic: pd.DataFrame, train: pd.DataFrame, full_train: pd.DataFrame, test: pd.DataFrame, synthesis: Synthesis
) -> dict[str, Any]:
    """The same item-kNN fitted on the real reference and on as many synthetic interactions; each test user
    is scored from their whole training history."""
    workflow = synthesis.workflow
    n_items = workflow.items.size
    ordered = full_train.sort_values(["user_id", "timestamp"], kind="stable")
    histories = {u: workflow.items.encode(g["item_id"].to_numpy()) for u, g in ordered.groupby("user_id", sort=False)}
    targets = workflow.items.encode(test["item_id"].to_numpy())
    result: dict[str, Any] = {"model": "item_knn", "test_users": len(test)}
    for name, data in (("train_on_real", train), ("train_on_synthetic", synthetic)):
        _, user_index = np.unique(data["user_id"].to_numpy(), return_inverse=True)
        model = ItemKNN.fit(
            user_index,
            workflow.items.encode(data["item_id"].to_numpy()),
            int(user_index.max()) + 1,
            n_items,
            KNN_NEIGHBOURS,
            KNN_SHRINKAGE,
            KNN_DECAY,
        )
        lists = []
        for user in test["user_id"]:
            seen = histories.get(user, np.zeros(0, np.int32))
            lists.append(top_n(model.score(seen[-50:]), 10, seen))
        result[name] = hit_rate_ndcg(lists, targets, 10)
    real_hr = result["train_on_real"]["HR@10"]
    result["hr10_ratio"] = round(result["train_on_synthetic"]["HR@10"] / real_hr, 4) if real_hr else None
    return result


def _privacy(real: sp.csr_matrix, synthetic: sp.csr_matrix, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    holdout = rng.random(real.shape[0]) < HOLDOUT_SHARE
    reference = real[~holdout]
    real_keys = {item_set_key(real[i].indices) for i in range(real.shape[0])}
    copies = sum(item_set_key(synthetic[i].indices) in real_keys for i in range(synthetic.shape[0]))
    synthetic_dcr = _closest_jaccard(synthetic, reference)
    holdout_dcr = _closest_jaccard(real[holdout], reference)
    fifth = float(np.percentile(holdout_dcr, 5)) if len(holdout_dcr) else 0.0
    return {
        "synthetic_users_equal_to_a_training_user": int(copies),
        "distance_to_closest_record_median": {
            "synthetic": round(float(np.median(synthetic_dcr)), 4),
            "real_holdout": round(float(np.median(holdout_dcr)), 4),
        },
        "synthetic_closer_than_the_holdout_5th_percentile": round(float(np.mean(synthetic_dcr < fifth)), 4),
    }
