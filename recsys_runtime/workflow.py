"""The fitted preprocessing workflow: how raw ids become model indices, the same offline and online.

Pure pandas/numpy (no TensorFlow), so the features service imports it without pulling TF in.
Persisted as JSON + Parquet, never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_runtime.attributes import AttributeEncoder
from recsys_runtime.sequences import EncodedSequences, encode_sequence, encode_sequences

FORMAT_VERSION = 2
# Index 0 of every vocabulary is the out-of-vocabulary bucket.
OOV_INDEX = 0
# Up to this many ids, encode looks each up in a dict; past it, pandas matches them in bulk.
SMALL_ENCODE = 1000
# The dict costs about 70 bytes per id beside the vocabulary's own index: larger catalogues keep to pandas.
DICT_LOOKUP_MAX_IDS = 1_000_000
DEFAULT_ATTRIBUTE_OPTIONS: dict[str, Any] = {
    "numeric_scaling": "zscore",
    "min_category_count": 1,
    "max_text_vocabulary": 5000,
    "max_tokens": 8,
    "attribute_kinds": {},
}


@dataclass
class Vocabulary:
    """Client ids in index order; index i + 1 is ids[i], 0 is out-of-vocabulary."""

    ids: pd.Index

    @classmethod
    def fit(
        cls, values: pd.Series, min_count: int, previous: Vocabulary | None = None, always: Sequence[str] = ()
    ) -> Vocabulary:
        """Ids seen at least min_count times, plus `always` (catalogue items without interactions), sorted.
        Given the previous version's vocabulary, every id it had keeps its index and new ids are appended,
        so indices are stable across retrains."""
        counts = values.value_counts(sort=False)
        kept = sorted(set(counts[counts >= min_count].index.astype(str)) | {str(v) for v in always})
        if previous is None:
            return cls(pd.Index(kept, dtype=object))
        new = [v for v in kept if v not in previous.ids]
        return cls(pd.Index([*previous.ids, *new], dtype=object))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        """Number of indices including the OOV bucket."""
        return len(self.ids) + 1

    def encode(self, values: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
        if len(values) <= SMALL_ENCODE and len(self.ids) <= DICT_LOOKUP_MAX_IDS:
            # A request's few ids: a dict lookup each costs less than building a pandas Index for them.
            lookup = self._lookup
            return np.fromiter((lookup.get(v, OOV_INDEX) for v in values), np.int32, len(values))
        positions = self.ids.get_indexer(pd.Index(values, dtype=object))
        return (positions + 1).astype(np.int32)  # -1 (unknown) becomes 0 (OOV)

    @cached_property
    def _lookup(self) -> dict[str, int]:
        return {item_id: index for index, item_id in enumerate(self.ids, start=1)}

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
    user_attributes: AttributeEncoder = field(default_factory=lambda: AttributeEncoder("user_id", []))
    item_attributes: AttributeEncoder = field(default_factory=lambda: AttributeEncoder("item_id", []))

    @classmethod
    def fit(
        cls,
        interactions: pd.DataFrame,
        max_history: int,
        min_user_count: int = 1,
        min_item_count: int = 1,
        *,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        options: Mapping[str, Any] | None = None,
        previous: Workflow | None = None,
    ) -> Workflow:
        options = {**DEFAULT_ATTRIBUTE_OPTIONS, **(options or {})}
        kinds = options.get("attribute_kinds", {})
        return cls(
            users=Vocabulary.fit(interactions["user_id"], min_user_count, previous.users if previous else None),
            items=Vocabulary.fit(
                interactions["item_id"],
                min_item_count,
                previous.items if previous else None,
                always=[str(v) for v in items["item_id"]] if items is not None else (),
            ),
            max_history=max_history,
            user_attributes=AttributeEncoder.fit(users, "user_id", kinds, options),
            item_attributes=AttributeEncoder.fit(items, "item_id", kinds, options),
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

    def encode_history(self, item_ids: Sequence[str], timestamps: Sequence[int] | np.ndarray) -> EncodedSequences:
        """One user's time-ordered history (oldest first) as model input: the online path."""
        # Only the kept items are encoded, and one timestamp before them: the oldest kept item's gap.
        kept = list(item_ids[-self.max_history :])
        indices = self.items.encode(kept) if kept else np.zeros(0, dtype=np.int32)
        times = np.asarray(timestamps, dtype=np.int64)[-self.max_history - 1 :]
        return encode_sequence(indices, times, self.max_history)

    def encode_histories(self, interactions: pd.DataFrame) -> tuple[np.ndarray, EncodedSequences]:
        """Every user's history as model input, by user id: the offline path.

        Keyed by the client's user id (not the index), so users below min_user_count keep their own rows.
        """
        frame = interactions[["user_id", "item_id", "timestamp"]].copy()
        frame["_key"], user_ids = pd.factorize(frame["user_id"], sort=True)
        frame = frame.sort_values(["_key", "timestamp"], kind="stable")
        keyed = pd.DataFrame(
            {
                "user_index": frame["_key"].to_numpy(),
                "item_index": self.items.encode(frame["item_id"].to_numpy()),
                "timestamp": frame["timestamp"].to_numpy(np.int64),
            }
        )
        keys, sequences = encode_sequences(keyed, self.max_history)
        return np.asarray(user_ids, dtype=object)[keys], sequences

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
            "user_attributes": self.user_attributes.to_json(),
            "item_attributes": self.item_attributes.to_json(),
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
            AttributeEncoder.from_json(meta["user_attributes"]),
            AttributeEncoder.from_json(meta["item_attributes"]),
        )
