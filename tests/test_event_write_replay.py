"""A Redis write whose reply is lost: redis-py resends it once on a fresh connection, after Redis already ran
it. The append must still store each event once, with or without an event id, and report the first run's
counts. A proxy between the store and a real redis-server loses the reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio

from services.common.validation import EventInput
from services.features.adapters import RedisEventStore
from tests.redis_server import RedisServer

PREFIX = "replay"
SCRIPT_COMMANDS = (b"EVAL", b"EVALSHA")


def complete_commands(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The names of the complete commands at the start of buffer (RESP arrays of bulk strings, as redis-py
    sends them), and the rest, which waits for more bytes."""
    names: list[bytes] = []
    while buffer:
        assert buffer.startswith(b"*"), buffer[:40]
        header_end = buffer.find(b"\r\n")
        if header_end < 0:
            break
        position, parts = header_end + 2, []
        for _ in range(int(buffer[1:header_end])):
            length_end = buffer.find(b"\r\n", position)
            if length_end < 0:
                return names, buffer
            start = length_end + 2
            end = start + int(buffer[position + 1 : length_end])
            if len(buffer) < end + 2:
                return names, buffer
            parts.append(buffer[start:end])
            position = end + 2
        names.append(parts[0].upper())
        buffer = buffer[position:]
    return names, buffer


class ReplyLosingProxy:
    """TCP between the store and Redis. Once armed, it forwards the next script command (EVAL or EVALSHA) to
    Redis, waits for Redis's reply and then closes the client's connection instead of relaying it: Redis ran
    the script, and the client saw its connection drop."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.armed = False
        self.script_requests = 0  # script commands seen, over every connection
        self.replies_lost = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        self._writers |= {client_writer, redis_writer}
        lose_next_reply = False

        async def requests() -> None:
            nonlocal lose_next_reply
            pending = b""
            while data := await client_reader.read(65536):
                names, pending = complete_commands(pending + data)
                for name in names:
                    if name in SCRIPT_COMMANDS:
                        self.script_requests += 1
                        if self.armed:  # set before Redis can answer: the reply is read after this write
                            self.armed, lose_next_reply = False, True
                redis_writer.write(data)
                await redis_writer.drain()

        async def replies() -> None:
            while data := await redis_reader.read(65536):
                if lose_next_reply:
                    self.replies_lost += 1
                    return  # Redis answered, so it ran the script; the client gets a closed connection
                client_writer.write(data)
                await client_writer.drain()

        relays = [asyncio.create_task(requests()), asyncio.create_task(replies())]
        try:
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for relay in relays:
                relay.cancel()
            for writer in (client_writer, redis_writer):
                writer.close()
                self._writers.discard(writer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[ReplyLosingProxy]:
    relay = ReplyLosingProxy(redis_server.port)
    await relay.start()
    yield relay
    await relay.close()


@pytest.fixture
async def store(proxy: ReplyLosingProxy) -> AsyncIterator[RedisEventStore]:
    events = RedisEventStore(proxy.url, PREFIX, 100, 3600.0)
    await events.open()
    # One ordinary write first, so Redis holds the script: a lost reply is then the script's, not NOSCRIPT's.
    assert await events.append([EventInput("warm-up", "i0", int(time.time()), "", 0.0)]) == (1, 0)
    yield events
    await events.close()


async def append_losing_the_reply(
    store: RedisEventStore, proxy: ReplyLosingProxy, events: list[EventInput]
) -> tuple[int, int]:
    sent_before = proxy.script_requests
    proxy.armed = True
    result = await store.append(events)
    # The proxy really made redis-py resend: one lost reply, and the script sent twice for this one call.
    assert (proxy.replies_lost, proxy.script_requests - sent_before) == (1, 2)
    return result


async def test_a_resent_append_stores_an_event_without_id_once(store: RedisEventStore, proxy: ReplyLosingProxy) -> None:
    now = int(time.time())
    assert await append_losing_the_reply(store, proxy, [EventInput("u1", "i1", now, "", 0.0)]) == (1, 0)
    assert await store.events_for("u1") == [("i1", now)]


async def test_a_resent_append_stores_an_event_with_id_once_and_reports_the_first_counts(
    store: RedisEventStore, proxy: ReplyLosingProxy
) -> None:
    now = int(time.time())
    events = [EventInput("u2", "i1", now, "e1", 0.0), EventInput("u2", "i2", now + 1, "", 0.0)]
    assert await append_losing_the_reply(store, proxy, events) == (2, 0)
    assert await store.events_for("u2") == [("i1", now), ("i2", now + 1)]
    # The id stays claimed: a later, separate call with it is a duplicate.
    assert await store.append([EventInput("u2", "i1", now, "e1", 0.0)]) == (0, 1)


async def test_ordinary_appends_count_and_store_as_before(store: RedisEventStore, proxy: ReplyLosingProxy) -> None:
    now = int(time.time())
    sent_before = proxy.script_requests
    first = [EventInput("u3", "i1", now, "e1", 0.0), EventInput("u3", "i2", now + 1, "e2", 0.0)]
    assert await store.append(first) == (2, 0)
    assert await store.append(first) == (0, 2)  # the same ids again: duplicates
    # Within one batch: a repeated id counts once, events without ids always count, two users in one call.
    batch = [
        EventInput("u3", "i3", now + 2, "e3", 0.0),
        EventInput("u3", "i3", now + 2, "e3", 0.0),
        EventInput("u3", "i4", now + 3, "", 0.0),
        EventInput("u4", "i1", now, "e1", 0.0),
    ]
    assert await store.append(batch) == (3, 1)
    # Two separate calls with the same event and no id are two events (each call has its own token).
    again = [EventInput("u4", "i5", now + 5, "", 0.0)]
    assert await store.append(again) == (1, 0)
    assert await store.append(again) == (1, 0)
    assert await store.append([]) == (0, 0)
    assert await store.events_for("u3") == [("i1", now), ("i2", now + 1), ("i3", now + 2), ("i4", now + 3)]
    assert await store.events_for("u4") == [("i1", now), ("i5", now + 5), ("i5", now + 5)]
    assert (proxy.replies_lost, proxy.script_requests - sent_before) == (0, 6)  # nothing resent


async def test_each_append_leaves_one_short_lived_write_token(
    store: RedisEventStore, redis_server: RedisServer
) -> None:
    now = int(time.time())
    assert await store.append([EventInput("u5", "i1", now, "", 0.0)]) == (1, 0)
    assert await store.append([EventInput("u5", "i1", now, "e1", 0.0)]) == (1, 0)
    admin = redis_asyncio.Redis.from_url(redis_server.url())
    try:
        tokens = [key async for key in admin.scan_iter(match=f"{PREFIX}:write:*")]
        assert len(tokens) == 3  # the two calls here and the fixture's warm-up write
        for token in tokens:
            assert 0 < await admin.ttl(token) <= store.write_token_ttl_s
    finally:
        await admin.aclose()
