"""Prometheus metrics of a service process, served on /metrics (RECSYS_METRICS_PORT).

Every service: RPCs by method and status code, their latency, the artefact version it serves, whether that is
another version than `current` names because that one failed to load, and its switches to new versions
(succeeded or failed). The
gateway also: the latency of each stage of a request and the degraded answers by the stage skipped.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Request latencies of a recommender suite: from sub-millisecond hops to multi-second streams.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_REQUESTS = Counter("recsys_rpc_requests", "RPCs answered, by method and status code", ["service", "method", "code"])
RPC_LATENCY = Histogram(
    "recsys_rpc_latency_seconds", "Time to answer an RPC", ["service", "method"], buckets=LATENCY_BUCKETS
)
MODEL_VERSION = Gauge("recsys_model_version", "1 for the artefact version this process serves", ["service", "version"])
ARTIFACT_FALLBACK = Gauge(
    "recsys_artifact_fallback",
    "1 while this process serves another artefact version in place of the one `current` names, which failed to"
    " load; 0 while it serves that one",
    ["service", "current"],
)
RELOADS = Counter(
    "recsys_model_reloads", "Switches to a new artefact version while serving, by outcome", ["service", "outcome"]
)
STAGE_LATENCY = Histogram(
    "recsys_gateway_stage_latency_seconds",
    "Time a gateway request spent in each downstream stage",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
DEGRADED = Counter("recsys_gateway_degraded_answers", "Answers given without a stage, by the stage", ["stage"])

_service = "unknown"


def set_service(name: str) -> None:
    global _service
    _service = name
    _rpc_counts.clear()
    _rpc_latencies.clear()


# Labelled series looked up once each: labels() takes a lock and builds its key on every call.
_rpc_counts: dict[tuple[str, str], Counter] = {}
_rpc_latencies: dict[str, Histogram] = {}
_stage_latencies: dict[str, Histogram] = {}


def record_rpc(method: str, code: str, seconds: float) -> None:
    count = _rpc_counts.get((method, code))
    if count is None:
        count = _rpc_counts[method, code] = RPC_REQUESTS.labels(_service, method, code)
    latency = _rpc_latencies.get(method)
    if latency is None:
        latency = _rpc_latencies[method] = RPC_LATENCY.labels(_service, method)
    count.inc()
    latency.observe(seconds)


def serving_version(version: str) -> None:
    MODEL_VERSION.clear()
    MODEL_VERSION.labels(_service, version).set(1)


def artifact_fallback(current: str, active: bool) -> None:
    """`current`: the version `current` names; active: another version serves in its place."""
    ARTIFACT_FALLBACK.clear()
    ARTIFACT_FALLBACK.labels(_service, current).set(1 if active else 0)


def reload_outcome(outcome: str) -> None:
    RELOADS.labels(_service, outcome).inc()


class StageTimer:
    """`with StageTimer("ranking"):` times the block into the stage's latency histogram (a class: cheaper per request
    than a generator-based context manager)."""

    __slots__ = ("_latency", "_started")

    def __init__(self, stage: str) -> None:
        latency = _stage_latencies.get(stage)
        if latency is None:
            latency = _stage_latencies[stage] = STAGE_LATENCY.labels(stage)
        self._latency = latency
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self._latency.observe(time.perf_counter() - self._started)


def degraded(stage: str) -> None:
    DEGRADED.labels(stage).inc()


def serve_metrics(host: str, port: int) -> int:
    """Start the /metrics HTTP endpoint on a thread; port 0 picks a free one. Returns the port."""
    server, _ = start_http_server(port, addr=host)
    return int(server.server_port)
