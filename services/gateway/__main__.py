"""The gateway process: `python -m services.gateway`."""

from __future__ import annotations

import asyncio

from recsys_runtime.layout import MODELS_DIR, WORKFLOW_DIR
from recsys_runtime.models.popularity import PopularityRanking, load_popularity
from recsys_runtime.workflow import Workflow
from services.common.artifacts import ArtifactVersion
from services.common.quotas import gateway_interceptors
from services.common.server import run_main
from services.common.service import ArtifactService
from services.common.settings import EnvReader, ServerSettings, read_max_events_per_request
from services.common.tls import ClientCertificates, TLSSettings
from services.gateway.adapters import Addresses, BreakerSettings, Downstream, StageBudgets
from services.gateway.core import GatewayCore
from services.gateway.servicer import GatewayServicer, registration


def _fallback(artifacts: ArtifactVersion) -> PopularityRanking:
    workflow = Workflow.load(artifacts.path / WORKFLOW_DIR)
    scores = load_popularity(artifacts.path / MODELS_DIR)
    return PopularityRanking(workflow.items.ids.to_numpy(), scores, workflow.items.encode)


def build(env: EnvReader, settings: ServerSettings) -> ArtifactService:
    addresses = Addresses(
        features=env.address("FEATURES_ADDR"),
        candidates=env.address("CANDIDATES_ADDR"),
        ranking=env.address("RANKING_ADDR"),
        synthetic=env.address("SYNTHETIC_ADDR"),
    )
    budgets = StageBudgets(
        features=env.integer("FEATURES_TIMEOUT_MS", 300, 1, 600_000) / 1000,
        candidates=env.integer("CANDIDATES_TIMEOUT_MS", 300, 1, 600_000) / 1000,
        ranking=env.integer("RANKING_TIMEOUT_MS", 300, 1, 600_000) / 1000,
        synthetic=env.integer("SYNTHETIC_TIMEOUT_MS", 5_000, 1, 600_000) / 1000,
    )
    default_deadline_s = env.integer("DEFAULT_DEADLINE_MS", 2_000, 1, 600_000) / 1000
    max_events = read_max_events_per_request(env)
    dependency_wait_s = env.number("DEPENDENCY_WAIT_S", 120.0, 0.1, 3600.0)
    breakers = BreakerSettings(
        failures=env.integer("BREAKER_FAILURES", 5, 1, 10_000),
        open_s=env.integer("BREAKER_OPEN_MS", 1_000, 1, 600_000) / 1000,
    )
    tls = TLSSettings.read(env)
    certificates = ClientCertificates(tls.files) if tls.files is not None and not env.problems else None
    downstream = Downstream(addresses, budgets, settings.max_message_bytes, breakers, certificates)
    servicer = GatewayServicer(downstream, default_deadline_s)

    async def open_downstream() -> None:
        downstream.open()
        downstream.follow_certificate_rotation()
        await downstream.wait_until_ready(dependency_wait_s)

    async def build_core(artifacts: ArtifactVersion) -> GatewayCore:
        fallback = await asyncio.to_thread(_fallback, artifacts)
        candidates_n = int(artifacts.config["serving"]["candidates"])
        return GatewayCore(downstream, fallback, artifacts.version, candidates_n, max_events)

    return ArtifactService(
        "gateway",
        settings,
        servicer,
        registration(servicer),
        build_core,
        downstream.close,
        open_resources=open_downstream,
    )


if __name__ == "__main__":
    run_main("gateway", build, interceptors=gateway_interceptors)
