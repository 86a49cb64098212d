"""Online state of the features service: recorded events, behind one interface, in SQLite or Redis.

Both keep, per user, the `max_events_per_user` most recently recorded events, and remember client event ids
(for idempotent recording) for `event_id_retention_s`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis_asyncio

from services.common.stores import SQLiteThread, open_redis, redis_failures
from services.common.validation import EventInput

DEFAULT_EVENT_ID_RETENTION_S = 30 * 86_400


class EventStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        """Store a batch; returns (accepted, duplicates by event_id)."""

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        """(item_id, timestamp) of a user's recorded events, oldest first (ties in arrival order)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    rating REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE IF NOT EXISTS event_ids (
    event_id TEXT PRIMARY KEY,
    recorded_at REAL NOT NULL
);
"""


class SQLiteEventStore:
    """A file in the state directory (services.common.stores.SQLiteThread)."""

    def __init__(
        self, path: Path, max_events_per_user: int, event_id_retention_s: float = DEFAULT_EVENT_ID_RETENTION_S
    ) -> None:
        self.path = path
        self.max_events_per_user = max_events_per_user
        self.event_id_retention_s = event_id_retention_s
        self._sqlite = SQLiteThread(path, SCHEMA)

    async def open(self) -> None:
        await self._sqlite.open()
        await self._sqlite.run(self._forget_old_event_ids)

    def _forget_old_event_ids(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM event_ids WHERE recorded_at < ?", (time.time() - self.event_id_retention_s,))

    def _append(self, db: sqlite3.Connection, events: Sequence[EventInput]) -> tuple[int, int]:
        accepted = duplicates = 0
        touched: set[str] = set()
        now = time.time()
        db.execute("BEGIN")
        try:
            for event in events:
                if event.event_id:
                    inserted = db.execute(
                        "INSERT OR IGNORE INTO event_ids (event_id, recorded_at) VALUES (?, ?)", (event.event_id, now)
                    )
                    if inserted.rowcount == 0:
                        duplicates += 1
                        continue
                db.execute(
                    "INSERT INTO events (user_id, item_id, timestamp, rating) VALUES (?, ?, ?, ?)",
                    (event.user_id, event.item_id, event.timestamp, event.rating),
                )
                touched.add(event.user_id)
                accepted += 1
            for user_id in touched:  # keep each user's most recent events only
                db.execute(
                    "DELETE FROM events WHERE user_id = ? AND seq NOT IN (SELECT seq FROM events WHERE user_id = ? "
                    "ORDER BY seq DESC LIMIT ?)",
                    (user_id, user_id, self.max_events_per_user),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return accepted, duplicates

    async def append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        return await self._sqlite.run(self._append, events)

    @staticmethod
    def _events_for(db: sqlite3.Connection, user_id: str) -> list[tuple[str, int]]:
        rows = db.execute("SELECT item_id, timestamp FROM events WHERE user_id = ? ORDER BY timestamp, seq", (user_id,))
        return [(str(item), int(ts)) for item, ts in rows]

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        return await self._sqlite.read(self._events_for, user_id)

    async def close(self) -> None:
        await self._sqlite.close()


class RedisEventStore:
    """Shared by several feature-service replicas. Per user a list of "timestamp<TAB>item_id" entries
    (ids never contain a tab: validation refuses control characters); per event id a key with a TTL."""

    def __init__(
        self,
        url: str,
        prefix: str,
        max_events_per_user: int,
        event_id_retention_s: float = DEFAULT_EVENT_ID_RETENTION_S,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_events_per_user = max_events_per_user
        self.event_id_retention_s = int(event_id_retention_s)
        self._client: redis_asyncio.Redis | None = None

    def _redis(self) -> redis_asyncio.Redis:
        if self._client is None:
            raise RuntimeError("event store is not open")
        return self._client

    def _events_key(self, user_id: str) -> str:
        return f"{self.prefix}:events:{user_id}"

    async def open(self) -> None:
        self._client = await open_redis(self.url)

    async def append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        client = self._redis()
        with redis_failures("write"):
            fresh = list(events)
            duplicates = 0
            with_ids = [e for e in events if e.event_id]
            if with_ids:
                claims = client.pipeline(transaction=False)
                for event in with_ids:
                    claims.set(f"{self.prefix}:event-id:{event.event_id}", 1, nx=True, ex=self.event_id_retention_s)
                claimed = dict(zip((id(e) for e in with_ids), await claims.execute(), strict=True))
                fresh = [e for e in events if not e.event_id or claimed[id(e)]]
                duplicates = len(events) - len(fresh)
            if fresh:
                writes = client.pipeline(transaction=True)
                for event in fresh:
                    writes.rpush(self._events_key(event.user_id), f"{event.timestamp}\t{event.item_id}")
                for user_id in {e.user_id for e in fresh}:
                    writes.ltrim(self._events_key(user_id), -self.max_events_per_user, -1)
                await writes.execute()
        return len(fresh), duplicates

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        with redis_failures("read"):
            raw = await self._redis().lrange(self._events_key(user_id), 0, -1)
        entries = []
        for arrival, entry in enumerate(raw):
            text = entry.decode() if isinstance(entry, bytes) else str(entry)
            timestamp, _, item_id = text.partition("\t")
            entries.append((int(timestamp), arrival, item_id))
        entries.sort()
        return [(item_id, timestamp) for timestamp, _, item_id in entries]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
