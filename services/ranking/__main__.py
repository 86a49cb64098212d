"""The ranking service process: `python -m services.ranking`."""

from __future__ import annotations

import asyncio

from services.common.artifacts import ArtifactVersion
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings
from services.ranking.adapters import TritonRanker
from services.ranking.core import RankingCore
from services.ranking.servicer import RankingServicer, registration


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    ranker = TritonRanker(env.address("TRITON_ADDR"))
    timeout_s = env.integer("TRITON_TIMEOUT_MS", 250, 1, 600_000) / 1000
    wait_s = env.number("DEPENDENCY_WAIT_S", 120.0, 0.1, 3600.0)
    servicer = RankingServicer(timeout_s)

    async def build_core(artifacts: ArtifactVersion) -> RankingCore:
        await ranker.open(wait_s)
        return await asyncio.to_thread(RankingCore, artifacts.path, artifacts.version, ranker)

    return ArtifactService("ranking", settings, servicer, registration(servicer), build_core, ranker.close)


if __name__ == "__main__":
    run_main("ranking", build)
