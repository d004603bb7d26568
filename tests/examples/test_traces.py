"""The examples' trace files and tree printer (``examples/_support``), without processes.

What is pinned here: a span written by `telemetry.JsonLinesExporter` reads back as it was
(ids, parent, events), the file stops growing at its bound, the site's root span and its
``traceparent``, and how `traces.tree` lays out a hand-made trace: order, orphans, events.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from examples._support import telemetry
from examples._support.settings import RunSettings
from examples._support.traces import Span, by_trace, main, pick_trace, read_spans, tree
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

TRACE = "0af7651916cd43dd8448eb211c80319c"
MS = 1_000_000  # nanoseconds


def span(
    span_id: str,
    parent: str | None,
    service: str,
    name: str,
    start_ms: float,
    end_ms: float,
    *,
    trace_id: str = TRACE,
    kind: str = "server",
    attributes: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> Span:
    """A hand-made span of the trace ``TRACE`` (times in ms from 1 s after the epoch)."""
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent,
        service=service,
        name=name,
        kind=kind,
        start=int((1000 + start_ms) * MS),
        end=int((1000 + end_ms) * MS),
        attributes=attributes or {},
        events=events or [],
    )


def an_order() -> list[Span]:
    """One order's trace, listed out of order, with an orphan and another trace's span."""
    retry = {
        "name": "failsafe.retry.scheduled",
        "time": int((1000 + 3) * MS),
        "attributes": {
            "failsafe.policy": "warehouse-retry",
            "failsafe.retry.delay": 0.25,
            "error.type": "httpx.ConnectError",
        },
    }
    return [
        span(
            "00000000000000c2",
            "00000000000000b1",
            "order",
            "POST",
            4,
            9,
            kind="client",
            attributes={"failsafe.endpoint": "http://w2", "http.response.status_code": 200},
        ),
        span("00000000000000a1", None, "site", "add product", 0, 10, kind="client"),
        span(
            "00000000000000b1",
            "00000000000000a1",
            "order",
            "POST",
            1,
            9.5,
            attributes={"url.path": "/orders/o-1/products", "http.response.status_code": 200},
            events=[retry],
        ),
        span(
            "00000000000000c1",
            "00000000000000b1",
            "order",
            "POST",
            2,
            2.5,
            kind="client",
            attributes={"failsafe.endpoint": "http://w1", "error.type": "httpx.ConnectError"},
        ),
        span(
            "00000000000000e1",
            "00000000000000d9",  # its parent's process was killed before writing it
            "errors",
            "failsafe.errors retry",
            500,
            505,
            kind="client",
            attributes={"failsafe.errors.kind": "stock.decrement", "failsafe.errors.attempt": 2},
        ),
        span("00000000000000f1", None, "order", "GET", -5, -4, trace_id="1" * 32),
    ]


def test_tree_nests_children_under_parents_in_start_order() -> None:
    """Each span is indented under its parent, siblings by start time, from its trace only."""
    lines = tree(an_order(), TRACE)
    assert lines[0] == f"trace {TRACE}: 5 spans from errors, order, site"
    body = [line for line in lines[1:] if "* " not in line]
    assert [line.split(" ms  ", 1)[1] for line in body[:4]] == [
        "site: add product [client, 10.0 ms]",
        "  order: POST [server, 8.5 ms]  path /orders/o-1/products, http 200",
        "    order: POST [client, 0.5 ms]  endpoint http://w1, error httpx.ConnectError",
        "    order: POST [client, 5.0 ms]  endpoint http://w2, http 200",
    ]
    assert body[0].startswith("+     0.0 ms")
    assert body[3].startswith("+     4.0 ms")


def test_tree_shows_events_under_their_span() -> None:
    """A span's events follow it as sub-lines: name, time and attributes without ``failsafe.``."""
    lines = tree(an_order(), TRACE)
    server = next(i for i, line in enumerate(lines) if "path /orders/o-1/products" in line)
    assert lines[server + 1] == (
        "+     3.0 ms        * failsafe.retry.scheduled (policy=warehouse-retry,"
        " retry.delay=0.25, error.type=httpx.ConnectError)"
    )


def test_a_span_whose_parent_is_missing_is_shown_at_the_top_with_a_note() -> None:
    """An orphan is a top-level line, after the root that started earlier, saying so."""
    lines = tree(an_order(), TRACE)
    orphan = lines[-1]
    assert orphan.startswith("+   500.0 ms  errors: failsafe.errors retry [client, 5.0 ms]")
    assert "kind stock.decrement, attempt 2" in orphan
    assert "its parent 00000000000000d9 is in no trace file" in orphan


def test_tree_stops_at_its_limit_and_says_how_many_it_left_out() -> None:
    """With a limit, the tree ends with the number of spans not shown."""
    lines = tree(an_order(), TRACE, limit=2)
    assert sum(1 for line in lines if line.startswith("+") and "* " not in line) == 2
    assert lines[-1] == "... and 3 more spans (limit 2)"


def test_an_unknown_trace_has_no_spans() -> None:
    """A trace id with no span says so in one line."""
    assert tree(an_order(), "2" * 32) == [f"trace {'2' * 32}: no spans"]


def test_the_trace_reaching_most_services_is_picked() -> None:
    """`pick_trace` prefers the trace with the most services; `by_trace` orders by start."""
    spans = an_order()
    assert pick_trace(spans) == TRACE
    assert pick_trace([]) is None
    assert [s.span_id for s in by_trace(spans)[TRACE]][:2] == [
        "00000000000000a1",
        "00000000000000b1",
    ]


def write_trace_files(run: Path, spans: list[Span]) -> None:
    """Write ``spans`` as the services' trace files would hold them, one file per service."""
    folder = run / "traces"
    folder.mkdir(parents=True)
    for s in spans:
        line = {
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "parent_id": s.parent_id,
            "service": s.service,
            "name": s.name,
            "kind": s.kind,
            "start": s.start,
            "end": s.end,
            "status": s.status,
            "attributes": dict(s.attributes),
            "events": list(s.events),
        }
        with (folder / f"{s.service}.jsonl").open("a") as out:
            out.write(json.dumps(line) + "\n")


def test_reading_skips_a_line_cut_short_by_a_killed_process(tmp_path: Path) -> None:
    """`read_spans` reads every service's file and skips a line that is not a whole span."""
    write_trace_files(tmp_path, an_order())
    with (tmp_path / "traces" / "errors.jsonl").open("a") as out:
        out.write('{"trace_id": "0af76519')  # kill -9 in the middle of a write
    spans = read_spans(tmp_path)
    assert sorted(s.span_id for s in spans) == sorted(s.span_id for s in an_order())


def test_the_command_prints_the_chosen_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m examples._support.traces RUN`` prints a tree; ``--list`` one line per trace."""
    write_trace_files(tmp_path, an_order())
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == tree(an_order(), TRACE)
    assert main([str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == ["1" * 32, TRACE]
    assert main([str(tmp_path / "elsewhere")]) == 1
    assert "no spans" in capsys.readouterr().out


def test_a_finished_span_is_one_json_line_that_reads_back(tmp_path: Path) -> None:
    """The exporter writes each span as it ends; the parent link and events survive."""
    settings = RunSettings(run_dir=str(tmp_path), traces=True)
    provider = telemetry.tracer_provider(settings, "order")
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("POST", kind=SpanKind.SERVER) as parent,
        tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as child,
    ):
        child.add_event("failsafe.failover", {"error.type": "httpx.ConnectError"})
        child.set_attribute("http.response.status_code", 503)
    provider.shutdown()
    lines = telemetry.trace_file(settings, "order").read_text().splitlines()
    assert len(lines) == 2  # the child ended first
    first, second = (Span.parse(line) for line in lines)
    assert first is not None
    assert second is not None
    ids = parent.get_span_context()
    assert (second.span_id, second.parent_id, second.kind) == (
        format(ids.span_id, "016x"),
        None,
        "server",
    )
    assert (first.parent_id, first.trace_id) == (second.span_id, format(ids.trace_id, "032x"))
    assert first.attributes == {"http.response.status_code": 503}
    assert [e["name"] for e in first.events] == ["failsafe.failover"]
    assert json.loads(lines[0])["service"] == "order"


def test_a_trace_file_stops_growing_at_its_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``max_bytes`` the exporter drops spans and logs it once; the file stays whole."""
    path = tmp_path / "traces" / "order.jsonl"
    exporter = telemetry.JsonLinesExporter(path, "order", max_bytes=700)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with caplog.at_level(logging.WARNING, logger="examples.telemetry"):
        for _ in range(10):
            with tracer.start_as_current_span("GET"):
                pass
    provider.shutdown()
    size = path.stat().st_size
    lines = path.read_text().splitlines()
    assert 0 < len(lines) < 10
    assert size <= 700
    assert all(Span.parse(line) is not None for line in lines)
    assert [r.getMessage() for r in caplog.records].count(
        f"{path} holds {size} bytes: further spans are dropped"
    ) == 1


def test_the_site_starts_the_trace_it_sends(tmp_path: Path) -> None:
    """With traces, a site request is a root span whose ``traceparent`` names it."""
    settings = RunSettings(run_dir=str(tmp_path), traces=True)
    site = telemetry.Site(settings)
    with site.request("pay", order="o-1") as request:
        request.answered(202)
    site.close()
    [root] = read_spans(tmp_path)
    assert (root.service, root.name, root.kind, root.parent_id) == ("site", "pay", "client", None)
    assert request.trace_id == root.trace_id
    assert request.headers["traceparent"].startswith(f"00-{root.trace_id}-{root.span_id}-")
    assert root.attributes == {"order": "o-1", "http.response.status_code": 202}


def test_without_traces_nothing_is_traced_or_written(tmp_path: Path) -> None:
    """``traces`` off: no instrumentation, no header, no file."""
    settings = RunSettings(run_dir=str(tmp_path))
    assert telemetry.start(settings, "order") is None
    with telemetry.Site(settings).request("pay") as request:
        assert (request.headers, request.trace_id) == ({}, None)
    assert not (tmp_path / "traces").exists()
