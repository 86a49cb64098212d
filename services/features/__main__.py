"""The features service process: `python -m services.features`."""

from __future__ import annotations

import asyncio

from services.common.artifacts import ArtifactVersion
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings
from services.common.stores import StateSettings
from services.features.adapters import EventStore, RedisEventStore, SQLiteEventStore
from services.features.core import FeatureCore
from services.features.servicer import FeatureServicer, registration


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    max_events = env.integer("MAX_EVENTS_PER_REQUEST", 1000, 1, 1_000_000)
    max_per_user = env.integer("MAX_EVENTS_PER_USER", 10_000, 1, 10_000_000)
    retention_s = env.number("EVENT_ID_RETENTION_S", 30 * 86_400.0, 1.0, 10 * 365 * 86_400.0)
    state = StateSettings.read(env, settings.artifacts)
    store: EventStore
    if state.store == "redis":
        store = RedisEventStore(state.redis_url, state.redis_prefix, max_per_user, retention_s)
    else:
        store = SQLiteEventStore(state.state_dir / "events.sqlite", max_per_user, retention_s)
    servicer = FeatureServicer()

    async def build_core(artifacts: ArtifactVersion) -> FeatureCore:
        return await asyncio.to_thread(FeatureCore, artifacts.path, artifacts.version, store, max_events)

    return ArtifactService(
        "features", settings, servicer, registration(servicer), build_core, store.close, open_resources=store.open
    )


if __name__ == "__main__":
    run_main("features", build)
