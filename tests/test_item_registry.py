"""The item registry, both backends: what one replica registers, another follows with its cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from services.common.item_registry import ItemRegistry, RedisItemRegistry, RegisteredItem, SQLiteItemRegistry


@pytest.fixture(params=["sqlite", "redis"])
async def make_registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    opened: list[ItemRegistry] = []

    async def make() -> ItemRegistry:
        registry: ItemRegistry
        if request.param == "sqlite":
            registry = SQLiteItemRegistry(tmp_path / "registered.sqlite")
        else:
            registry = RedisItemRegistry(request.getfixturevalue("redis_url"), f"test-{request.node.name}")
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
