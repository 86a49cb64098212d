"""Shared fixtures (real redis-servers on 127.0.0.1 for the online-store tests) and the kind of every test
module: `make test-unit` runs the unit modules only (in-process logic, about a minute); `make test` (CI) runs
every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer

# In-process logic on small data: no server, no subprocess beyond a fresh interpreter, no Keras training
# (a single slow test in one of them carries @pytest.mark.slow itself).
UNIT = {
    "test_artifact_durability",
    "test_breaker",
    "test_candidates_core",
    "test_demo_data",
    "test_gateway_core",
    "test_item_index",
    "test_item_registry",
    "test_logs",
    "test_protos",
    "test_ranking_core",
    "test_reload",
    "test_resources",
    "test_runtime_boundary",
    "test_tracing",
    "test_trainer_data",
    "test_trainer_models",
    "test_validation",
    "test_workflow_encoding",
}
# Start real servers or processes over real connections: gRPC servers, tritonserver, redis-server, kubectl,
# the recsys command.
INTEGRATION = {
    "test_auth",
    "test_bootstrap",
    "test_channel_options",
    "test_cli",
    "test_deploy",
    "test_distributed_training",
    "test_event_stores",
    "test_event_write_replay",
    "test_feature_parity",
    "test_fuzz",
    "test_gateway_client",
    "test_gateway_downstream",
    "test_integration",
    "test_online_state_outage",
    "test_quotas",
    "test_redis_connection",
    "test_settings",
    "test_synthetic_service",
    "test_tls",
    "test_triton_repository",
}
# Train Keras models (seconds to minutes each).
SLOW = {
    "test_autoencoder",
    "test_item_autoencoder",
    "test_keras_models",
    "test_progress",
    "test_ranker_onnx",
    "test_sequential",
    "test_sparse_updates",
    "test_synthesis",
    "test_trainer_pipeline",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test by its module's kind; a module of no kind is an error, so test-unit stays fast."""
    unclassified = set()
    for item in items:
        module = item.path.stem
        if module in INTEGRATION:
            item.add_marker(pytest.mark.integration)
        elif module in SLOW:
            item.add_marker(pytest.mark.slow)
        elif module not in UNIT:
            unclassified.add(module)
    if unclassified:
        raise pytest.UsageError(
            f"{', '.join(sorted(unclassified))}: add each to UNIT, INTEGRATION or SLOW in tests/conftest.py"
        )


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
