"""HTTP client spans and trace propagation, against real uvicorn servers on loopback.

The client side runs in the test process (an SDK tracer provider exporting to memory); the
server is a uvicorn process serving `traced_app` below: the app behind
`failsafe.tracing.TracingMiddleware`, with failsafe instrumented in that process too. The
server answers ``/spans`` with the server spans it finished, so a test can check that each
server span's parent is the client span of the attempt that reached it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from failsafe import Backoff, Hedging
from failsafe.http import AsyncResilientTransport, ResilientTransport
from failsafe.opentelemetry import instrument
from failsafe.testing import FakeClock
from failsafe.tracing import TracingMiddleware, current_trace_id
from tests.http.app import send_json
from tests.http.conftest import Server

# -- the server process's app --------------------------------------------------------------------
_server_spans: InMemorySpanExporter | None = None
_hits: dict[str, int] = defaultdict(int)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Routes: /ok (echoes the traceparent), /flaky/{name}/{n} (503 n times), /spans."""
    global _server_spans
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _server_spans = InMemorySpanExporter()
                provider = TracerProvider()
                provider.add_span_processor(SimpleSpanProcessor(_server_spans))
                instrument(tracer_provider=provider, metrics=False, gauges=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    parts = scope["path"].strip("/").split("/")
    body = {"traceparent": headers.get("traceparent"), "trace_id": current_trace_id()}
    if parts[0] == "flaky":
        _hits[parts[1]] += 1
        await send_json(send, 503 if _hits[parts[1]] <= int(parts[2]) else 200, body)
    elif parts[0] == "spans":
        assert _server_spans is not None
        spans = [
            {
                "name": s.name,
                "kind": s.kind.name,
                "span_id": format(s.context.span_id, "016x"),
                "trace_id": format(s.context.trace_id, "032x"),
                "parent": None if s.parent is None else format(s.parent.span_id, "016x"),
                "attributes": dict(s.attributes or {}),
            }
            for s in _server_spans.get_finished_spans()
        ]
        await send_json(send, 200, spans)
    else:
        await send_json(send, 200, body)


traced_app = TracingMiddleware(_app)


# -- the test process ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One traced server for the module."""
    started = Server("traced", app="tests.http.test_tracing:traced_app")
    yield started
    started.kill()


class Client:
    """Spans of the test process, and requests sent inside a caller's span (sync or async)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def __repr__(self) -> str:
        return self.kind

    def send(self, request: httpx.Request, **options: Any) -> httpx.Response | Exception:
        """Send ``request`` through a resilient transport, in the span "caller"."""
        options.setdefault("backoff", Backoff.none())
        options.setdefault("clock", FakeClock())
        tracer = self.provider.get_tracer("tests")
        if self.kind == "sync":
            with (
                tracer.start_as_current_span("caller", record_exception=False),
                httpx.Client(transport=ResilientTransport(**options)) as client,
            ):
                try:
                    return client.send(request)
                except Exception as exc:
                    return exc

        async def main() -> httpx.Response | Exception:
            with tracer.start_as_current_span("caller", record_exception=False):
                async with httpx.AsyncClient(
                    transport=AsyncResilientTransport(**options)
                ) as client:
                    try:
                        return await client.send(request)
                    except Exception as exc:
                        return exc

        return asyncio.run(main())

    def spans(self, kind: SpanKind = SpanKind.CLIENT) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is kind]

    def caller(self) -> ReadableSpan:
        (found,) = [s for s in self.exporter.get_finished_spans() if s.name == "caller"]
        return found


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    """Failsafe instrumented on an in-memory tracer, driven through httpx sync or async."""
    made = Client(request.param)
    with instrument(tracer_provider=made.provider, metrics=False, gauges=False):
        yield made


def server_spans(server: Server) -> dict[str, dict[str, Any]]:
    """The server spans the server finished, by their parent's span id."""
    spans = httpx.get(f"{server.url}/spans").json()
    return {s["parent"]: s for s in spans if s["parent"] is not None}


def ids(span: ReadableSpan) -> tuple[str, str]:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def test_each_attempt_is_a_client_span_that_the_server_continues(
    client: Client, server: Server
) -> None:
    """Retried: a client span per attempt under the caller; each a server span's parent."""
    name = uuid.uuid4().hex
    request = httpx.Request("GET", f"{server.url}/flaky/{name}/2?token=s3cret")
    result = client.send(request, attempts=3)
    assert isinstance(result, httpx.Response)
    assert result.status_code == 200
    caller = client.caller()
    attempts = client.spans()
    assert len(attempts) == 3
    for number, span in enumerate(attempts):
        assert span.name == "GET"
        assert span.parent is not None
        assert span.parent.span_id == caller.context.span_id
        attributes = dict(span.attributes or {})
        assert attributes["http.request.method"] == "GET"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == server.port
        assert attributes["url.full"] == f"{server.url}/flaky/{name}/2"  # no query string
        assert attributes["failsafe.endpoint"] == server.url
        assert attributes.get("http.request.resend_count", 0) == number
        assert attributes["http.response.status_code"] == (503 if number < 2 else 200)
        if number < 2:
            assert attributes["error.type"] == "503"
            assert span.status.status_code is StatusCode.ERROR
        else:
            assert "error.type" not in attributes
    trace_id, last = ids(attempts[-1])
    assert result.json()["traceparent"].startswith(f"00-{trace_id}-{last}-")
    assert result.json()["trace_id"] == trace_id  # current_trace_id() in the server's handler
    received = server_spans(server)
    for span in attempts:
        served = received[ids(span)[1]]  # the server span whose parent is this attempt
        assert served["kind"] == "SERVER"
        assert served["trace_id"] == trace_id
        assert served["attributes"]["url.path"] == f"/flaky/{name}/2"
    assert [e.name for e in caller.events].count("failsafe.retry.scheduled") == 2
    assert "traceparent" not in request.headers  # the caller's request is left as it was


def test_a_failover_shows_both_endpoints(client: Client, server: Server, closed_port: str) -> None:
    """A failed-over request has one span per endpoint: the refused one, then the one answering."""
    request = httpx.Request("GET", "http://svc/ok")
    result = client.send(request, endpoints=[closed_port, server.url], attempts=1)
    assert isinstance(result, httpx.Response)
    refused, answered = client.spans()
    assert dict(refused.attributes or {})["failsafe.endpoint"] == closed_port
    assert dict(refused.attributes or {})["error.type"] == "httpx.ConnectError"
    assert refused.status.status_code is StatusCode.ERROR
    assert not refused.status.description  # no exception message
    assert dict(answered.attributes or {})["failsafe.endpoint"] == server.url
    assert dict(answered.attributes or {})["http.request.resend_count"] == 1
    assert dict(answered.attributes or {})["http.response.status_code"] == 200
    assert result.json()["traceparent"].startswith("00-{}-{}-".format(*ids(answered)))
    assert [e.name for e in client.caller().events].count("failsafe.failover") == 1


def test_userinfo_and_query_never_reach_a_span(client: Client, server: Server) -> None:
    """url.full and failsafe.endpoint drop a URL's userinfo and query string (secrets)."""
    host = server.url.removeprefix("http://")
    request = httpx.Request("GET", "http://svc/ok?api_key=hunter2")
    result = client.send(request, endpoints=[f"http://admin:hunter2@{host}"])
    assert isinstance(result, httpx.Response)
    (span,) = client.spans()
    assert dict(span.attributes or {})["url.full"] == f"{server.url}/ok"
    assert dict(span.attributes or {})["failsafe.endpoint"] == server.url
    assert "hunter2" not in span.to_json()


def test_a_hedge_is_a_client_span_too(client: Client, server: Server) -> None:
    """Each attempt of a hedged request (here one failing at once, then its hedge) has a span."""
    name = uuid.uuid4().hex
    request = httpx.Request("GET", f"{server.url}/flaky/{name}/1")
    result = client.send(
        request, attempts=1, hedging=Hedging(delay=5.0, clock=FakeClock()), breakers=False
    )
    assert isinstance(result, httpx.Response)
    assert result.status_code == 200
    statuses = sorted(dict(s.attributes or {})["http.response.status_code"] for s in client.spans())
    assert statuses == [200, 503]
    caller = client.caller()
    assert all(s.parent is not None for s in client.spans())
    assert {s.parent.span_id for s in client.spans() if s.parent} == {caller.context.span_id}
    assert "failsafe.hedge.started" in [e.name for e in caller.events]


def test_without_tracing_nothing_is_propagated(server: Server) -> None:
    """With no tracing installed the request carries no traceparent: the server starts a trace."""
    with httpx.Client(transport=ResilientTransport()) as plain:
        answer = plain.get(f"{server.url}/ok")
    assert answer.json()["traceparent"] is None
    assert answer.json()["trace_id"] is not None  # the server's own new trace
