"""The candidates service process: `python -m services.candidates`."""

from __future__ import annotations

from services.candidates.core import CandidateCore
from services.candidates.servicer import CandidateServicer, registration
from services.common.server import run_main
from services.common.service import ArtifactService, in_thread
from services.common.settings import EnvReader, ServerSettings


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    servicer = CandidateServicer()
    core = in_thread(lambda a: CandidateCore(a.path, a.version, a.config))
    return ArtifactService("candidates", settings, servicer, registration(servicer), core)


if __name__ == "__main__":
    run_main("candidates", build)
