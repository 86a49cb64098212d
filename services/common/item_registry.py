"""Items registered online (RegisterItems): their attributes, and per artefact version the collaborative
vector the item generator made for them. The synthetic service writes; the candidate services follow
what is new with a cursor, so an item is recommendable within a poll interval, on every replica, and
again after a restart. In SQLite (the state directory) or Redis, like the recorded events.

The registry holds at most `max_items` distinct item ids (whatever the versions they are registered under):
a request that would take it past that is refused whole, RESOURCE_EXHAUSTED.
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
from redis.commands.core import AsyncScript

from services.common.errors import ResourceExhausted
from services.common.stores import SQLiteThread, StateSettings, open_redis, redis_failures

DEFAULT_MAX_REGISTERED_ITEMS = 100_000


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
        were new; ResourceExhausted, with nothing stored, when the new ids would not fit."""

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


def _full(max_items: int, registered: int, new: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"the item registry is full: it holds at most {max_items} items, {registered} are registered and this "
        f"request would add {new} new ones"
    )


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
CREATE INDEX IF NOT EXISTS registered_items_by_item ON registered_items (item_id);
"""


class SQLiteItemRegistry:
    def __init__(self, path: Path, max_items: int = DEFAULT_MAX_REGISTERED_ITEMS) -> None:
        self.max_items = max_items
        self._sqlite = SQLiteThread(path, SCHEMA, synchronous="FULL")

    async def open(self) -> None:
        await self._sqlite.open()

    async def close(self) -> None:
        await self._sqlite.close()

    def _add(self, db: sqlite3.Connection, version: str, items: Sequence[RegisteredItem]) -> int:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")  # the count and the inserts in one write transaction
        try:
            ids = dict.fromkeys(item.item_id for item in items)
            new = sum(
                db.execute("SELECT 1 FROM registered_items WHERE item_id = ? LIMIT 1", (item_id,)).fetchone() is None
                for item_id in ids
            )
            if new:
                (registered,) = db.execute("SELECT COUNT(DISTINCT item_id) FROM registered_items").fetchone()
                if registered + new > self.max_items:
                    raise _full(self.max_items, registered, new)
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


# One request in one step (a script runs atomically), so replicas never double up and the capacity check
# holds. Redis does not roll back a script that fails half-way, hence the order: every check first, then the
# entries, the id claims last, so a failure never leaves an id claimed without its entry.
# KEYS: the version's id set, its entry list, every item's attributes (hash). ARGV: the capacity, then per
# item its id, entry (JSON) and attributes (JSON). Returns {added}, or {-1, registered, new} when full.
_ADD = """
local expected = {'set', 'list', 'hash'}
for i, key in ipairs(KEYS) do
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= expected[i] then
    return redis.error_reply('WRONGTYPE item registry key ' .. key .. ' holds a ' .. found)
  end
end
local capacity = tonumber(ARGV[1])
local fresh, seen, new = {}, {}, 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if not seen[id] and redis.call('SISMEMBER', KEYS[1], id) == 0 then
    fresh[#fresh + 1] = i
    if redis.call('HEXISTS', KEYS[3], id) == 0 then new = new + 1 end
  end
  seen[id] = true
end
local registered = redis.call('HLEN', KEYS[3])
if new > 0 and registered + new > capacity then return {-1, registered, new} end
for _, i in ipairs(fresh) do
  redis.call('RPUSH', KEYS[2], ARGV[i + 1])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
end
for _, i in ipairs(fresh) do redis.call('SADD', KEYS[1], ARGV[i]) end
return {#fresh}
"""


class RedisItemRegistry:
    """Per version an append-only list of JSON entries (its length is the cursor) and a set of the ids in
    it; one hash of every registered item's attributes (its size is what the capacity counts)."""

    def __init__(
        self, url: str, prefix: str, max_items: int = DEFAULT_MAX_REGISTERED_ITEMS, ca_file: Path | None = None
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_items = max_items
        self.ca_file = ca_file
        self._client: redis_asyncio.Redis | None = None
        self._add_script: AsyncScript | None = None

    def _redis(self) -> redis_asyncio.Redis:
        if self._client is None:
            raise RuntimeError("item registry is not open")
        return self._client

    async def open(self) -> None:
        self._client = await open_redis(self.url, self.ca_file)
        self._add_script = self._client.register_script(_ADD)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._add_script = None

    async def add(self, version: str, items: Sequence[RegisteredItem]) -> int:
        if self._add_script is None:
            raise RuntimeError("item registry is not open")
        keys = [
            f"{self.prefix}:registered-ids:{version}",
            f"{self.prefix}:registered:{version}",
            f"{self.prefix}:registered-attributes",
        ]
        args: list[str | int] = [self.max_items]
        for item in items:
            entry = {"item_id": item.item_id, "attributes": item.attributes, "vector": item.vector.tolist()}
            args += [item.item_id, json.dumps(entry), json.dumps(item.attributes)]
        with redis_failures("write"):
            result = await self._add_script(keys=keys, args=args)
        if int(result[0]) < 0:
            raise _full(self.max_items, int(result[1]), int(result[2]))
        return int(result[0])

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


def item_registry(state: StateSettings, max_items: int = DEFAULT_MAX_REGISTERED_ITEMS) -> ItemRegistry:
    """The registry beside the recorded events (max_items: the capacity its writer enforces)."""
    if state.store == "redis":
        return RedisItemRegistry(state.redis_url, state.redis_prefix, max_items, state.redis_ca)
    return SQLiteItemRegistry(state.state_dir / "registered_items.sqlite", max_items)
