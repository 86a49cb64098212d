"""OpenTelemetry: trace context across every hop, spans exported where a collector is configured.

Every gRPC server and client of the suite carries W3C `traceparent` metadata (opentelemetry-instrumentation-grpc),
and the ranking service passes it on to Triton in its request headers. Without an exporter configured, nothing
is recorded, but a caller's trace context still travels through every hop. With the standard
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, each service records its spans and
sends them over OTLP/gRPC, sampled as OTEL_TRACES_SAMPLER says (default: parent-based, always on).
OTEL_SDK_DISABLED=true turns all of it off, propagation included.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import negate, service_name

log = logging.getLogger(__name__)

# Health checks (probes, the launcher, Kubernetes) every second would bury the requests' traces.
_NOT_HEALTH = negate(service_name("grpc.health.v1.Health"))


def disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """OTEL_SDK_DISABLED=true: no spans and no propagation either (no interceptors at all)."""
    return environ.get("OTEL_SDK_DISABLED", "").lower() == "true"


def exporting(environ: Mapping[str, str] = os.environ) -> bool:
    if disabled(environ):
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_tracing(service: str, environ: Mapping[str, str] = os.environ) -> None:
    """Install the SDK with an OTLP exporter when one is configured; otherwise leave the API's no-op tracer,
    which still hands the incoming context on to outgoing calls."""
    if not exporting(environ):
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = environ.get("OTEL_SERVICE_NAME") or f"recsys-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans over OTLP", extra={"service_name": name})


def shutdown_tracing() -> None:
    """Flush the spans still queued (a no-op without the SDK)."""
    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def server_interceptors() -> Sequence[grpc.aio.ServerInterceptor]:
    return [] if disabled() else [aio_server_interceptor(filter_=_NOT_HEALTH)]


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    return [] if disabled() else list(aio_client_interceptors(filter_=_NOT_HEALTH))


def outgoing_headers() -> dict[str, str] | None:
    """The current trace context as headers, for calls made without gRPC interceptors (tritonclient)."""
    if disabled():
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def current_ids() -> dict[str, str]:
    """trace_id and span_id of the current span, for log lines; empty outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
