"""The two homes of online state, shared by every service that keeps some: a SQLite file owned by one
thread (zero set-up, one machine) and Redis (shared by replicas)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as redis_asyncio

from services.common.errors import Unavailable
from services.common.settings import EnvReader

T = TypeVar("T")
STORES = ("sqlite", "redis")


@dataclass(frozen=True)
class StateSettings:
    """Where online state lives: RECSYS_STORE (sqlite in RECSYS_STATE_DIR, or redis at RECSYS_REDIS_URL
    with keys under RECSYS_REDIS_PREFIX)."""

    store: str
    state_dir: Path
    redis_url: str
    redis_prefix: str

    @classmethod
    def read(cls, env: EnvReader, artifacts: Path) -> StateSettings:
        return cls(
            env.choice("STORE", "sqlite", STORES),
            Path(env.string("STATE_DIR", str(artifacts / "state"))),
            env.string("REDIS_URL", "redis://127.0.0.1:6379/0"),
            env.string("REDIS_PREFIX", "recsys"),
        )


class SQLiteThread:
    """One connection to a file in WAL mode; every call runs on the one thread that owns it, so the event
    loop never blocks on disk.

    Reads on a request's path can use `read` instead: a second, read-only connection on the event loop's
    thread. Such a read is an index lookup (microseconds), while a hop to the owning thread and back costs
    about 100 µs of CPU. WAL readers never wait for the writer; a read that finds the file busy anyway
    (a checkpoint resetting the log) goes to the owning thread and waits there, off the loop.
    """

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(self.schema)
        self._connection = connection
        return connection

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)
        # timeout=0: a busy file answers at once (and the read moves to the thread) instead of stalling the loop.
        reader = sqlite3.connect(self.path, isolation_level=None, timeout=0)  # used on this thread only
        reader.execute("PRAGMA query_only=ON")
        self._reader = reader

    def _call(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._connection is None:
            raise RuntimeError(f"{self.path} is not open")
        return function(self._connection, *args)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """function(connection, *args) on the owning thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, function, args)

    async def read(self, function: Callable[..., T], *args: Any) -> T:
        """function(connection, *args), read-only, on the caller's thread; on the owning thread when busy."""
        if self._reader is None:
            raise RuntimeError(f"{self.path} is not open")
        try:
            return function(self._reader, *args)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        return await self.run(function, *args)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


async def open_redis(url: str) -> redis_asyncio.Redis:
    client = redis_asyncio.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        await client.ping()
    except (redis_asyncio.RedisError, OSError) as error:
        await client.aclose()
        raise Unavailable(f"redis at {url} does not answer: {error}") from None
    return client


@contextmanager
def redis_failures(what: str) -> Iterator[None]:
    """Redis errors as the service's own: the store is unavailable."""
    try:
        yield
    except (redis_asyncio.RedisError, OSError) as error:
        raise Unavailable(f"redis {what} failed: {error}") from None
