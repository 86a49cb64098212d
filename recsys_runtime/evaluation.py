"""Offline metrics on a leave-last-out holdout: HR@k and NDCG@k over full rankings."""

from __future__ import annotations

import numpy as np
import pandas as pd


def hit_rate_ndcg(ranked: list[np.ndarray], targets: np.ndarray, k: int) -> dict[str, float]:
    """Averages over users of HR@k and NDCG@k for one held-out target each."""
    hits = ndcg = 0.0
    for items, target in zip(ranked, targets, strict=True):
        positions = np.flatnonzero(items[:k] == target)
        if len(positions):
            hits += 1.0
            ndcg += 1.0 / np.log2(positions[0] + 2.0)
    n = max(len(targets), 1)
    return {f"HR@{k}": hits / n, f"NDCG@{k}": ndcg / n}


def leave_last_out(encoded: pd.DataFrame, max_users: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the latest interaction of up to max_users users with at least 3 interactions.

    `encoded` is sorted by user then time; returns (training rows, held-out rows).
    """
    sizes = encoded.groupby("user_index")["item_index"].transform("size")
    eligible = encoded.loc[(sizes >= 3) & (encoded["user_index"] > 0), "user_index"].unique()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=min(max_users, len(eligible)), replace=False)
    last_rows = encoded[encoded["user_index"].isin(chosen)].groupby("user_index").tail(1)
    return encoded.drop(index=last_rows.index), last_rows


def histories_by_user(encoded: pd.DataFrame) -> dict[int, np.ndarray]:
    """Item indices per user, oldest first (encoded is sorted by user then time)."""
    users = encoded["user_index"].to_numpy()
    items = encoded["item_index"].to_numpy()
    bounds = np.flatnonzero(np.diff(users)) + 1
    starts = np.concatenate([[0], bounds])
    return {int(users[s]): chunk for s, chunk in zip(starts, np.split(items, bounds), strict=True)}
