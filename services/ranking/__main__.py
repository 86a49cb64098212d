"""The ranking service process: `python -m services.ranking`."""

from __future__ import annotations

import asyncio
import logging

from services.common.artifacts import ArtifactVersion
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings
from services.common.tls import TLSSettings, channel_credentials
from services.ranking.adapters import TritonModel, TritonRanker
from services.ranking.core import RankingCore
from services.ranking.servicer import RankingServicer, registration

log = logging.getLogger(__name__)


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    tls = TLSSettings.read(env)
    # mTLS to Triton when the service has a certificate (tritonserver --grpc-use-ssl-mutual).
    credentials = channel_credentials(tls.files.load()) if tls.files is not None and not env.problems else None
    ranker = TritonRanker(
        env.address("TRITON_ADDR"), env.number("TRITON_LOAD_TIMEOUT_S", 300.0, 1.0, 3600.0), credentials
    )
    timeout_s = env.integer("TRITON_TIMEOUT_MS", 250, 1, 600_000) / 1000
    wait_s = env.number("DEPENDENCY_WAIT_S", 120.0, 0.1, 3600.0)
    # How long the previous version's ranker stays loaded after a switch: requests that started on it finish,
    # and other ranking replicas sharing this Triton follow `current` within their own poll interval.
    unload_grace_s = env.number("TRITON_UNLOAD_GRACE_S", 30.0, 0.0, 3600.0)
    servicer = RankingServicer(timeout_s)
    unloads: set[asyncio.Task[None]] = set()
    # Versions whose core is being built: a rollback to the version whose ranker waits to be unloaded must
    # keep it, though it is not serving yet.
    building: set[str] = set()

    async def open_triton() -> None:
        await ranker.open(wait_s)

    async def build_core(artifacts: ArtifactVersion) -> RankingCore:
        building.add(artifacts.version)
        try:
            model = await ranker.model(artifacts.version)
            try:
                return await asyncio.to_thread(RankingCore, artifacts.path, artifacts.version, model)
            except Exception:
                # A version that cannot be served leaves nothing loaded in Triton (unless it is the one serving).
                serving = servicer.core
                if serving is None or serving.version != artifacts.version:
                    await model.unload()
                raise
        finally:
            building.discard(artifacts.version)

    async def after_switch(old: RankingCore | None, new: RankingCore) -> None:
        if old is None or not isinstance(old.ranker, TritonModel) or old.version == new.version:
            return
        retired = old.ranker

        async def unload_later() -> None:
            await asyncio.sleep(unload_grace_s)
            serving = servicer.core
            if (serving is not None and serving.version == old.version) or old.version in building:
                return  # switched back to it meanwhile, or switching back now (a rollback)
            await retired.unload()
            log.info("previous ranker unloaded", extra={"model": retired.name})

        task = asyncio.get_running_loop().create_task(unload_later())
        unloads.add(task)
        task.add_done_callback(unloads.discard)

    async def close() -> None:
        for task in list(unloads):
            task.cancel()
        await ranker.close()

    return ArtifactService(
        "ranking",
        settings,
        servicer,
        registration(servicer),
        build_core,
        close,
        open_resources=open_triton,
        after_switch=after_switch,
    )


if __name__ == "__main__":
    run_main("ranking", build)
