"""Online state of the features service: recorded events in SQLite (WAL), one writer thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.common.validation import EventInput

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    rating REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq);
"""


class SQLiteEventStore:
    """Every call runs on one dedicated thread that owns the connection, so the event loop never blocks on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        self._connection = connection

    async def _run(self, function, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("event store is not open")
        return self._connection

    def _append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        db = self._db()
        accepted = duplicates = 0
        db.execute("BEGIN")
        try:
            for event in events:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO events (event_id, user_id, item_id, timestamp, rating) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (event.event_id or None, event.user_id, event.item_id, event.timestamp, event.rating),
                )
                if cursor.rowcount == 1:
                    accepted += 1
                else:
                    duplicates += 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return accepted, duplicates

    async def append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        """Store events in one transaction; returns (accepted, duplicates by event_id)."""
        result: tuple[int, int] = await self._run(self._append, events)
        return result

    def _events_for(self, user_id: str) -> list[tuple[str, int]]:
        rows = self._db().execute(
            "SELECT item_id, timestamp FROM events WHERE user_id = ? ORDER BY timestamp, seq", (user_id,)
        )
        return [(str(item), int(ts)) for item, ts in rows]

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        """(item_id, timestamp) of a user's recorded events, oldest first."""
        result: list[tuple[str, int]] = await self._run(self._events_for, user_id)
        return result

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)
