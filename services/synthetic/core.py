"""Synthetic data and cold start from the artefact's conditional GANs (recsys_runtime.synthesis). An artefact
without generators says so: nothing here stands in for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys_runtime.layout import WORKFLOW_DIR
from recsys_runtime.synthesis import GAN_DIR, Synthesis
from recsys_runtime.workflow import Workflow
from services.common.errors import DeadlineExceeded, FailedPrecondition, Violations
from services.common.item_registry import ItemRegistry, RegisteredItem
from services.common.validation import MAX_ITEMS_PER_REGISTRATION, check_attributes, check_id, validate_items

DEFAULT_CHUNK = 1000
MAX_HISTORY_LENGTH = 1000

# (users, items, interactions) of one streamed chunk
Chunk = tuple[list[tuple[str, dict[str, str]]], list[tuple[str, dict[str, str]]], list[tuple[str, str, int]]]


@dataclass(frozen=True)
class SyntheticQuery:
    """One GenerateSynthetic request, decoded and checked (services.common.encoding.validate_synthetic_request)."""

    kind: str  # "users", "items" or "interactions"
    count: int
    seed: int
    conditions: Mapping[str, str]  # copied into every generated row
    chunk_size: int  # rows per message; 0: as many as fit, at most DEFAULT_CHUNK


def chunk_rows(requested: int, row_bytes: int, max_message_bytes: int) -> int:
    """Rows per streamed message, so that `row_bytes` (a bound on one row's share of a message) times the rows
    fits `max_message_bytes`: the requested number when it fits (refused otherwise), DEFAULT_CHUNK for 0, cut
    to what fits."""
    fit = max_message_bytes // row_bytes
    violations = Violations()
    if fit == 0:
        violations.add(
            "conditions",
            f"one generated row (its sampled attributes and these conditions) can take {row_bytes} bytes, over "
            f"the {max_message_bytes}-byte message limit",
        )
    elif requested > fit:
        violations.add(
            "chunk_size",
            f"at most {fit} rows fit one {max_message_bytes}-byte message with these conditions (up to "
            f"{row_bytes} bytes a row), got {requested}",
        )
    violations.raise_if_any()
    return requested or min(DEFAULT_CHUNK, fit)


class SyntheticCore:
    def __init__(self, version_dir: Path, version: str, registry: ItemRegistry) -> None:
        self.version = version
        self.registry = registry
        self.synthesis: Synthesis | None = None
        if (version_dir / GAN_DIR).is_dir():
            self.synthesis = Synthesis.load(version_dir / GAN_DIR, Workflow.load(version_dir / WORKFLOW_DIR))

    def require_generator(self) -> Synthesis:
        """Refuse plainly when the artefact was trained without generators ([gan] enabled = false)."""
        if self.synthesis is None:
            raise FailedPrecondition(
                f"artefact version {self.version} has no synthetic-data generator (no {GAN_DIR}/; "
                "trained with [gan] enabled = false)"
            )
        return self.synthesis

    async def cold_history(
        self, user_id: str, attributes: Mapping[str, str], length: int
    ) -> list[tuple[str, int, float]]:
        """(item id, item index, expected probability), oldest first."""
        # The generator runs off the event loop: health checks and other calls go on meanwhile.
        return await asyncio.to_thread(self._cold_history, user_id, attributes, length)

    def _cold_history(self, user_id: str, attributes: Mapping[str, str], length: int) -> list[tuple[str, int, float]]:
        violations = Violations()
        check_id(violations, "user_id", user_id)
        check_attributes(violations, "attributes", attributes)
        violations.check(0 <= length <= MAX_HISTORY_LENGTH, "length", f"must be in 0..{MAX_HISTORY_LENGTH}")
        violations.raise_if_any()
        synthesis = self.require_generator()
        indices, weights = synthesis.cold_history(user_id, attributes, length)
        item_ids = [str(i) for i in synthesis.workflow.items.decode(indices)]
        return list(zip(item_ids, indices.tolist(), weights.tolist(), strict=True))

    async def register(self, items: Sequence[tuple[str, dict[str, str]]]) -> int:
        """New items get a collaborative vector from the item generator and go to the registry, where the
        candidate services pick them up. Items the artefact already knows, or already registered, are not
        registered again. Returns how many were new."""
        validate_items(items)
        synthesis = self.require_generator()
        if synthesis.items is None:
            raise FailedPrecondition(
                f"artefact version {self.version} has no item generator (trained without item attributes, or "
                "with a candidate model that has no item vectors)"
            )
        fresh = [
            (item_id, attributes) for item_id, attributes in items if not synthesis.workflow.items.contains(item_id)
        ]
        if not fresh:
            return 0
        vectors = await asyncio.to_thread(synthesis.item_vectors, [a for _, a in fresh], [i for i, _ in fresh])
        registered = [RegisteredItem(i, a, v) for (i, a), v in zip(fresh, vectors, strict=True)]
        return await self.registry.add(self.version, registered)

    async def backfill(self) -> int:
        """Items registered under other artefact versions get vectors from this version's generator (the
        vector space changes with every training)."""
        if self.synthesis is None or self.synthesis.items is None:
            return 0
        everything = await self.registry.attributes()
        mine, _ = await self.registry.since(self.version, 0)
        have = {item.item_id for item in mine}
        missing = [(item_id, attributes) for item_id, attributes in everything.items() if item_id not in have]
        added = 0
        for start in range(0, len(missing), MAX_ITEMS_PER_REGISTRATION):
            added += await self.register(missing[start : start + MAX_ITEMS_PER_REGISTRATION])
        return added

    async def stream(
        self,
        query: SyntheticQuery,
        encoded_size: Callable[[Chunk], int],
        max_message_bytes: int,
        max_stream_s: float,
    ) -> AsyncGenerator[Chunk, None]:
        """The rows asked for, in chunks that each fit one message of max_message_bytes (`encoded_size`: a
        chunk's size as sent); DeadlineExceeded once the stream has run max_stream_s, whatever the caller's
        deadline (or none)."""
        # The widest row's encoded size bounds every row's, so `rows` of them always fit one message.
        row_bytes = encoded_size(self.widest_chunk(query.kind, query.count, query.seed, query.conditions))
        rows = chunk_rows(query.chunk_size, row_bytes, max_message_bytes)
        # The chunks are generated off the event loop, one at a time, so a slow reader holds back generation
        # instead of piling rows up in memory.
        chunks = self.generate(query.kind, query.count, query.seed, query.conditions, rows)
        ends = time.monotonic() + max_stream_s
        sent = 0
        while True:
            remaining = ends - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(asyncio.to_thread(next, chunks, None), remaining)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"GenerateSynthetic stopped at its maximum duration of {max_stream_s:g} s after "
                    f"{sent} messages; ask for fewer rows per call"
                ) from None
            if chunk is None:
                return
            yield chunk
            sent += 1

    def widest_chunk(self, kind: str, count: int, seed: int, conditions: Mapping[str, str]) -> Chunk:
        """One row at least as large, field by field, as any that generate() makes for the same request (for
        interactions, with a user: a chunk never holds more users than interactions)."""
        synthesis = self.require_generator()
        if kind == "interactions":
            return (
                [synthesis.widest_entity("users", count, seed, conditions)],
                [],
                [synthesis.widest_interaction(count, seed)],
            )
        entity = synthesis.widest_entity(kind, count, seed, conditions)
        return ([entity], [], []) if kind == "users" else ([], [entity], [])

    def generate(self, kind: str, count: int, seed: int, conditions: Mapping[str, str], chunk: int) -> Iterator[Chunk]:
        """Chunks of at most `chunk` rows (interactions come with the users they belong to)."""
        synthesis = self.require_generator()
        if kind == "users":
            for users in synthesis.generate_users(count, seed, conditions, chunk):
                yield users, [], []
        elif kind == "items":
            for items in synthesis.generate_items(count, seed, conditions, chunk):
                yield [], items, []
        else:
            for users, rows in synthesis.generate_interactions(count, seed, conditions, chunk):
                yield users, [], rows
