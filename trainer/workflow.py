"""The fitted preprocessing workflow: how raw ids become model indices, the same offline and online.

Pure pandas/numpy (no TensorFlow), so the features service imports it without pulling TF in.
Persisted as JSON + Parquet, never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
# Index 0 of every vocabulary is the out-of-vocabulary bucket.
OOV_INDEX = 0


@dataclass
class Vocabulary:
    """Client ids in index order; index i + 1 is ids[i], 0 is out-of-vocabulary."""

    ids: pd.Index

    @classmethod
    def fit(cls, values: pd.Series, min_count: int) -> Vocabulary:
        counts = values.value_counts(sort=False)
        kept = counts[counts >= min_count].index.astype(str)
        # Sorted by id, so the same ids get the same indices on every retrain.
        return cls(pd.Index(sorted(kept), dtype=object))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        """Number of indices including the OOV bucket."""
        return len(self.ids) + 1

    def encode(self, values: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
        positions = self.ids.get_indexer(pd.Index(values, dtype=object))
        return (positions + 1).astype(np.int32)  # -1 (unknown) becomes 0 (OOV)

    def decode(self, indices: np.ndarray) -> np.ndarray:
        if np.any(indices <= OOV_INDEX):
            raise ValueError("cannot decode the out-of-vocabulary index")
        return self.ids.to_numpy()[indices - 1]

    def contains(self, value: str) -> bool:
        return value in self.ids


@dataclass
class Workflow:
    users: Vocabulary
    items: Vocabulary
    max_history: int

    @classmethod
    def fit(
        cls, interactions: pd.DataFrame, max_history: int, min_user_count: int = 1, min_item_count: int = 1
    ) -> Workflow:
        return cls(
            users=Vocabulary.fit(interactions["user_id"], min_user_count),
            items=Vocabulary.fit(interactions["item_id"], min_item_count),
            max_history=max_history,
        )

    def encode_interactions(self, interactions: pd.DataFrame) -> pd.DataFrame:
        """Indices for the models, rows in time order within each user (ties keep file order)."""
        frame = pd.DataFrame(
            {
                "user_index": self.users.encode(interactions["user_id"].to_numpy()),
                "item_index": self.items.encode(interactions["item_id"].to_numpy()),
                "timestamp": interactions["timestamp"].to_numpy(np.int64),
            }
        )
        return frame.sort_values(["user_index", "timestamp"], kind="stable").reset_index(drop=True)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"user_id": self.users.ids}).to_parquet(directory / "users.parquet", index=False)
        pd.DataFrame({"item_id": self.items.ids}).to_parquet(directory / "items.parquet", index=False)
        meta = {
            "format": FORMAT_VERSION,
            "max_history": self.max_history,
            "oov_index": OOV_INDEX,
            "users": len(self.users),
            "items": len(self.items),
        }
        (directory / "workflow.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> Workflow:
        meta = json.loads((directory / "workflow.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{directory}: workflow format {meta.get('format')} is not {FORMAT_VERSION}")
        users = pd.read_parquet(directory / "users.parquet")["user_id"].astype(str)
        items = pd.read_parquet(directory / "items.parquet")["item_id"].astype(str)
        return cls(
            Vocabulary(pd.Index(users, dtype=object)),
            Vocabulary(pd.Index(items, dtype=object)),
            int(meta["max_history"]),
        )
