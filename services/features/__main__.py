"""The features service process: `python -m services.features`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.common.artifacts import ArtifactVersion
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings
from services.features.adapters import SQLiteEventStore
from services.features.core import FeatureCore
from services.features.servicer import FeatureServicer, registration


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    state_dir = Path(env.string("STATE_DIR", str(settings.artifacts / "state")))
    max_events = env.integer("MAX_EVENTS_PER_REQUEST", 1000, 1, 1_000_000)
    store = SQLiteEventStore(state_dir / "events.sqlite")
    servicer = FeatureServicer()

    async def build_core(artifacts: ArtifactVersion) -> FeatureCore:
        await store.open()
        return await asyncio.to_thread(FeatureCore, artifacts.path, artifacts.version, store, max_events)

    return ArtifactService("features", settings, servicer, registration(servicer), build_core, store.close)


if __name__ == "__main__":
    run_main("features", build)
