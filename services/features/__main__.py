"""The features service process: `python -m services.features`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.common.artifacts import ArtifactVersion
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings
from services.features.adapters import EventStore, RedisEventStore, SQLiteEventStore
from services.features.core import FeatureCore
from services.features.servicer import FeatureServicer, registration

STORES = ("sqlite", "redis")


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    max_events = env.integer("MAX_EVENTS_PER_REQUEST", 1000, 1, 1_000_000)
    max_per_user = env.integer("MAX_EVENTS_PER_USER", 10_000, 1, 10_000_000)
    retention_s = env.number("EVENT_ID_RETENTION_S", 30 * 86_400.0, 1.0, 10 * 365 * 86_400.0)
    store: EventStore
    if env.choice("STORE", "sqlite", STORES) == "redis":
        url = env.string("REDIS_URL", "redis://127.0.0.1:6379/0")
        store = RedisEventStore(url, env.string("REDIS_PREFIX", "recsys"), max_per_user, retention_s)
    else:
        state_dir = Path(env.string("STATE_DIR", str(settings.artifacts / "state")))
        store = SQLiteEventStore(state_dir / "events.sqlite", max_per_user, retention_s)
    servicer = FeatureServicer()

    async def build_core(artifacts: ArtifactVersion) -> FeatureCore:
        await store.open()
        return await asyncio.to_thread(FeatureCore, artifacts.path, artifacts.version, store, max_events)

    return ArtifactService("features", settings, servicer, registration(servicer), build_core, store.close)


if __name__ == "__main__":
    run_main("features", build)
