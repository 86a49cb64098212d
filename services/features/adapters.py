"""Online state of the features service: recorded events, behind one interface, in SQLite or Redis.

Both keep, per user, the `max_events_per_user` most recently recorded events, and remember client event ids
(for idempotent recording) for `event_id_retention_s`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import redis.asyncio as redis_asyncio

from services.common.errors import Unavailable
from services.common.validation import EventInput

T = TypeVar("T")
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
    """A file in the state directory (WAL mode). Every call runs on one thread that owns the
    connection, so the event loop never blocks on disk."""

    def __init__(
        self, path: Path, max_events_per_user: int, event_id_retention_s: float = DEFAULT_EVENT_ID_RETENTION_S
    ) -> None:
        self.path = path
        self.max_events_per_user = max_events_per_user
        self.event_id_retention_s = event_id_retention_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("event store is not open")
        return self._connection

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        connection.execute("DELETE FROM event_ids WHERE recorded_at < ?", (time.time() - self.event_id_retention_s,))
        self._connection = connection

    async def open(self) -> None:
        await self._run(self._open)

    def _append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        db = self._db()
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
        return await self._run(self._append, events)

    def _events_for(self, user_id: str) -> list[tuple[str, int]]:
        rows = self._db().execute(
            "SELECT item_id, timestamp FROM events WHERE user_id = ? ORDER BY timestamp, seq", (user_id,)
        )
        return [(str(item), int(ts)) for item, ts in rows]

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        return await self._run(self._events_for, user_id)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)


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
        self._client = redis_asyncio.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            await self._client.ping()
        except (redis_asyncio.RedisError, OSError) as error:
            raise Unavailable(f"redis at {self.url} does not answer: {error}") from None

    async def append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        client = self._redis()
        try:
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
        except (redis_asyncio.RedisError, OSError) as error:
            raise Unavailable(f"redis write failed: {error}") from None
        return len(fresh), duplicates

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        try:
            raw = await self._redis().lrange(self._events_key(user_id), 0, -1)
        except (redis_asyncio.RedisError, OSError) as error:
            raise Unavailable(f"redis read failed: {error}") from None
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
