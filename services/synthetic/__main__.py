"""The synthetic-data service process: `python -m services.synthetic`."""

from __future__ import annotations

import asyncio
import logging

from services.common.artifacts import ArtifactVersion
from services.common.item_registry import DEFAULT_MAX_REGISTERED_ITEMS, item_registry
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings
from services.common.stores import StateSettings
from services.synthetic.core import SyntheticCore
from services.synthetic.servicer import StreamLimits, SyntheticServicer, registration

log = logging.getLogger(__name__)


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    max_items = env.integer("MAX_REGISTERED_ITEMS", DEFAULT_MAX_REGISTERED_ITEMS, 1, 100_000_000)
    registry = item_registry(StateSettings.read(env, settings.artifacts), max_items)
    servicer = SyntheticServicer(StreamLimits.read(env, settings))

    async def build_core(artifacts: ArtifactVersion) -> SyntheticCore:
        core = await asyncio.to_thread(SyntheticCore, artifacts.path, artifacts.version, registry)
        backfilled = await core.backfill()
        if backfilled:
            log.info("registered items carried to this version", extra={"items": backfilled})
        return core

    return ArtifactService(
        "synthetic",
        settings,
        servicer,
        registration(servicer),
        build_core,
        registry.close,
        open_resources=registry.open,
    )


if __name__ == "__main__":
    run_main("synthetic", build)
