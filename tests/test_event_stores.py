"""One test suite, both online-store backends: SQLite (default) and Redis (several replicas)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.validation import EventInput
from services.features.adapters import EventStore, RedisEventStore, SQLiteEventStore


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    opened: list[EventStore] = []

    async def make(max_events_per_user: int = 100, retention_s: float = 3600.0, name: str = "shared") -> EventStore:
        store: EventStore
        if request.param == "sqlite":
            store = SQLiteEventStore(tmp_path / f"{name}.sqlite", max_events_per_user, retention_s)
        else:
            url = request.getfixturevalue("redis_url")
            # One key prefix per test (and name): the same prefix is the same store, as for replicas.
            store = RedisEventStore(url, f"test-{request.node.name}-{name}", max_events_per_user, retention_s)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def event(user: str, item: str, ts: int, event_id: str = "") -> EventInput:
    return EventInput(user, item, ts, event_id, 0.0)


async def test_events_come_back_in_time_order(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store()
    assert await store.append([event("u", "b", 200), event("u", "a", 100), event("v", "x", 150)]) == (3, 0)
    assert await store.append([event("u", "c", 150)]) == (1, 0)
    assert await store.events_for("u") == [("a", 100), ("c", 150), ("b", 200)]
    assert await store.events_for("v") == [("x", 150)]
    assert await store.events_for("nobody") == []


async def test_equal_timestamps_keep_arrival_order(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store()
    await store.append([event("u", "first", 100), event("u", "second", 100)])
    await store.append([event("u", "third", 100)])
    assert [item for item, _ in await store.events_for("u")] == ["first", "second", "third"]


async def test_event_ids_make_recording_idempotent(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store()
    assert await store.append([event("u", "a", 1, "e1"), event("u", "b", 2, "e2"), event("u", "c", 3)]) == (3, 0)
    assert await store.append([event("u", "a", 1, "e1"), event("u", "d", 4, "e3"), event("u", "d", 4, "e3")]) == (1, 2)
    assert [item for item, _ in await store.events_for("u")] == ["a", "b", "c", "d"]


async def test_history_per_user_is_bounded_to_the_latest_recorded(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store(max_events_per_user=3)
    await store.append([event("u", f"i{n}", 1000 + n) for n in range(5)])
    await store.append([event("u", "late", 1)])
    assert await store.events_for("u") == [("late", 1), ("i3", 1003), ("i4", 1004)]


async def test_replicas_sharing_a_store_see_each_others_events(make_store) -> None:  # type: ignore[no-untyped-def]
    first = await make_store()
    second = await make_store()
    await first.append([event("u", "a", 1, "shared-1")])
    assert await second.events_for("u") == [("a", 1)]
    assert await second.append([event("u", "a", 1, "shared-1")]) == (0, 1)


async def test_ids_with_unusual_characters_round_trip(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store()
    item = "item:with spaces/and\u00e9 'quotes' ; DROP TABLE events"
    await store.append([event("user:1", item, 5)])
    assert await store.events_for("user:1") == [(item, 5)]


async def test_sqlite_reads_run_on_the_loop_and_move_to_the_thread_when_the_file_is_busy(tmp_path: Path) -> None:
    import sqlite3
    import threading

    from services.common.stores import SQLiteThread

    sqlite = SQLiteThread(tmp_path / "t.sqlite", "CREATE TABLE IF NOT EXISTS t (v INTEGER);")
    await sqlite.open()
    try:
        await sqlite.run(lambda db: db.execute("INSERT INTO t VALUES (1)"))

        def read(db: sqlite3.Connection) -> tuple[list[int], str]:
            return [v for (v,) in db.execute("SELECT v FROM t")], threading.current_thread().name

        values, thread = await sqlite.read(read)
        assert values == [1] and thread == threading.current_thread().name  # no hop to the sqlite thread

        # WAL readers find the file busy only in rare moments (a checkpoint resetting the log, recovery after a
        # crash); such a read, answered SQLITE_BUSY on the loop, is run again on the owning thread.
        loop_thread = threading.current_thread().name

        def busy_on_the_loop(db: sqlite3.Connection) -> tuple[list[int], str]:
            if threading.current_thread().name == loop_thread:
                busy = sqlite3.OperationalError("database is locked")
                busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
                raise busy
            return read(db)

        values, thread = await sqlite.read(busy_on_the_loop)
        assert values == [1] and thread.startswith("sqlite")

        with pytest.raises(sqlite3.OperationalError, match="no such table"):  # other errors are not hidden
            await sqlite.read(lambda db: db.execute("SELECT * FROM missing").fetchall())
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # and the loop's connection only reads
            sqlite._reader.execute("INSERT INTO t VALUES (3)")  # type: ignore[union-attr]
    finally:
        await sqlite.close()
