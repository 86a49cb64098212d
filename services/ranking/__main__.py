"""The ranking service process: `python -m services.ranking`."""

from __future__ import annotations

from services.common.server import run_main
from services.common.service import ArtifactService, in_thread
from services.common.settings import EnvReader, ServerSettings
from services.ranking.core import RankingCore
from services.ranking.servicer import RankingServicer, registration


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    servicer = RankingServicer()
    core = in_thread(lambda a: RankingCore(a.path, a.version, a.config))
    return ArtifactService("ranking", settings, servicer, registration(servicer), core)


if __name__ == "__main__":
    run_main("ranking", build)
