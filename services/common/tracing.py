"""OpenTelemetry: trace context across every hop, spans exported where a collector is configured.

With the standard OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, every gRPC server
and client of the suite is instrumented (opentelemetry-instrumentation-grpc): each service records its spans,
sampled as OTEL_TRACES_SAMPLER says (default: parent-based, always on), sends them over OTLP/gRPC, and carries
W3C `traceparent` metadata to the next hop. Without an exporter nothing is recorded, and the instrumentation
(about 15% of the suite's throughput on two cores) is left out; a caller's `traceparent` is still passed on
as it came, through every hop, so the caller's trace stays whole. The ranking service hands the context on to
Triton in its request headers either way. OTEL_SDK_DISABLED=true turns all of it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
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


# Read once: the mode is fixed for the life of a process.
_INSTRUMENTED = exporting()
_PASS_THROUGH = not _INSTRUMENTED and not disabled()
TRACEPARENT = "traceparent"


def server_interceptors() -> Sequence[grpc.aio.ServerInterceptor]:
    return [aio_server_interceptor(filter_=_NOT_HEALTH)] if _INSTRUMENTED else []


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    return list(aio_client_interceptors(filter_=_NOT_HEALTH)) if _INSTRUMENTED else []


@contextlib.contextmanager
def incoming(metadata: Sequence[tuple[str, Any]] | None) -> Iterator[None]:
    """Without instrumentation: the caller's trace context is the current one while its call runs (no span of
    our own), so outgoing calls and log lines carry it."""
    if not _PASS_THROUGH or not metadata or not any(key == TRACEPARENT for key, _ in metadata):
        yield
        return
    token = otel_context.attach(propagate.extract({key: value for key, value in metadata}))
    try:
        yield
    finally:
        otel_context.detach(token)


def outgoing_metadata() -> tuple[tuple[str, str], ...] | None:
    """Without instrumentation: the current trace context as gRPC metadata (None outside a trace; the
    interceptors inject it themselves when instrumented)."""
    headers = outgoing_headers() if _PASS_THROUGH else None
    return tuple(headers.items()) if headers else None


def outgoing_headers() -> dict[str, str] | None:
    """The current trace context as headers, for calls made without gRPC interceptors (tritonclient)."""
    if disabled() or not trace.get_current_span().get_span_context().is_valid:
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
