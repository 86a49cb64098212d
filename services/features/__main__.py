"""The features service process: `python -m services.features`."""

from __future__ import annotations

import asyncio

from services.common.artifacts import ArtifactVersion
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings, read_max_events_per_request
from services.common.stores import StateSettings
from services.features.adapters import (
    DEFAULT_EVENT_ID_RETENTION_S,
    DEFAULT_EVENT_RETENTION_S,
    DEFAULT_MAX_EVENT_IDS_PER_USER,
    DEFAULT_MAX_EVENTS_PER_USER,
    DEFAULT_READ_TIMEOUT_S,
    EventStore,
    RedisEventStore,
    SQLiteEventStore,
)
from services.features.core import FeatureCore
from services.features.servicer import FeatureServicer, registration

DAY_S = 86_400


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    max_events = read_max_events_per_request(env)
    max_per_user = env.integer("MAX_EVENTS_PER_USER", DEFAULT_MAX_EVENTS_PER_USER, 1, 10_000_000)
    id_retention_s = env.number("EVENT_ID_RETENTION_S", DEFAULT_EVENT_ID_RETENTION_S, 1.0, 10 * 365 * DAY_S)
    retention_s = DAY_S * env.integer("EVENT_RETENTION_DAYS", round(DEFAULT_EVENT_RETENTION_S / DAY_S), 1, 10 * 365)
    max_ids_per_user = env.integer("MAX_EVENT_IDS_PER_USER", DEFAULT_MAX_EVENT_IDS_PER_USER, 1, 10_000_000)
    read_timeout_s = env.integer("EVENT_READ_TIMEOUT_MS", round(DEFAULT_READ_TIMEOUT_S * 1000), 1, 60_000) / 1000
    state = StateSettings.read(env, settings.artifacts)
    store: EventStore
    if state.store == "redis":
        store = RedisEventStore(
            state.redis_url,
            state.redis_prefix,
            max_per_user,
            id_retention_s,
            retention_s=retention_s,
            max_event_ids_per_user=max_ids_per_user,
            read_timeout_s=read_timeout_s,
            ca_file=state.redis_ca,
        )
    else:
        store = SQLiteEventStore(
            state.state_dir / "events.sqlite",
            max_per_user,
            id_retention_s,
            retention_s=retention_s,
            max_event_ids_per_user=max_ids_per_user,
        )
    servicer = FeatureServicer()

    async def build_core(artifacts: ArtifactVersion) -> FeatureCore:
        return await asyncio.to_thread(FeatureCore, artifacts.path, artifacts.version, store, max_events)

    return ArtifactService(
        "features", settings, servicer, registration(servicer), build_core, store.close, open_resources=store.open
    )


if __name__ == "__main__":
    run_main("features", build)
