"""Tracing across gRPC → Celery → worker with OpenTelemetry; off by default.

- `JOBMESH_OTLP_ENDPOINT=host:port` exports spans over OTLP/gRPC (a collector, Jaeger, Tempo).
- `JOBMESH_TRACE_FILE=PATH` appends finished spans to PATH as JSON lines (tests, debugging).

With neither set, `configure` does nothing and every span is OpenTelemetry's no-op span, so the
cost is a few attribute look-ups per call.

The spans: the gateway's ErrorInterceptor opens a SERVER span per RPC (continuing a caller's W3C
`traceparent` metadata when there is one); the dispatcher (and the coalescer, the batch service)
puts the current context into the Celery message headers; `WorkerKit` opens a CONSUMER span per
task as that context's child. One Recognize is then one trace: gateway span → task span.
Prefork children set up their own provider after the fork (exporter threads do not survive it).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

TRACER = "jobmesh"
_configured = False
_lock = threading.Lock()


def configure(service_name: str, otlp_endpoint: str = "", trace_file: str = "") -> bool:
    """Installs the tracer provider for this process; returns whether tracing is on."""
    global _configured
    if not (otlp_endpoint or trace_file):
        return False
    with _lock:
        if _configured:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
        if trace_file:
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(trace_file)))
        trace.set_tracer_provider(provider)
        _configured = True
        return True


def configure_from_settings(service_name: str, settings) -> bool:
    return configure(service_name, settings.otlp_endpoint, settings.trace_file)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def inject() -> dict[str, str]:
    """The current context as message headers (`traceparent`, maybe `tracestate`)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


class JsonLinesExporter:
    """A SpanExporter writing one JSON object per finished span (ids in hex), appending, so
    several processes may share one file (each line is one write)."""

    def __init__(self, path: str):
        self.path = path

    def export(self, spans) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = []
        for s in spans:
            ctx, parent = s.get_span_context(), s.parent
            lines.append(json.dumps({
                "name": s.name, "kind": s.kind.name, "trace_id": f"{ctx.trace_id:032x}",
                "span_id": f"{ctx.span_id:016x}",
                "parent_id": f"{parent.span_id:016x}" if parent else None,
                "service": s.resource.attributes.get("service.name", ""),
                "status": s.status.status_code.name, "pid": os.getpid(),
                "start_ns": s.start_time, "end_ns": s.end_time,
                "attributes": {k: v for k, v in (s.attributes or {}).items()
                               if isinstance(v, str | int | float | bool)}}))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
