"""Shared fixtures: real redis-servers on 127.0.0.1 for the online-store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server shared by the session. `make test` installs it and sets
    RECSYS_REQUIRE_REDIS=1, so CI fails rather than skips when it is missing."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url()
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may stop, kill or restart."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()
