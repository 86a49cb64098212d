"""The synthetic-data service process: `python -m services.synthetic`."""

from __future__ import annotations

from services.common.server import run_main
from services.common.service import ArtifactService, in_thread
from services.common.settings import EnvReader, ServerSettings
from services.synthetic.core import SyntheticCore
from services.synthetic.servicer import SyntheticServicer, registration


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    servicer = SyntheticServicer()
    core = in_thread(lambda a: SyntheticCore(a.path, a.version))
    return ArtifactService("synthetic", settings, servicer, registration(servicer), core)


if __name__ == "__main__":
    run_main("synthetic", build)
