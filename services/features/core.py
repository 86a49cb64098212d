"""User contexts and item encodings: the artefact's training histories plus recorded events, encoded by
the trainer's fitted workflow (the same code the trainer uses offline)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_runtime.attributes import EncodedAttributes
from recsys_runtime.layout import CATALOG_DIR, HISTORIES_FILE, WORKFLOW_DIR
from recsys_runtime.sequences import EncodedSequences
from recsys_runtime.workflow import Workflow
from services.common.errors import Unavailable, Violations
from services.common.logs import Throttled
from services.common.validation import EventInput, check_attributes, check_id, validate_events
from services.features.adapters import EventStore

log = logging.getLogger(__name__)
# Every request hits the same store outage: one line per interval, with the count held back.
_STORE_UNREADABLE = Throttled(log)

MAX_ITEMS_PER_ENCODE = 1000


@dataclass(frozen=True)
class History:
    item_ids: np.ndarray  # object (str), oldest first
    timestamps: np.ndarray  # int64
    seen_item_ids: list[str]  # each item once, in order of first interaction
    seen_item_indices: np.ndarray  # int32, their indices in the workflow's vocabulary


@dataclass
class UserContext:
    user_id: str
    known_user: bool
    item_ids: list[str]  # oldest first, at most max_history
    item_indices: list[int]  # their indices in the workflow's vocabulary (0: out of it)
    timestamps: list[int]
    attributes: dict[str, str]
    seen_item_ids: list[str]
    seen_item_indices: np.ndarray  # int32, one per seen id (0: out of the vocabulary)
    artifact_version: str
    # The model inputs, one row each; None when the caller did not ask for them.
    sequence: EncodedSequences | None
    encoded_attributes: EncodedAttributes | None
    # The recorded events could not be read: the context holds the artefact's training history only.
    online_state_missing: bool


@dataclass
class EncodedItem:
    item_id: str
    item_index: int
    attributes: EncodedAttributes  # one row


_NO_HISTORY = History(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int32))


def load_histories(path: Path, workflow: Workflow) -> dict[str, History]:
    """Every user's training history, with the seen items deduplicated and encoded once, here: a request of a
    user without recorded events then encodes only the few items its sequence keeps."""
    frame = pd.read_parquet(path)
    users = frame["user_id"].astype(str).to_numpy()
    # One str object per distinct item, shared by every row that holds it: at 10M rows, 10M separate strings
    # would be most of the service's memory.
    codes, distinct = pd.factorize(frame["item_id"].astype(str))
    items = distinct.to_numpy(dtype=object)[codes]
    timestamps = frame["timestamp"].to_numpy(np.int64)
    indices = workflow.items.encode(items)
    # A user's first interaction with each item, in one pass over all rows.
    first = ~pd.DataFrame({"user": users, "item": items}).duplicated().to_numpy()
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds]).astype(int)
    ends = np.concatenate([bounds, [len(users)]]).astype(int)
    histories = {}
    for start, end in zip(starts, ends, strict=True):
        keep = first[start:end]
        histories[str(users[start])] = History(
            items[start:end], timestamps[start:end], items[start:end][keep].tolist(), indices[start:end][keep]
        )
    return histories


def load_attributes(path: Path, key: str) -> dict[str, dict[str, str]]:
    frame = pd.read_parquet(path).astype(str)
    columns = [c for c in frame.columns if c != key]
    return {row[0]: dict(zip(columns, row[1:], strict=True)) for row in frame[[key, *columns]].itertuples(index=False)}


class FeatureCore:
    def __init__(self, version_dir: Path, version: str, store: EventStore, max_events: int) -> None:
        self.workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        self.histories = load_histories(version_dir / HISTORIES_FILE, self.workflow)
        self.user_attributes = load_attributes(version_dir / CATALOG_DIR / "users.parquet", "user_id")
        self.version = version
        self.store = store
        self.max_events = max_events

    def merged_history(self, user_id: str, recorded: Sequence[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Training history and recorded events, time-ordered (ties: training first, then arrival):
        item ids (object array) and timestamps (int64)."""
        base = self.histories.get(user_id, _NO_HISTORY)
        if not recorded:
            return base.item_ids, base.timestamps
        items = np.concatenate([base.item_ids, np.array([item for item, _ in recorded], dtype=object)])
        times = np.concatenate([base.timestamps, np.array([ts for _, ts in recorded], dtype=np.int64)])
        order = np.argsort(times, kind="stable")
        return items[order], times[order]

    async def user_context(self, user_id: str, attributes: Mapping[str, str], model_inputs: bool = True) -> UserContext:
        """The user's context; the model inputs (sequence, encoded attributes) only when asked for, since the
        request path's stages read the history's indices instead."""
        violations = Violations()
        check_id(violations, "user_id", user_id)
        check_attributes(violations, "attributes", attributes)
        violations.raise_if_any()

        try:
            recorded = await self.store.events_for(user_id)
            online_state_missing = False
        except Unavailable as error:
            # A recommendation from the training history beats none; the reply says what it lacks.
            _STORE_UNREADABLE.warning(
                "recorded events unreadable: context from the artefact alone", error=error.message
            )
            recorded, online_state_missing = [], True
        items, times = self.merged_history(user_id, recorded)
        if recorded:
            seen_ids = list(dict.fromkeys(items.tolist()))
            seen_indices = self.workflow.items.encode(seen_ids)
        else:
            base = self.histories.get(user_id, _NO_HISTORY)
            seen_ids, seen_indices = base.seen_item_ids, base.seen_item_indices
        merged_attributes = {**self.user_attributes.get(user_id, {}), **attributes}
        keep = self.workflow.max_history
        kept = items[-keep:].tolist()
        sequence = self.workflow.encode_history(kept, times) if model_inputs else None
        if sequence is not None:
            indices = sequence.item_indices[0, keep - len(kept) :]
        else:
            indices = self.workflow.items.encode(kept) if kept else np.zeros(0, np.int32)
        return UserContext(
            user_id=user_id,
            known_user=user_id in self.histories or bool(recorded),
            item_ids=kept,
            item_indices=indices.tolist(),
            timestamps=times[-keep:].tolist(),
            attributes=merged_attributes,
            seen_item_ids=seen_ids,
            seen_item_indices=seen_indices,
            artifact_version=self.version,
            sequence=sequence,
            encoded_attributes=(
                self.workflow.user_attributes.encode_rows([merged_attributes]) if model_inputs else None
            ),
            online_state_missing=online_state_missing,
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
