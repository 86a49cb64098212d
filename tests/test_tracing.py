"""services/common/tracing.py: when spans are exported, and trace ids in log lines."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from services.common import tracing
from services.common.logs import JsonFormatter


def test_spans_are_exported_only_where_an_endpoint_is_set() -> None:
    assert not tracing.exporting({})
    assert tracing.exporting({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.exporting({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"})
    assert not tracing.exporting({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"})
    assert tracing.disabled({"OTEL_SDK_DISABLED": "TRUE"}) and not tracing.disabled({"OTEL_SDK_DISABLED": "false"})


def test_log_lines_inside_a_span_carry_its_ids() -> None:
    formatter = JsonFormatter("test")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace_id" not in json.loads(formatter.format(record))
    tracer = TracerProvider().get_tracer(__name__)
    with tracer.start_as_current_span("request") as span:
        line = json.loads(formatter.format(record))
        headers = tracing.outgoing_headers()
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}" and line["span_id"] == f"{context.span_id:016x}"
    # What the ranking service hands Triton: the same trace, as a W3C traceparent header.
    assert headers is not None and list(headers) == ["traceparent"]
    assert headers["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
