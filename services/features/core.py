"""User contexts and item encodings: the artefact's training histories plus recorded events, encoded by
the trainer's fitted workflow (the same code the trainer uses offline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from services.common.errors import Violations
from services.common.validation import EventInput, check_attributes, check_id, validate_events
from services.features.adapters import EventStore
from trainer.attributes import EncodedAttributes
from trainer.layout import CATALOG_DIR, HISTORIES_FILE, WORKFLOW_DIR
from trainer.sequences import EncodedSequences
from trainer.workflow import Workflow

MAX_ITEMS_PER_ENCODE = 1000


@dataclass(frozen=True)
class History:
    item_ids: np.ndarray  # object (str), oldest first
    timestamps: np.ndarray  # int64


@dataclass
class UserContext:
    user_id: str
    known_user: bool
    item_ids: list[str]  # oldest first, at most max_history
    timestamps: list[int]
    attributes: dict[str, str]
    seen_item_ids: list[str]
    sequence: EncodedSequences  # one row
    encoded_attributes: EncodedAttributes  # one row
    artifact_version: str


@dataclass
class EncodedItem:
    item_id: str
    item_index: int
    attributes: EncodedAttributes  # one row


def load_histories(path: Path) -> dict[str, History]:
    frame = pd.read_parquet(path)
    users = frame["user_id"].astype(str).to_numpy()
    items = frame["item_id"].astype(str).to_numpy(dtype=object)
    timestamps = frame["timestamp"].to_numpy(np.int64)
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds]).astype(int)
    ends = np.concatenate([bounds, [len(users)]]).astype(int)
    return {str(users[s]): History(items[s:e], timestamps[s:e]) for s, e in zip(starts, ends, strict=True)}


def load_attributes(path: Path, key: str) -> dict[str, dict[str, str]]:
    frame = pd.read_parquet(path).astype(str)
    columns = [c for c in frame.columns if c != key]
    return {row[0]: dict(zip(columns, row[1:], strict=True)) for row in frame[[key, *columns]].itertuples(index=False)}


class FeatureCore:
    def __init__(self, version_dir: Path, version: str, store: EventStore, max_events: int) -> None:
        self.workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        self.histories = load_histories(version_dir / HISTORIES_FILE)
        self.user_attributes = load_attributes(version_dir / CATALOG_DIR / "users.parquet", "user_id")
        self.version = version
        self.store = store
        self.max_events = max_events

    def merged_history(self, user_id: str, recorded: Sequence[tuple[str, int]]) -> tuple[list[str], list[int]]:
        """Training history and recorded events, time-ordered (ties: training first, then arrival)."""
        base = self.histories.get(user_id)
        items = list(base.item_ids) if base is not None else []
        times = [int(t) for t in base.timestamps] if base is not None else []
        if recorded:
            items += [item for item, _ in recorded]
            times += [ts for _, ts in recorded]
            order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
            items = [items[i] for i in order]
            times = [times[i] for i in order]
        return items, times

    async def user_context(self, user_id: str, attributes: Mapping[str, str]) -> UserContext:
        violations = Violations()
        check_id(violations, "user_id", user_id)
        check_attributes(violations, "attributes", attributes)
        violations.raise_if_any()

        recorded = await self.store.events_for(user_id)
        items, times = self.merged_history(user_id, recorded)
        merged_attributes = {**self.user_attributes.get(user_id, {}), **attributes}
        keep = self.workflow.max_history
        return UserContext(
            user_id=user_id,
            known_user=user_id in self.histories or bool(recorded),
            item_ids=items[-keep:],
            timestamps=times[-keep:],
            attributes=merged_attributes,
            seen_item_ids=list(dict.fromkeys(items)),
            sequence=self.workflow.encode_history(items, times),
            encoded_attributes=self.workflow.user_attributes.encode_rows([merged_attributes]),
            artifact_version=self.version,
        )

    async def record(self, events: Sequence[EventInput]) -> tuple[int, int]:
        validate_events(events, self.max_events)
        return await self.store.append(events)

    def encode_items(self, items: Sequence[tuple[str, Mapping[str, str]]]) -> list[EncodedItem]:
        violations = Violations()
        violations.check(0 < len(items) <= MAX_ITEMS_PER_ENCODE, "items", f"must hold 1..{MAX_ITEMS_PER_ENCODE} items")
        for i, (item_id, attributes) in enumerate(items):
            check_id(violations, f"items[{i}].item_id", item_id)
            check_attributes(violations, f"items[{i}].attributes", attributes)
        violations.raise_if_any()
        encoded = self.workflow.item_attributes.encode_rows([attributes for _, attributes in items])
        indices = self.workflow.items.encode([item_id for item_id, _ in items])
        return [EncodedItem(item_id, int(indices[i]), encoded.row(i)) for i, (item_id, _) in enumerate(items)]
