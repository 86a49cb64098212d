"""Online state of the features service: recorded events, behind one interface, in SQLite or Redis.

Both backends keep the same bounds, so neither grows without end:
- per user, the `max_events_per_user` most recently recorded events; a user's events are dropped once
  `retention_s` passes without a write for that user;
- per user, the client event ids (idempotent recording) of the last `event_id_retention_s`, at most the
  `max_event_ids_per_user` most recent of them.
An event id belongs to its user: two users may send the same one.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis_asyncio
from redis.commands.core import AsyncScript

from services.common.errors import Unavailable
from services.common.stores import SQLiteThread, open_redis, redis_failures
from services.common.validation import EventInput

DEFAULT_MAX_EVENTS_PER_USER = 10_000
DEFAULT_EVENT_RETENTION_S = 365 * 86_400.0
DEFAULT_EVENT_ID_RETENTION_S = 30 * 86_400.0
DEFAULT_MAX_EVENT_IDS_PER_USER = 10_000
DEFAULT_READ_TIMEOUT_S = 0.1
# How often SQLite looks for users past their retention (on the next write after this long).
PRUNE_INTERVAL_S = 3600.0

Clock = Callable[[], float]


class EventStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        """Store a batch; returns (accepted, duplicates by the user's event_id). An error means nothing of
        the batch counts as recorded: the client's retry stores it."""

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        """(item_id, timestamp) of a user's recorded events, oldest first (ties in arrival order);
        Unavailable when a shared store does not answer in time."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    rating REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE IF NOT EXISTS event_users (
    user_id TEXT PRIMARY KEY,
    last_recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS event_users_by_time ON event_users (last_recorded_at);
CREATE TABLE IF NOT EXISTS user_event_ids (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX IF NOT EXISTS user_event_ids_by_user_time ON user_event_ids (user_id, recorded_at);
CREATE INDEX IF NOT EXISTS user_event_ids_by_time ON user_event_ids (recorded_at);
"""
# PRAGMA user_version of a file laid out as above (0: the layout with one global event_ids table).
SCHEMA_VERSION = 1


class SQLiteEventStore:
    """A file in the state directory (services.common.stores.SQLiteThread), synced at every commit: an
    acknowledged event survives a power cut."""

    def __init__(
        self,
        path: Path,
        max_events_per_user: int = DEFAULT_MAX_EVENTS_PER_USER,
        event_id_retention_s: float = DEFAULT_EVENT_ID_RETENTION_S,
        *,
        retention_s: float = DEFAULT_EVENT_RETENTION_S,
        max_event_ids_per_user: int = DEFAULT_MAX_EVENT_IDS_PER_USER,
        clock: Clock = time.time,
    ) -> None:
        self.path = path
        self.max_events_per_user = max_events_per_user
        self.event_id_retention_s = event_id_retention_s
        self.retention_s = retention_s
        self.max_event_ids_per_user = max_event_ids_per_user
        self.clock = clock
        self._pruned_at = -math.inf
        self._sqlite = SQLiteThread(path, SCHEMA, synchronous="FULL")

    async def open(self) -> None:
        await self._sqlite.open()
        await self._sqlite.run(self._migrate)
        await self._sqlite.run(self._prune, self.clock())

    def _migrate(self, db: sqlite3.Connection) -> None:
        """A file of the layout before SCHEMA_VERSION 1: its users start their retention now, and its event
        ids are dropped, since they cannot be given to a user (the events kept none): a retry that crosses
        the upgrade is stored again, a duplicate interaction rather than a lost one."""
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO event_users (user_id, last_recorded_at) SELECT DISTINCT user_id, ? FROM events",
                (self.clock(),),
            )
            db.execute("DROP TABLE IF EXISTS event_ids")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        """Users without a write for the retention period, and event ids past theirs."""
        cutoff = now - self.retention_s
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "DELETE FROM events WHERE user_id IN (SELECT user_id FROM event_users WHERE last_recorded_at < ?)",
                (cutoff,),
            )
            db.execute("DELETE FROM event_users WHERE last_recorded_at < ?", (cutoff,))
            db.execute("DELETE FROM user_event_ids WHERE recorded_at < ?", (now - self.event_id_retention_s,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._pruned_at = now

    def _append(self, db: sqlite3.Connection, events: Sequence[EventInput]) -> tuple[int, int]:
        now = self.clock()
        if now - self._pruned_at >= PRUNE_INTERVAL_S:
            self._prune(db, now)
        accepted = duplicates = 0
        touched: set[str] = set()
        claimed_by: set[str] = set()
        db.execute("BEGIN")
        try:
            for event in events:
                if event.event_id:
                    # A new id, or one remembered past its retention (not pruned yet), is claimed; a live one
                    # leaves the row as it is (no change: a duplicate).
                    claimed = db.execute(
                        "INSERT INTO user_event_ids (user_id, event_id, recorded_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (user_id, event_id) DO UPDATE SET recorded_at = excluded.recorded_at "
                        "WHERE recorded_at < ?",
                        (event.user_id, event.event_id, now, now - self.event_id_retention_s),
                    )
                    if claimed.rowcount == 0:
                        duplicates += 1
                        continue
                    claimed_by.add(event.user_id)
                db.execute(
                    "INSERT INTO events (user_id, item_id, timestamp, rating) VALUES (?, ?, ?, ?)",
                    (event.user_id, event.item_id, event.timestamp, event.rating),
                )
                touched.add(event.user_id)
                accepted += 1
            for user_id in touched:  # keep each user's most recent events only, and when they were written
                db.execute(
                    "DELETE FROM events WHERE user_id = ? AND seq NOT IN (SELECT seq FROM events WHERE user_id = ? "
                    "ORDER BY seq DESC LIMIT ?)",
                    (user_id, user_id, self.max_events_per_user),
                )
                db.execute(
                    "INSERT INTO event_users (user_id, last_recorded_at) VALUES (?, ?) "
                    "ON CONFLICT (user_id) DO UPDATE SET last_recorded_at = excluded.last_recorded_at",
                    (user_id, now),
                )
            for user_id in claimed_by:  # and their most recent ids
                db.execute(
                    "DELETE FROM user_event_ids WHERE user_id = ? AND rowid IN (SELECT rowid FROM user_event_ids "
                    "WHERE user_id = ? ORDER BY recorded_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                    (user_id, user_id, self.max_event_ids_per_user),
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


# One batch in one step (a script runs atomically): the ids claimed and the events written together, or
# neither. Redis does not roll back a script that fails half-way, hence the order: every check first, then
# the events, the claims, and the write token last, so a failure leaves no id claimed for an event that was
# not stored and no token for a write that did not happen.
# The write token makes one append call idempotent as a whole: redis-py resends the script once on a fresh
# connection when the reply is lost (the connection broke or timed out after Redis ran it), and without the
# token that resend would store every event without an event id a second time. A token seen before returns
# the result recorded by the run that wrote, and writes nothing.
# KEYS: per user of the batch, its events list then its id set; last, the call's write-token key. ARGV: now,
# the time before which an id is forgotten, the two time-to-live periods, the two per-user caps, the write
# token's time to live; then per user its number of events n and n pairs (event id or '', list entry).
# Returns {accepted, duplicates}.
_APPEND = """
local now, stale_before = tonumber(ARGV[1]), tonumber(ARGV[2])
local events_ttl, ids_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_events, max_ids = tonumber(ARGV[5]), tonumber(ARGV[6])
local token_key, token_ttl, user_keys = KEYS[#KEYS], tonumber(ARGV[7]), #KEYS - 1
local recorded = redis.call('GET', token_key)
if recorded then  -- a resend of a call that already wrote: its first result, nothing written again
  local first_accepted, first_duplicates = string.match(recorded, '^(%d+) (%d+)$')
  return {tonumber(first_accepted), tonumber(first_duplicates)}
end
local function call_in_chunks(command, key, values, width)
  local chunk = 1000 * width  -- unpack has a stack limit: a few thousand values per call
  for first = 1, #values, chunk do
    redis.call(command, key, unpack(values, first, math.min(first + chunk - 1, #values)))
  end
end
for i = 1, user_keys, 2 do
  local events_type = redis.call('TYPE', KEYS[i])['ok']
  local ids_type = redis.call('TYPE', KEYS[i + 1])['ok']
  if (events_type ~= 'none' and events_type ~= 'list') or (ids_type ~= 'none' and ids_type ~= 'zset') then
    return redis.error_reply('WRONGTYPE a key of recorded events holds another type: ' .. KEYS[i])
  end
end
local entries, claims, accepted, duplicates, arg = {}, {}, 0, 0, 8
for i = 1, user_keys, 2 do
  local fresh, ids, seen = {}, {}, {}
  local n = tonumber(ARGV[arg])
  arg = arg + 1
  for _ = 1, n do
    local id, entry = ARGV[arg], ARGV[arg + 1]
    arg = arg + 2
    local duplicate = false
    if id ~= '' then
      local score = redis.call('ZSCORE', KEYS[i + 1], id)
      duplicate = seen[id] or (score and tonumber(score) >= stale_before)
    end
    if duplicate then
      duplicates = duplicates + 1
    else
      if id ~= '' then
        seen[id] = true
        ids[#ids + 1] = now
        ids[#ids + 1] = id
      end
      fresh[#fresh + 1] = entry
    end
  end
  entries[i], claims[i] = fresh, ids
  accepted = accepted + #fresh
end
for i = 1, user_keys, 2 do
  if #entries[i] > 0 then
    call_in_chunks('RPUSH', KEYS[i], entries[i], 1)
    redis.call('LTRIM', KEYS[i], -max_events, -1)
    redis.call('EXPIRE', KEYS[i], events_ttl)
  end
end
for i = 1, user_keys, 2 do
  if #claims[i] > 0 then
    call_in_chunks('ZADD', KEYS[i + 1], claims[i], 2)
    redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', '(' .. ARGV[2])
    redis.call('ZREMRANGEBYRANK', KEYS[i + 1], 0, -max_ids - 1)
    redis.call('EXPIRE', KEYS[i + 1], ids_ttl)
  end
end
redis.call('SET', token_key, accepted .. ' ' .. duplicates, 'EX', token_ttl)
return {accepted, duplicates}
"""

# Lists written before they had a time to live get one (once per deployment, see _bound_existing_lists).
_EXPIRE_UNBOUNDED = """
for _, key in ipairs(KEYS) do
  if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[1]) end
end
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisEventStore:
    """Shared by several feature-service replicas. Per user a list of "timestamp<TAB>item_id" entries (ids
    never contain a tab: validation refuses control characters) and a sorted set of event ids scored by
    the time they were recorded; both expire once their retention passes without a write. Every key ends
    in the one user id it belongs to, after a fixed prefix, so ids holding ':' cannot make two keys meet.
    Each append also leaves a short-lived write token with its result, so a resent append writes nothing."""

    # redis-py's one retry resends within seconds, so a minute is plenty. The cost: one string key per append
    # held this long, about 180 bytes of Redis memory with its expiry (measured on Redis 7.0), so 1000
    # appends a second keep about 11 MB of tokens.
    write_token_ttl_s = 60

    def __init__(
        self,
        url: str,
        prefix: str,
        max_events_per_user: int = DEFAULT_MAX_EVENTS_PER_USER,
        event_id_retention_s: float = DEFAULT_EVENT_ID_RETENTION_S,
        *,
        retention_s: float = DEFAULT_EVENT_RETENTION_S,
        max_event_ids_per_user: int = DEFAULT_MAX_EVENT_IDS_PER_USER,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        ca_file: Path | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_events_per_user = max_events_per_user
        self.event_id_retention_s = event_id_retention_s
        self.retention_s = retention_s
        self.max_event_ids_per_user = max_event_ids_per_user
        self.read_timeout_s = read_timeout_s
        self.ca_file = ca_file
        self.clock = clock
        self._client: redis_asyncio.Redis | None = None
        self._append_script: AsyncScript | None = None

    def _redis(self) -> redis_asyncio.Redis:
        if self._client is None:
            raise RuntimeError("event store is not open")
        return self._client

    def events_key(self, user_id: str) -> str:
        return f"{self.prefix}:events:{user_id}"

    def event_ids_key(self, user_id: str) -> str:
        return f"{self.prefix}:user-event-ids:{user_id}"

    def write_token_key(self, token: str) -> str:
        return f"{self.prefix}:write:{token}"

    async def open(self) -> None:
        client = await open_redis(self.url, self.ca_file)
        self._client = client
        self._append_script = client.register_script(_APPEND)
        with redis_failures("start-up"):
            await self._bound_existing_lists(client)

    async def _bound_existing_lists(self, client: redis_asyncio.Redis) -> None:
        """Event lists written before they expired get the retention period from now; a marker key says it
        was done, so later starts skip the scan."""
        marker = f"{self.prefix}:layout:events-expire"
        if await client.exists(marker):
            return
        expire = client.register_script(_EXPIRE_UNBOUNDED)
        batch: list[str] = []
        ttl = math.ceil(self.retention_s)
        async for key in client.scan_iter(match=_glob_escape(self.events_key("")) + "*", count=1000, _type="list"):
            batch.append(key)
            if len(batch) == 1000:
                await expire(keys=batch, args=[ttl])
                batch = []
        if batch:
            await expire(keys=batch, args=[ttl])
        await client.set(marker, 1)

    async def append(self, events: Sequence[EventInput]) -> tuple[int, int]:
        if self._append_script is None:
            raise RuntimeError("event store is not open")
        by_user: dict[str, list[EventInput]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        now = self.clock()
        keys: list[str] = []
        args: list[str | int | float] = [
            repr(now),
            repr(now - self.event_id_retention_s),
            math.ceil(self.retention_s),
            math.ceil(self.event_id_retention_s),
            self.max_events_per_user,
            self.max_event_ids_per_user,
            self.write_token_ttl_s,
        ]
        for user_id, user_events in by_user.items():
            keys += [self.events_key(user_id), self.event_ids_key(user_id)]
            args.append(len(user_events))
            for event in user_events:
                args += [event.event_id, f"{event.timestamp}\t{event.item_id}"]
        keys.append(self.write_token_key(secrets.token_hex(16)))  # one per call: a resend of it reuses it
        with redis_failures("write"):
            accepted, duplicates = await self._append_script(keys=keys, args=args)
        return int(accepted), int(duplicates)

    async def events_for(self, user_id: str) -> list[tuple[str, int]]:
        with redis_failures("read"):
            try:
                # On the request path: a Redis that hangs costs this much, not the socket timeout.
                async with asyncio.timeout(self.read_timeout_s):
                    raw = await self._redis().lrange(self.events_key(user_id), 0, -1)
            except TimeoutError:
                raise Unavailable(f"redis read took longer than {self.read_timeout_s * 1000:g} ms") from None
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
            self._append_script = None
