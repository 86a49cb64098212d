"""User contexts: the artefact's training histories plus recorded events, encoded by the fitted workflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from services.common.errors import Violations
from services.common.validation import EventInput, check_attributes, check_id, validate_events
from services.features.adapters import SQLiteEventStore
from trainer.layout import CATALOG_DIR, HISTORIES_FILE, WORKFLOW_DIR
from trainer.workflow import Workflow


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
    item_indices: list[int]
    attributes: dict[str, str]
    seen_item_ids: list[str]
    artifact_version: str = field(default="")


def load_histories(path: Path) -> dict[str, History]:
    frame = pd.read_parquet(path)
    users = frame["user_id"].astype(str).to_numpy()
    items = frame["item_id"].astype(str).to_numpy(dtype=object)
    timestamps = frame["timestamp"].to_numpy(np.int64)
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds]).astype(int)
    ends = np.concatenate([bounds, [len(users)]]).astype(int)
    return {str(users[s]): History(items[s:e], timestamps[s:e]) for s, e in zip(starts, ends, strict=True)}


def load_user_attributes(path: Path) -> dict[str, dict[str, str]]:
    frame = pd.read_parquet(path).astype(str)
    columns = [c for c in frame.columns if c != "user_id"]
    return {row[0]: dict(zip(columns, row[1:], strict=True)) for row in frame.itertuples(index=False)}


class FeatureCore:
    def __init__(self, version_dir: Path, version: str, store: SQLiteEventStore, max_events: int) -> None:
        self.workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        self.histories = load_histories(version_dir / HISTORIES_FILE)
        self.user_attributes = load_user_attributes(version_dir / CATALOG_DIR / "users.parquet")
        self.version = version
        self.store = store
        self.max_events = max_events

    async def user_context(self, user_id: str, attributes: Mapping[str, str]) -> UserContext:
        violations = Violations()
        check_id(violations, "user_id", user_id)
        check_attributes(violations, "attributes", attributes)
        violations.raise_if_any()

        base = self.histories.get(user_id)
        recorded = await self.store.events_for(user_id)
        items = list(base.item_ids) if base is not None else []
        times = list(base.timestamps) if base is not None else []
        if recorded:
            items += [item for item, _ in recorded]
            times += [ts for _, ts in recorded]
            order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
            items = [items[i] for i in order]
            times = [int(times[i]) for i in order]
        recent_items = items[-self.workflow.max_history :]
        merged_attributes = {**self.user_attributes.get(user_id, {}), **attributes}
        return UserContext(
            user_id=user_id,
            known_user=base is not None or bool(recorded),
            item_ids=recent_items,
            timestamps=[int(t) for t in times[-self.workflow.max_history :]],
            item_indices=self.workflow.items.encode(recent_items).tolist() if recent_items else [],
            attributes=merged_attributes,
            seen_item_ids=list(dict.fromkeys(items)),
            artifact_version=self.version,
        )

    async def record(self, events: Sequence[EventInput]) -> tuple[int, int]:
        validate_events(events, self.max_events)
        return await self.store.append(events)
