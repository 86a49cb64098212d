"""One test suite, both online-store backends: SQLite (default) and Redis (several replicas)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from services.common.errors import Unavailable
from services.common.validation import EventInput
from services.features.adapters import PRUNE_INTERVAL_S, EventStore, RedisEventStore, SQLiteEventStore


class Clock:
    """The stores' time, moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    opened: list[EventStore] = []

    async def make(
        max_events_per_user: int = 100, retention_s: float = 3600.0, name: str = "shared", **options: Any
    ) -> EventStore:
        store: EventStore
        if request.param == "sqlite":
            store = SQLiteEventStore(tmp_path / f"{name}.sqlite", max_events_per_user, retention_s, **options)
        else:
            url = request.getfixturevalue("redis_url")
            # One key prefix per test (and name): the same prefix is the same store, as for replicas.
            prefix = f"test-{request.node.name}-{name}"
            store = RedisEventStore(url, prefix, max_events_per_user, retention_s, **options)
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


async def test_event_ids_belong_to_their_user(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store()
    assert await store.append([event("alice", "a", 1, "e1")]) == (1, 0)
    # Another user's "e1" is another event, in the same batch as in a later one.
    assert await store.append([event("bob", "b", 2, "e1"), event("carol", "c", 3, "e1")]) == (2, 0)
    assert await store.append([event("alice", "a", 1, "e1"), event("bob", "b", 2, "e1")]) == (0, 2)
    assert await store.events_for("alice") == [("a", 1)]
    assert await store.events_for("bob") == [("b", 2)]
    assert await store.events_for("carol") == [("c", 3)]


async def test_ids_and_users_holding_separators_never_meet(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store()
    # In a key built as user + ":" + id, ("a:b", "c") and ("a", "b:c") would be one.
    assert await store.append([event("a:b", "x", 1, "c"), event("a", "y", 2, "b:c")]) == (2, 0)
    assert await store.append([event("a", "z", 3, "c"), event("a:b", "w", 4, "b:c")]) == (2, 0)
    assert await store.events_for("a") == [("y", 2), ("z", 3)]


async def test_event_ids_are_forgotten_after_their_retention_and_capped_per_user(make_store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    store = await make_store(retention_s=100.0, max_event_ids_per_user=2, clock=clock)
    for n in (1, 2, 3):
        assert await store.append([event("u", f"i{n}", n, f"e{n}")]) == (1, 0)
        clock.now += 1
    # e1 is the oldest of three with room for two: a retry of it is stored again; e2 and e3 are remembered.
    assert await store.append([event("u", "i2", 2, "e2"), event("u", "i3", 3, "e3")]) == (0, 2)
    assert await store.append([event("u", "i1", 1, "e1")]) == (1, 0)
    clock.now += 101
    assert await store.append([event("u", "i3", 3, "e3")]) == (1, 0)  # past its retention
    assert [item for item, _ in await store.events_for("u")] == ["i1", "i1", "i2", "i3", "i3"]


async def test_a_large_batch_is_one_step(make_store) -> None:  # type: ignore[no-untyped-def]
    store = await make_store(max_events_per_user=10_000)
    batch = [event(f"u{n % 3}", f"i{n}", n, f"e{n}") for n in range(5000)]
    assert await store.append(batch) == (5000, 0)
    assert await store.append([*batch[:2500], event("u0", "new", 9, "fresh")]) == (1, 2500)
    assert len(await store.events_for("u0")) == 1668


async def test_a_failed_redis_write_leaves_the_event_id_free_for_the_retry(redis_url: str) -> None:
    store = RedisEventStore(redis_url, "test-failed-write", 100, 3600.0)
    await store.open()
    raw = redis_asyncio.Redis.from_url(redis_url)
    try:
        await store.append([event("fine", "a", 1, "f1")])
        # The user's list key holds a string: the write of the events fails (WRONGTYPE).
        await raw.set(store.events_key("u"), "not a list")
        with pytest.raises(Unavailable, match="WRONGTYPE"):
            await store.append([event("fine", "b", 2, "f2"), event("u", "a", 1, "e1")])
        assert await store.events_for("fine") == [("a", 1)]  # nothing of the failed batch was applied
        await raw.delete(store.events_key("u"))
        # The client retries: the event is stored, not taken for a duplicate of the write that failed.
        assert await store.append([event("fine", "b", 2, "f2"), event("u", "a", 1, "e1")]) == (2, 0)
        assert await store.events_for("u") == [("a", 1)]
        assert await store.events_for("fine") == [("a", 1), ("b", 2)]
    finally:
        await raw.aclose()
        await store.close()


async def test_redis_keys_expire_after_their_retention_without_writes(redis_url: str) -> None:
    day = 86_400
    store = RedisEventStore(redis_url, "test-expiry", 100, 2 * day, retention_s=30 * day)
    await store.open()
    raw = redis_asyncio.Redis.from_url(redis_url)
    try:
        await store.append([event("u", "a", 1, "e1")])
        assert 30 * day - 5 <= await raw.ttl(store.events_key("u")) <= 30 * day
        assert 2 * day - 5 <= await raw.ttl(store.event_ids_key("u")) <= 2 * day
        await raw.expire(store.events_key("u"), 60)
        await raw.expire(store.event_ids_key("u"), 60)
        await store.append([event("u", "b", 2, "e2")])  # a write starts both periods again
        assert await raw.ttl(store.events_key("u")) > 29 * day
        assert await raw.ttl(store.event_ids_key("u")) > day
    finally:
        await raw.aclose()
        await store.close()


async def test_redis_lists_written_without_expiry_get_one_at_start(redis_url: str) -> None:
    prefix = "test-legacy-lists"
    raw = redis_asyncio.Redis.from_url(redis_url)
    try:
        await raw.rpush(f"{prefix}:events:old user", "5\tx")
        await raw.rpush(f"{prefix}:events:kept", "6\ty")
        await raw.expire(f"{prefix}:events:kept", 1000)
        await raw.set(f"{prefix}:other", "untouched")
        store = RedisEventStore(redis_url, prefix, 100, 3600.0, retention_s=86_400)
        await store.open()
        await store.close()
        assert 86_000 < await raw.ttl(f"{prefix}:events:old user") <= 86_400
        assert await raw.ttl(f"{prefix}:events:kept") <= 1000  # an expiry already set is left alone
        assert await raw.ttl(f"{prefix}:other") == -1
    finally:
        await raw.aclose()


async def test_sqlite_drops_users_past_their_retention(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path, 100, 60.0, retention_s=10 * PRUNE_INTERVAL_S, clock=clock)
    await store.open()
    await store.append([event("idle", "a", 1, "e1"), event("busy", "b", 2)])
    clock.now += 6 * PRUNE_INTERVAL_S
    await store.append([event("busy", "c", 3)])
    clock.now += 5 * PRUNE_INTERVAL_S
    await store.append([event("other", "d", 4)])  # the periodic prune runs on a write
    assert await store.events_for("idle") == []
    assert await store.events_for("busy") == [("b", 2), ("c", 3)]
    await store.close()

    clock.now += 10 * PRUNE_INTERVAL_S + 1  # and on opening the file
    store = SQLiteEventStore(path, 100, 60.0, retention_s=10 * PRUNE_INTERVAL_S, clock=clock)
    await store.open()
    assert await store.events_for("busy") == [] and await store.events_for("other") == []
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM user_event_ids").fetchone() == (0,)


# The layout of events.sqlite before event ids were per user.
OLD_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL, rating REAL NOT NULL DEFAULT 0
);
CREATE INDEX events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE event_ids (event_id TEXT PRIMARY KEY, recorded_at REAL NOT NULL);
INSERT INTO events (user_id, item_id, timestamp) VALUES ('alice', 'a', 1), ('alice', 'b', 2), ('bob', 'c', 3);
INSERT INTO event_ids VALUES ('e1', 1700000000.0);
"""


async def test_an_sqlite_file_of_the_old_layout_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    db.close()
    clock = Clock(1_700_000_100.0)
    store = SQLiteEventStore(path, 100, 3600.0, retention_s=10 * PRUNE_INTERVAL_S, clock=clock)
    await store.open()
    try:
        assert await store.events_for("alice") == [("a", 1), ("b", 2)]  # recorded events are kept
        assert await store.append([event("carol", "x", 5, "e1")]) == (1, 0)  # "e1" was someone else's
        assert await store.append([event("carol", "x", 5, "e1")]) == (0, 1)
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'event_ids'").fetchall() == []
        # The users it had start their retention at the migration.
        assert db.execute("SELECT user_id, last_recorded_at FROM event_users ORDER BY user_id").fetchall() == [
            ("alice", clock.now),
            ("bob", clock.now),
            ("carol", clock.now),
        ]
    db.close()


async def test_sqlite_stores_sync_every_commit(tmp_path: Path) -> None:
    from services.common.item_registry import SQLiteItemRegistry

    events = SQLiteEventStore(tmp_path / "events.sqlite", 100, 3600.0)
    registry = SQLiteItemRegistry(tmp_path / "registered.sqlite")
    await events.open()
    await registry.open()
    try:
        # synchronous=FULL (2): a commit returns once it is on disk, so an acknowledged event survives a power cut.
        for store in (events, registry):
            assert await store._sqlite.run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await events.close()
        await registry.close()


async def test_sqlite_reads_run_on_the_loop_and_move_to_the_thread_when_the_file_is_busy(tmp_path: Path) -> None:
    import sqlite3
    import threading

    from services.common.stores import SQLiteThread

    sqlite = SQLiteThread(tmp_path / "t.sqlite", "CREATE TABLE IF NOT EXISTS t (v INTEGER);", synchronous="NORMAL")
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
