"""Traces of a run: each process writes its finished spans to the run folder, one JSON line each.

With the run's ``traces`` setting on (the demos turn it on; ``up --traces``), each service
process calls `start` before it builds its app: an OpenTelemetry SDK ``TracerProvider``
whose resource names the service (``service.name``), a ``SimpleSpanProcessor`` and a
`JsonLinesExporter` that appends each span, as it ends, to ``traces/SERVICE.jsonl`` in the
run folder; then `failsafe.opentelemetry.instrument` installs it, so that failsafe's HTTP
transports, queue consumers and publishers, error sink and Error-handling service start
their spans and carry ``traceparent`` from process to process. The services' apps are
wrapped in `failsafe.tracing.TracingMiddleware` (which does nothing while no tracing is
installed), so each request they serve is a span continuing its caller's trace.

`Site` is the caller's side, the shop's site in the demos: it starts the root span of each
trace and gives the ``traceparent`` header to send.

`examples._support.traces` reads the files back and prints one trace as a tree.

Bounded: a file stops growing at `MAX_FILE_BYTES` (10 MB); the spans after that are dropped,
and the process logs it once. Only this module imports the OpenTelemetry SDK, and only
when ``traces`` is on (the ``dev`` install of the repository has it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from examples._support.settings import RunSettings
from examples._support.traces import TRACES_DIR
from failsafe.opentelemetry import Instrumentation, instrument

__all__ = [
    "MAX_FILE_BYTES",
    "JsonLinesExporter",
    "Site",
    "SiteRequest",
    "span_json",
    "start",
    "trace_file",
    "tracer_provider",
]

log = logging.getLogger("examples.telemetry")

MAX_FILE_BYTES = 10 * 1024 * 1024
"""The size at which a trace file stops growing (the spans after it are dropped)."""

_KINDS = {
    trace.SpanKind.INTERNAL: "internal",
    trace.SpanKind.SERVER: "server",
    trace.SpanKind.CLIENT: "client",
    trace.SpanKind.PRODUCER: "producer",
    trace.SpanKind.CONSUMER: "consumer",
}


def trace_file(settings: RunSettings, service: str) -> Path:
    """Where service ``service`` writes its spans: ``traces/SERVICE.jsonl`` in the run folder."""
    return settings.path / TRACES_DIR / f"{service}.jsonl"


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes as JSON values (sequences as lists)."""
    return {
        key: list(value) if isinstance(value, tuple | list) else value
        for key, value in (attributes or {}).items()
    }


def span_json(span: ReadableSpan, service: str) -> dict[str, Any]:
    """One finished span as the JSON object of its line.

    ``trace_id`` (32 hex digits), ``span_id`` and ``parent_id`` (16, or ``null`` for a root),
    ``service``, ``name``, ``kind`` (``server``, ``client``, ``producer``, ``consumer``,
    ``internal``), ``start`` and ``end`` (nanoseconds since the epoch), ``status``
    (``unset``, ``ok``, ``error``), ``attributes``, and ``events`` (each ``name``, ``time``,
    ``attributes``).
    """
    context = span.get_span_context()
    assert context is not None  # a finished SDK span always has one
    parent = span.parent
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": None if parent is None else format(parent.span_id, "016x"),
        "service": service,
        "name": span.name,
        "kind": _KINDS.get(span.kind, "internal"),
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name.lower(),
        "attributes": _plain(span.attributes),
        "events": [
            {"name": event.name, "time": event.timestamp, "attributes": _plain(event.attributes)}
            for event in span.events
        ],
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one JSON line (`span_json`), flushed at once.

    Flushed per span, so that a process killed with ``kill -9`` loses nothing it finished.
    A process started again on the same file appends to it. Bounded: once the file holds
    ``max_bytes``, further spans are dropped (logged once). Thread-safe.

    Args:
        path: The file (its folder is created).
        service: The service's name, written in every line.
        max_bytes: The size at which the file stops growing.
    """

    def __init__(self, path: Path, service: str, *, max_bytes: int = MAX_FILE_BYTES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.service = service
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")
        self._size = path.stat().st_size
        self._full = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append ``spans``; dropped once the file is full or closed."""
        lines = [
            json.dumps(span_json(s, self.service), separators=(",", ":")) + "\n" for s in spans
        ]
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            for line in lines:
                size = len(line.encode())
                if self._size + size > self.max_bytes:
                    if not self._full:
                        self._full = True
                        log.warning(
                            "%s holds %d bytes: further spans are dropped", self.path, self._size
                        )
                    return SpanExportResult.FAILURE
                self._file.write(line)
                self._size += size
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


def tracer_provider(settings: RunSettings, service: str) -> TracerProvider:
    """A tracer provider naming ``service`` that writes every span to `trace_file`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = JsonLinesExporter(trace_file(settings, service), service)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def start(settings: RunSettings, service: str) -> Instrumentation | None:
    """Trace this process as ``service`` if the run's settings say so (``traces``).

    Only the traces are turned on: the span events of failsafe's decisions and the spans
    of its HTTP, queue and error-service edges. Metrics and gauges are left off (no metric
    exporter here: the ``/health`` route shows the gauges' numbers).

    Returns:
        The `Instrumentation` (``None`` when ``traces`` is off).
    """
    if not settings.traces:
        return None
    return instrument(
        tracer_provider=tracer_provider(settings, service), metrics=False, gauges=False
    )


@dataclass
class SiteRequest:
    """One request of the site, in its root span.

    Attributes:
        headers: The headers to send with it: its ``traceparent`` (empty without traces).
        trace_id: Its trace's id (``None`` without traces).
    """

    headers: dict[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    _span: trace.Span | None = None

    def answered(self, status: int) -> None:
        """Record the answer's status on the span."""
        if self._span is not None:
            self._span.set_attribute("http.response.status_code", status)


class Site:
    """The shop's site, the caller that starts each trace (in the demos).

    With ``traces`` on, each `request` is a CLIENT span of service ``site``, written to
    ``traces/site.jsonl``, whose ``traceparent`` the request carries; the services continue
    that trace. Without, `request` yields no header. Nothing here is installed globally:
    the site's process is not instrumented.

    Args:
        settings: The run's settings.
        service: The name of the caller's service in the trace.
    """

    def __init__(self, settings: RunSettings, service: str = "site") -> None:
        self._provider = tracer_provider(settings, service) if settings.traces else None
        self._tracer = None if self._provider is None else self._provider.get_tracer("examples")

    @contextlib.contextmanager
    def request(self, name: str, **attributes: str | int) -> Iterator[SiteRequest]:
        """A root span named ``name`` around one request; yields its headers."""
        if self._tracer is None:
            yield SiteRequest()
            return
        with self._tracer.start_as_current_span(
            name,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,  # an exception's message may hold a secret
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            trace_id = format(span.get_span_context().trace_id, "032x")
            yield SiteRequest(headers, trace_id, span)

    def close(self) -> None:
        """Flush and close the site's trace file."""
        if self._provider is not None:
            self._provider.shutdown()
