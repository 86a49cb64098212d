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
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.errors import Unavailable
from services.common.settings import ENV_PREFIX, EnvReader

T = TypeVar("T")
STORES = ("sqlite", "redis")
REDIS_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# How SQLite syncs a commit to disk: FULL waits for the disk at every commit, so an acknowledged write
# survives a power cut; NORMAL (in WAL mode) may lose the last commits then.
Synchronous = Literal["NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS: tuple[Synchronous, ...] = ("NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True)
class StateSettings:
    """Where online state lives: RECSYS_STORE (sqlite in RECSYS_STATE_DIR, or redis at RECSYS_REDIS_URL
    with keys under RECSYS_REDIS_PREFIX; a rediss:// URL is TLS, its server certificate checked against
    RECSYS_REDIS_CA when set, the system's CAs otherwise)."""

    store: str
    state_dir: Path
    redis_url: str
    redis_prefix: str
    redis_ca: Path | None = None

    @classmethod
    def read(cls, env: EnvReader, artifacts: Path) -> StateSettings:
        url = env.string("REDIS_URL", DEFAULT_REDIS_URL)
        scheme = _scheme(url)
        if scheme not in REDIS_SCHEMES:
            env.problems.append(
                f"{ENV_PREFIX}REDIS_URL={redact_url(url)!r} is not a {', '.join(s + '://' for s in REDIS_SCHEMES)} URL"
            )
        ca = env.string("REDIS_CA", "")
        if ca and not Path(ca).is_file():
            env.problems.append(f"{ENV_PREFIX}REDIS_CA={ca!r} is not a file")
        if ca and scheme != "rediss":
            env.problems.append(f"{ENV_PREFIX}REDIS_CA is set but {ENV_PREFIX}REDIS_URL is not a rediss:// (TLS) URL")
        return cls(
            env.choice("STORE", "sqlite", STORES),
            Path(env.string("STATE_DIR", str(artifacts / "state"))),
            url,
            env.string("REDIS_PREFIX", "recsys"),
            Path(ca) if ca else None,
        )


class SQLiteThread:
    """One connection to a file in WAL mode; every call runs on the one thread that owns it, so the event
    loop never blocks on disk. `synchronous` is the owner's choice of durability (see Synchronous).

    Reads on a request's path can use `read` instead: a second, read-only connection on the event loop's
    thread. Such a read is an index lookup (microseconds), while a hop to the owning thread and back costs
    about 100 µs of CPU. WAL readers never wait for the writer; a read that finds the file busy anyway
    (a checkpoint resetting the log) goes to the owning thread and waits there, off the loop.
    """

    def __init__(self, path: Path, schema: str, *, synchronous: Synchronous) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}")
        self.path = path
        self.schema = schema
        self.synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
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


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


MASK = "***"


def redact_url(url: str) -> str:
    """The URL with its password masked (in the user-info and in a `password=` query option): the form of
    a Redis URL that may go into a log line or an error message."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:  # unparsable (e.g. an unclosed IPv6 bracket): nothing of it is shown
        return f"<unparsable URL, {len(url)} characters>"
    netloc = parts.netloc
    if has_password:
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}:{MASK}@{host}"
    options = [
        f"{name}={MASK}" if name.lower() == "password" and sep else f"{name}{sep}{value}"
        for name, sep, value in (option.partition("=") for option in parts.query.split("&") if option)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(options)))


def redis_client(url: str, ca_file: Path | None = None) -> redis_asyncio.Redis:
    """A client (it connects on first use) for a redis://, rediss:// (TLS) or unix:// URL. A TLS server's
    certificate is checked against ca_file when given, the system's CAs otherwise."""
    options: dict[str, Any] = {}
    if ca_file is not None:
        if _scheme(url) != "rediss":
            raise ValueError(f"a CA file is for rediss:// (TLS) URLs, not {redact_url(url)}")
        options["ssl_ca_certs"] = str(ca_file)
    # One immediate retry, on a fresh connection (a pooled one goes stale when Redis restarts); then the
    # error, fast: callers have deadlines of their own, well under redis-py's default of 10 retries with backoff.
    return redis_asyncio.Redis.from_url(
        url, socket_timeout=2.0, socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 1), **options
    )


async def open_redis(url: str, ca_file: Path | None = None) -> redis_asyncio.Redis:
    client = redis_client(url, ca_file)
    try:
        await client.ping()
    except (redis_asyncio.RedisError, OSError) as error:
        await client.aclose()
        raise Unavailable(f"redis at {redact_url(url)} does not answer: {error}") from None
    return client


@contextmanager
def redis_failures(what: str) -> Iterator[None]:
    """Redis errors as the service's own: the store is unavailable. (redis-py's messages name the host and
    port, never the URL's credentials.)"""
    try:
        yield
    except (redis_asyncio.RedisError, OSError) as error:
        raise Unavailable(f"redis {what} failed: {error}") from None
