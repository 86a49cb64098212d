"""The candidates service process: `python -m services.candidates`."""

from __future__ import annotations

import asyncio

from services.candidates.adapters import RegistryFollower
from services.candidates.core import CandidateCore
from services.candidates.servicer import CandidateServicer, registration
from services.common.artifacts import ArtifactVersion
from services.common.item_registry import item_registry
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings
from services.common.stores import StateSettings


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    follower = RegistryFollower(
        item_registry(StateSettings.read(env, settings.artifacts)),
        env.integer("REGISTRY_POLL_MS", 200, 10, 60_000) / 1000,
    )
    servicer = CandidateServicer()

    async def build_core(artifacts: ArtifactVersion) -> CandidateCore:
        core = await asyncio.to_thread(CandidateCore, artifacts.path, artifacts.version, artifacts.config)
        await follower.attach(core)  # items registered before this version's first request are served by it
        return core

    return ArtifactService(
        "candidates",
        settings,
        servicer,
        registration(servicer),
        build_core,
        follower.close,
        open_resources=follower.open,
    )


if __name__ == "__main__":
    run_main("candidates", build)
