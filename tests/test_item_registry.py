"""The item registry, both backends: what one replica registers, another follows with its cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as redis_asyncio

from services.common.errors import ResourceExhausted, Unavailable
from services.common.item_registry import ItemRegistry, RedisItemRegistry, RegisteredItem, SQLiteItemRegistry


@pytest.fixture(params=["sqlite", "redis"])
async def make_registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    opened: list[ItemRegistry] = []

    async def make(max_items: int = 1000) -> ItemRegistry:
        registry: ItemRegistry
        if request.param == "sqlite":
            registry = SQLiteItemRegistry(tmp_path / "registered.sqlite", max_items)
        else:
            registry = RedisItemRegistry(request.getfixturevalue("redis_url"), f"test-{request.node.name}", max_items)
        await registry.open()
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        await registry.close()


def item(item_id: str, value: float, genres: str = "horror") -> RegisteredItem:
    return RegisteredItem(item_id, {"genres": genres}, np.full(3, value, np.float32))


async def test_replicas_follow_what_is_registered(make_registry) -> None:  # type: ignore[no-untyped-def]
    writer, reader = await make_registry(), await make_registry()
    assert await writer.add("v1", [item("a", 1.0), item("b", 2.0)]) == 2
    seen, cursor = await reader.since("v1", 0)
    assert [i.item_id for i in seen] == ["a", "b"]
    np.testing.assert_array_equal(seen[1].vector, np.full(3, 2.0, np.float32))
    assert seen[0].attributes == {"genres": "horror"}
    assert await reader.since("v1", cursor) == ([], cursor)
    # Registering again keeps the first vector; a new item shows up after the cursor only.
    assert await writer.add("v1", [item("a", 9.0), item("c", 3.0)]) == 1
    fresh, cursor_2 = await reader.since("v1", cursor)
    assert [i.item_id for i in fresh] == ["c"] and cursor_2 > cursor
    everything, _ = await reader.since("v1", 0)
    assert float(everything[0].vector[0]) == 1.0


async def test_versions_are_separate_and_attributes_span_them(make_registry) -> None:  # type: ignore[no-untyped-def]
    registry = await make_registry()
    await registry.add("v1", [item("a", 1.0, "comedy")])
    assert await registry.since("v2", 0) == ([], 0)
    assert await registry.attributes() == {"a": {"genres": "comedy"}}
    assert await registry.add("v2", [item("a", 5.0, "comedy")]) == 1
    (only,), _ = await registry.since("v2", 0)
    assert float(only.vector[0]) == 5.0


async def test_a_full_registry_refuses_new_items_whole(make_registry) -> None:  # type: ignore[no-untyped-def]
    registry = await make_registry(max_items=3)
    assert await registry.add("v1", [item("a", 1.0), item("b", 2.0), item("a", 1.0)]) == 2
    with pytest.raises(ResourceExhausted, match="at most 3 items, 2 are registered and this request would add 2"):
        await registry.add("v1", [item("c", 3.0), item("d", 4.0)])
    assert [i.item_id for i in (await registry.since("v1", 0))[0]] == ["a", "b"]  # nothing of it was stored
    assert await registry.add("v1", [item("c", 3.0), item("a", 9.0)]) == 1
    # Items already registered still go to a new version (a retrain's backfill); a new id does not fit.
    assert await registry.add("v2", [item("a", 5.0), item("b", 5.0), item("c", 5.0)]) == 3
    with pytest.raises(ResourceExhausted, match="registry is full"):
        await registry.add("v2", [item("e", 1.0)])
    assert sorted(await registry.attributes()) == ["a", "b", "c"]


async def test_a_failed_redis_write_leaves_the_item_free_for_the_retry(redis_url: str) -> None:
    registry = RedisItemRegistry(redis_url, "test-registry-failed-write")
    await registry.open()
    raw = redis_asyncio.Redis.from_url(redis_url)
    try:
        await raw.set("test-registry-failed-write:registered:v1", "not a list")
        with pytest.raises(Unavailable, match="WRONGTYPE"):
            await registry.add("v1", [item("a", 1.0)])
        await raw.delete("test-registry-failed-write:registered:v1")
        assert await registry.add("v1", [item("a", 1.0)]) == 1  # the retry registers it
        assert [i.item_id for i in (await registry.since("v1", 0))[0]] == ["a"]
    finally:
        await raw.aclose()
        await registry.close()
