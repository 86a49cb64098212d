"""Items registered online (RegisterItems): their attributes, and per artefact version the collaborative
vector the item generator made for them. The synthetic service writes; the candidate services follow
what is new with a cursor, so an item is recommendable within a poll interval, on every replica, and
again after a restart. In SQLite (the state directory) or Redis, like the recorded events.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import redis.asyncio as redis_asyncio

from services.common.stores import SQLiteThread, StateSettings, open_redis, redis_failures


@dataclass(frozen=True)
class RegisteredItem:
    item_id: str
    attributes: dict[str, str]
    vector: np.ndarray  # float32, the candidate model's item vector for one artefact version


class ItemRegistry(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, version: str, items: Sequence[RegisteredItem]) -> int:
        """Store items for a version; an item already registered for it is kept as it was. Returns how many
        were new."""

    async def since(self, version: str, cursor: int) -> tuple[list[RegisteredItem], int]:
        """The version's items registered after `cursor` (0: all), in order, and the next cursor."""

    async def attributes(self) -> dict[str, dict[str, str]]:
        """Every registered item's attributes, whatever the version it was registered under."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def _vector(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").copy()


SCHEMA = """
CREATE TABLE IF NOT EXISTS registered_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    item_id TEXT NOT NULL,
    attributes TEXT NOT NULL,
    vector BLOB NOT NULL,
    registered_at REAL NOT NULL,
    UNIQUE (version, item_id)
);
"""


class SQLiteItemRegistry:
    def __init__(self, path: Path) -> None:
        self._sqlite = SQLiteThread(path, SCHEMA)

    async def open(self) -> None:
        await self._sqlite.open()

    async def close(self) -> None:
        await self._sqlite.close()

    @staticmethod
    def _add(db: sqlite3.Connection, version: str, items: Sequence[RegisteredItem]) -> int:
        now = time.time()
        db.execute("BEGIN")
        try:
            added = 0
            for item in items:
                added += db.execute(
                    "INSERT OR IGNORE INTO registered_items (version, item_id, attributes, vector, registered_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (version, item.item_id, json.dumps(item.attributes), _vector_bytes(item.vector), now),
                ).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return added

    async def add(self, version: str, items: Sequence[RegisteredItem]) -> int:
        return await self._sqlite.run(self._add, version, items)

    @staticmethod
    def _since(db: sqlite3.Connection, version: str, cursor: int) -> tuple[list[RegisteredItem], int]:
        rows = db.execute(
            "SELECT seq, item_id, attributes, vector FROM registered_items WHERE version = ? AND seq > ? ORDER BY seq",
            (version, cursor),
        ).fetchall()
        items = [RegisteredItem(str(i), json.loads(a), _vector(v)) for _, i, a, v in rows]
        return items, int(rows[-1][0]) if rows else cursor

    async def since(self, version: str, cursor: int) -> tuple[list[RegisteredItem], int]:
        return await self._sqlite.run(self._since, version, cursor)

    @staticmethod
    def _attributes(db: sqlite3.Connection) -> dict[str, dict[str, str]]:
        rows = db.execute("SELECT item_id, attributes FROM registered_items ORDER BY seq")
        return {str(item_id): json.loads(attributes) for item_id, attributes in rows}

    async def attributes(self) -> dict[str, dict[str, str]]:
        return await self._sqlite.run(self._attributes)


# Claim the id for the version and append its entry in one step (a script runs atomically): replicas never
# double up, and a failure cannot leave an id claimed without its entry.
_ADD_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"""


class RedisItemRegistry:
    """Per version an append-only list of JSON entries (its length is the cursor) and a set of the ids in
    it; one hash of every registered item's attributes."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._client: redis_asyncio.Redis | None = None

    def _redis(self) -> redis_asyncio.Redis:
        if self._client is None:
            raise RuntimeError("item registry is not open")
        return self._client

    async def open(self) -> None:
        self._client = await open_redis(self.url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def add(self, version: str, items: Sequence[RegisteredItem]) -> int:
        client = self._redis()
        keys = [
            f"{self.prefix}:registered-ids:{version}",
            f"{self.prefix}:registered:{version}",
            f"{self.prefix}:registered-attributes",
        ]
        added = 0
        with redis_failures("write"):
            for item in items:
                entry = {"item_id": item.item_id, "attributes": item.attributes, "vector": item.vector.tolist()}
                args = [item.item_id, json.dumps(entry), json.dumps(item.attributes)]
                added += int(await client.eval(_ADD_ONCE, len(keys), *keys, *args))
        return added

    async def since(self, version: str, cursor: int) -> tuple[list[RegisteredItem], int]:
        with redis_failures("read"):
            raw = await self._redis().lrange(f"{self.prefix}:registered:{version}", cursor, -1)
        items = []
        for entry in raw:
            data = json.loads(entry)
            items.append(RegisteredItem(data["item_id"], data["attributes"], np.asarray(data["vector"], np.float32)))
        return items, cursor + len(items)

    async def attributes(self) -> dict[str, dict[str, str]]:
        with redis_failures("read"):
            raw = await self._redis().hgetall(f"{self.prefix}:registered-attributes")
        return {_text(key): json.loads(value) for key, value in raw.items()}


def item_registry(state: StateSettings) -> ItemRegistry:
    """The registry beside the recorded events."""
    if state.store == "redis":
        return RedisItemRegistry(state.redis_url, state.redis_prefix)
    return SQLiteItemRegistry(state.state_dir / "registered_items.sqlite")
