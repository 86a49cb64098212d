"""Fitting what the synthetic service serves (recsys_runtime.synthesis.Synthesis): the conditional GANs
(trainer.models.gan) on users' interactions and items' collaborative vectors, and the training data's
marginals and distributions the synthetic rows are drawn from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_runtime.attributes import AttributeEncoder
from recsys_runtime.synthesis import Synthesis, item_set_key
from recsys_runtime.workflow import Workflow
from trainer.models.gan import train_conditional_wgan
from trainer.progress import SILENT, TrainingProgress

QUANTILES = 101
# Attribute values kept per column for sampling (the rest are rare; they are dropped, not invented).
MAX_VALUES_PER_COLUMN = 1000


def _marginals(table: pd.DataFrame | None, encoder: AttributeEncoder) -> dict[str, dict[str, list[Any]]]:
    """Per non-text column: its values and their frequencies in the training table."""
    out: dict[str, dict[str, list[Any]]] = {}
    if table is None:
        return out
    for column in encoder.columns:
        if column.kind == "text" or column.name not in table.columns:
            continue
        counts = table[column.name].fillna("").astype(str).value_counts().head(MAX_VALUES_PER_COLUMN)
        counts = counts[counts.index != ""]
        if len(counts):
            out[column.name] = {"values": counts.index.tolist(), "weights": (counts / counts.sum()).tolist()}
    return out


def fit_synthesis(
    encoded: pd.DataFrame,
    workflow: Workflow,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    item_targets: np.ndarray | None,
    config: dict[str, Any],
    seed: int,
    progress: TrainingProgress = SILENT,
) -> Synthesis:
    """Train the user generator on (user attributes, multi-hot interactions) and, given the candidate model's
    item vectors (item_targets, one row per item index), the item generator on warm items' (attributes,
    vector) pairs. encoded: the workflow-encoded interactions (user_index, item_index, timestamp)."""
    n_users, n_items = workflow.users.size, workflow.items.size
    user_rows = np.unique(encoded["user_index"].to_numpy())
    user_rows = user_rows[user_rows > 0]
    # Sparse: users x items dense would not fit at catalogue scale; the GAN densifies one batch at a time.
    interactions = _interaction_matrix(encoded, n_users, n_items)
    conditions = workflow.user_attributes.sparse_table(users, workflow.users.ids)
    generator, user_curves = train_conditional_wgan(
        conditions[user_rows],
        interactions[user_rows],
        config,
        seed,
        "sigmoid",
        progress=progress,
        task="user generator updates",
    )
    curves = {"users": user_curves.to_json()}

    item_generator = None
    if item_targets is not None and items is not None and workflow.item_attributes.columns:
        item_conditions = workflow.item_attributes.sparse_table(items, workflow.items.ids)
        counts = np.bincount(interactions.indices, minlength=n_items)  # users per item
        warm = np.flatnonzero(counts > 0)
        warm = warm[warm > 0]
        item_config = {**config, "steps": config["item_steps"]}
        item_generator, item_curves = train_conditional_wgan(
            item_conditions[warm],
            item_targets[warm],
            item_config,
            seed + 1,
            "linear",
            reconstruction_weight=float(config["item_reconstruction"]),
            row_weights=counts[warm].astype(np.float64) ** float(config["item_popularity_exponent"]),
            progress=progress,
            task="item generator updates",
        )
        curves["items"] = item_curves.to_json()

    ordered = encoded.sort_values(["user_index", "timestamp"], kind="stable")
    per_user = ordered.groupby("user_index", sort=False)
    lengths = per_user.size().to_numpy()
    firsts = per_user["timestamp"].min().to_numpy()
    gaps = per_user["timestamp"].diff().dropna().to_numpy()
    levels = np.linspace(0.0, 1.0, QUANTILES)
    return Synthesis(
        workflow,
        generator,
        item_generator,
        _marginals(users, workflow.user_attributes),
        _marginals(items, workflow.item_attributes),
        np.quantile(lengths, levels),
        np.quantile(firsts, levels),
        np.quantile(gaps, levels) if len(gaps) else np.zeros(QUANTILES),
        int(config["samples"]),
        int(config["cold_history"]),
        curves,
        {item_set_key(interactions.indices[interactions.indptr[u] : interactions.indptr[u + 1]]) for u in user_rows},
    )


def _interaction_matrix(encoded: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary users x items CSR matrix, repeated interactions counted once (canonical: sorted, no duplicates)."""
    ones = np.ones(len(encoded), dtype=np.float32)
    cells = (encoded["user_index"].to_numpy(), encoded["item_index"].to_numpy())
    matrix = sp.csr_matrix(sp.coo_matrix((ones, cells), shape=(n_users, n_items)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
