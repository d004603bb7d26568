"""The error service keeps the trace: reports carry it, records store it, retries continue it.

Most tests install `FakeTracing`, a recording implementation of the tracing seam, and take
it away afterwards. Services that must be real run in a uvicorn thread of this process on a
loopback socket, so their spans land in the same recorder; the last test does the same with
the OpenTelemetry SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from failsafe import _tracing
from failsafe.errors.api import REPORT_SPAN, openapi_document
from failsafe.errors.auth import Tokens
from failsafe.errors.client import AsyncErrorSink, ErrorSink, ReportRejected
from failsafe.errors.desk import ErrorDesk, RetrySchedule
from failsafe.errors.record import Action, ErrorRecord, InvalidReport, Report, Status
from failsafe.errors.service import create_app
from failsafe.errors.spool import Spool
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query
from failsafe.errors.worker import RETRY_SPAN, Handlers, RetryWorker
from failsafe.testing import FakeClock
from failsafe.tracing import TracingMiddleware
from tests.errors.fake_service import FakeService

ROOT = Path(__file__).resolve().parents[2]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER_SPAN = "b7ad6b7169203331"


# -- a recording tracing system ----------------------------------------------------------------


@attrs.define
class FakeSpan:
    """One span as `FakeTracing` recorded it."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    remote_parent: bool
    attributes: dict[str, Any]
    error: str | None = None
    ended: bool = False

    def set(self, key: str, value: _tracing.Value, /) -> None:
        self.attributes[key] = value

    def failed(self, error: BaseException | str, /) -> None:
        # as the seam promises: a type name, never an exception's message
        self.error = error if isinstance(error, str) else type(error).__qualname__


class FakeTracing:
    """The `_tracing.Tracing` seam, recording every span; W3C ``traceparent`` in and out."""

    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []
        self._current: contextvars.ContextVar[FakeSpan | None] = contextvars.ContextVar(
            "fake_span", default=None
        )

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        kind: str,
        attributes: Mapping[str, _tracing.Value],
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[FakeSpan]:
        parent = _parse(carrier)
        remote = parent is not None
        if parent is None:
            current = self._current.get()
            parent = None if current is None else (current.trace_id, current.span_id)
        span = FakeSpan(
            name=name,
            kind=kind,
            trace_id=secrets.token_hex(16) if parent is None else parent[0],
            span_id=secrets.token_hex(8),
            parent_id=None if parent is None else parent[1],
            remote_parent=remote,
            attributes=dict(attributes),
        )
        self.spans.append(span)
        token = self._current.set(span)
        try:
            yield span
        except BaseException as exc:
            span.failed(exc)
            raise
        finally:
            self._current.reset(token)
            span.ended = True

    def inject(self, carrier: MutableMapping[str, str], /) -> None:
        current = self._current.get()
        if current is not None:
            carrier.update(_tracing.traceparent(current.trace_id, current.span_id))

    def current_ids(self) -> tuple[str, str] | None:
        current = self._current.get()
        return None if current is None else (current.trace_id, current.span_id)

    def named(self, name: str) -> list[FakeSpan]:
        return [s for s in self.spans if s.name == name]


def _parse(carrier: Mapping[str, str] | None) -> tuple[str, str] | None:
    if not carrier or "traceparent" not in carrier:
        return None
    _, trace_id, span_id, _ = carrier["traceparent"].split("-")
    return trace_id, span_id


@pytest.fixture
def tracing() -> Iterator[FakeTracing]:
    """A `FakeTracing` installed for the test, the previous one put back after it."""
    fake = FakeTracing()
    previous = _tracing.install(fake)
    yield fake
    _tracing.install(previous)


@pytest.fixture
def no_tracing() -> Iterator[None]:
    """No tracing system installed during the test."""
    previous = _tracing.install(None)
    yield
    _tracing.install(previous)


# -- real servers in this process ------------------------------------------------------------


def pause(seconds: float) -> None:
    threading.Event().wait(seconds)


class ThreadServer:
    """uvicorn serving ``app`` in a thread of this process, on a loopback socket bound here."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                return
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped before it served")
            pause(0.01)
        raise RuntimeError("uvicorn did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def desk(tmp_path: Path) -> ErrorDesk:
    """A desk on a SQLite file, retrying every kind once a minute, three times."""
    return ErrorDesk(
        SQLiteStore(tmp_path / "errors.db"),
        clock=FakeClock(wall_start=1_700_000_000.0),
        default_schedule=RetrySchedule(attempts=3),
    )


@pytest.fixture
def service(desk: ErrorDesk) -> Iterator[ThreadServer]:
    """The whole service (doors open, loopback only) in a uvicorn thread."""
    server = ThreadServer(create_app(desk, tokens=Tokens(), handlers=Handlers()))
    yield server
    server.stop()


@pytest.fixture
def closed_url() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def review(desk: ErrorDesk) -> httpx.AsyncClient:
    """A client of the service's app over ASGI, addressed to loopback (open doors)."""
    app = create_app(desk, tokens=Tokens(), handlers=Handlers())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def traced_report(**overrides: Any) -> Report:
    fields: dict[str, Any] = {
        "kind": "stock.decrement",
        "action": Action.RETRY,
        "source": "warehouse",
        "payload": {"sku": "A1", "by": 2},
        "trace_id": TRACE,
        "span_id": SPAN,
    }
    fields.update(overrides)
    return Report(**fields)


# -- reports carry the trace -------------------------------------------------------------------


def test_a_report_made_in_a_span_carries_its_trace_and_span_ids(
    tracing: FakeTracing, desk: ErrorDesk
) -> None:
    """A report inside a span stores that span's trace and span ids on its record."""
    sink = ErrorSink.local(desk, source="warehouse")
    with tracing.span("POST /orders", kind="server", attributes={}) as caller:
        report_id = sink.report("stock.decrement", "retry", payload={"sku": "A1"})
    record = desk.get(report_id)
    assert (record.trace_id, record.span_id) == (caller.trace_id, caller.span_id)


def test_a_report_outside_any_span_has_no_trace(tracing: FakeTracing, desk: ErrorDesk) -> None:
    """With tracing installed but no span current, the record has no trace ids."""
    report_id = ErrorSink.local(desk, source="warehouse").report("stock.decrement", "retry")
    record = desk.get(report_id)
    assert (record.trace_id, record.span_id) == (None, None)


def test_ids_the_caller_gives_win_over_the_current_span(
    tracing: FakeTracing, desk: ErrorDesk
) -> None:
    """An explicit trace id (alone, or with a span id) is stored instead of the span's."""
    sink = ErrorSink.local(desk, source="warehouse")
    with tracing.span("work", kind="internal", attributes={}):
        both = sink.report("a.kind", "review", trace_id=TRACE, span_id=SPAN)
        alone = sink.report("b.kind", "review", trace_id=OTHER_TRACE)
    assert (desk.get(both).trace_id, desk.get(both).span_id) == (TRACE, SPAN)
    assert (desk.get(alone).trace_id, desk.get(alone).span_id) == (OTHER_TRACE, None)


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"trace_id": TRACE.upper()}, "trace_id"),
        ({"trace_id": "0" * 32}, "trace_id"),
        ({"trace_id": TRACE[:-1]}, "trace_id"),
        ({"trace_id": TRACE, "span_id": "0" * 16}, "span_id"),
        ({"trace_id": TRACE, "span_id": SPAN + "0"}, "span_id"),
        ({"span_id": SPAN}, "span_id"),
    ],
)
def test_bad_ids_are_refused_before_anything_is_sent(
    no_tracing: None, given: dict[str, str], field: str
) -> None:
    """A malformed trace or span id (or a span id alone) is refused locally, naming it."""
    service = FakeService()
    with (
        ErrorSink(
            "http://errors.test",
            source="w",
            spool=":memory:",
            http=service.client(),
            background=False,
        ) as sink,
        pytest.raises(ReportRejected) as caught,
    ):
        sink.report("stock.decrement", "retry", **given)
    assert caught.value.field == field
    assert caught.value.status is None
    assert service.seen == 0


def test_a_report_validates_its_ids(no_tracing: None) -> None:
    """`Report` refuses a trace id or span id that is not a W3C id, naming the field."""
    with pytest.raises(InvalidReport) as caught:
        traced_report(trace_id="xyz")
    assert caught.value.field == "trace_id"
    with pytest.raises(InvalidReport) as caught:
        Report.from_json({"kind": "k", "action": "retry", "source": "s", "span_id": 7})
    assert caught.value.field == "span_id"


def test_without_tracing_nothing_is_added(no_tracing: None) -> None:
    """No tracing system: the body has no trace ids and the request no traceparent."""
    service = FakeService()
    with ErrorSink(
        "http://errors.test", source="w", spool=":memory:", http=service.client(), background=False
    ) as sink:
        report_id = sink.report("stock.decrement", "retry")
    assert "trace_id" not in service.stored[report_id]
    assert "traceparent" not in service.headers[0]


def test_the_request_carries_the_callers_traceparent(tracing: FakeTracing) -> None:
    """report()'s own delivery sends the current span's traceparent beside its ids."""
    service = FakeService()
    with (
        ErrorSink(
            "http://errors.test",
            source="w",
            spool=":memory:",
            http=service.client(),
            background=False,
        ) as sink,
        tracing.span("work", kind="internal", attributes={}) as caller,
    ):
        report_id = sink.report("stock.decrement", "retry")
    assert service.headers[0]["traceparent"] == f"00-{caller.trace_id}-{caller.span_id}-01"
    assert service.stored[report_id]["trace_id"] == caller.trace_id
    assert service.stored[report_id]["span_id"] == caller.span_id


def test_the_async_sink_carries_the_trace_of_the_callers_task(tracing: FakeTracing) -> None:
    """AsyncErrorSink: the ids and the traceparent are those of the span current in the task."""
    service = FakeService()

    async def scenario() -> tuple[str, FakeSpan]:
        async with AsyncErrorSink(
            "http://errors.test", source="w", spool=":memory:", http=service.async_client()
        ) as sink:
            with tracing.span("consume", kind="consumer", attributes={}) as caller:
                return await sink.report("payment.capture", "retry"), caller

    report_id, caller = _run(scenario())
    assert service.headers[0]["traceparent"] == f"00-{caller.trace_id}-{caller.span_id}-01"
    body = service.stored[report_id]
    assert (body["trace_id"], body["span_id"]) == (caller.trace_id, caller.span_id)


# -- the service joins the trace ----------------------------------------------------------------


@pytest.mark.real_time
def test_the_service_spans_continue_the_reporters_trace(
    tracing: FakeTracing, desk: ErrorDesk, service: ThreadServer, tmp_path: Path
) -> None:
    """Server span child of the reporter's span; the storing span names the record it made."""
    with ErrorSink(
        service.url, source="warehouse", spool=tmp_path / "spool.db", background=False
    ) as sink:
        with tracing.span("POST /orders", kind="server", attributes={}) as caller:
            report_id = sink.report("stock.decrement", "retry", payload={"sku": "A1"})
        assert len(sink.spool) == 0  # delivered at once
    record = desk.get(report_id)
    assert (record.trace_id, record.span_id) == (caller.trace_id, caller.span_id)
    (server,) = [s for s in tracing.spans if s.kind == "server" and s is not caller]
    assert server.trace_id == caller.trace_id
    assert server.parent_id == caller.span_id
    assert server.attributes["url.path"] == "/v1/reports"
    assert server.attributes["http.response.status_code"] == 201
    (stored,) = tracing.named(REPORT_SPAN)
    assert (stored.trace_id, stored.parent_id) == (server.trace_id, server.span_id)
    assert stored.attributes == {
        "failsafe.errors.kind": "stock.decrement",
        "failsafe.errors.source": "warehouse",
        "failsafe.errors.record_id": record.id,
        "failsafe.errors.created": True,
    }


@pytest.mark.real_time
def test_a_report_spooled_while_the_service_was_down_joins_its_trace_when_delivered(
    tracing: FakeTracing, desk: ErrorDesk, service: ThreadServer, tmp_path: Path, closed_url: str
) -> None:
    """Delivered later from the spool, outside any span: still the original trace's child."""
    spool = tmp_path / "spool.db"
    with ErrorSink(closed_url, source="warehouse", spool=spool, background=False) as down:
        with tracing.span("POST /orders", kind="server", attributes={}) as caller:
            report_id = down.report("stock.decrement", "retry")
        assert len(down.spool) == 1
    tracing.spans.clear()
    with ErrorSink(service.url, source="warehouse", spool=spool, background=False) as later:
        assert later.flush(timeout=30) == 0
    record = desk.get(report_id)
    assert (record.trace_id, record.span_id) == (caller.trace_id, caller.span_id)
    (server,) = [s for s in tracing.spans if s.kind == "server"]
    assert (server.trace_id, server.parent_id) == (caller.trace_id, caller.span_id)
    assert server.remote_parent


@pytest.mark.real_time
def test_reports_delivered_in_a_batch_keep_their_own_traces(
    tracing: FakeTracing, desk: ErrorDesk, service: ThreadServer, tmp_path: Path, closed_url: str
) -> None:
    """Several spooled reports go in one batch request; each record keeps its own trace."""
    spool = tmp_path / "spool.db"
    made: dict[str, tuple[str, str]] = {}
    with ErrorSink(closed_url, source="warehouse", spool=spool, background=False) as down:
        for n in range(3):
            with tracing.span(f"order {n}", kind="server", attributes={}) as caller:
                report_id = down.report("stock.decrement", "retry", payload={"n": n})
            made[report_id] = (caller.trace_id, caller.span_id)
    with ErrorSink(service.url, source="warehouse", spool=spool, background=False) as later:
        assert later.flush(timeout=30) == 0
    for report_id, ids in made.items():
        record = desk.get(report_id)
        assert (record.trace_id, record.span_id) == ids


@pytest.mark.real_time
def test_a_report_killed_in_the_spool_keeps_its_trace(
    tracing: FakeTracing, desk: ErrorDesk, service: ThreadServer, tmp_path: Path, closed_url: str
) -> None:
    """Killed (-9) right after report() spooled it: the spool, then the record, keep the ids."""
    spool = tmp_path / "spool.db"
    child_code = (
        "import contextlib, sys, threading\n"
        "from failsafe import _tracing\n"
        "from failsafe.errors.client import ErrorSink\n"
        "class Current:\n"
        "    @contextlib.contextmanager\n"
        "    def span(self, name, *, kind, attributes, carrier=None):\n"
        "        yield None\n"
        "    def inject(self, carrier):\n"
        "        carrier.update(_tracing.traceparent(sys.argv[3], sys.argv[4]))\n"
        "    def current_ids(self):\n"
        "        return sys.argv[3], sys.argv[4]\n"
        "_tracing.install(Current())\n"
        "sink = ErrorSink(sys.argv[1], source='child', spool=sys.argv[2], timeout=0.2,"
        " background=False)\n"
        "print(sink.report('stock.decrement', 'retry', payload={'n': 1}), flush=True)\n"
        "threading.Event().wait()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, closed_url, str(spool), TRACE, SPAN],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert child.stdout is not None
    report_id = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    child.stdout.close()
    kept = Spool(spool)
    (item,) = kept.due(math.inf, 10)
    kept.close()
    assert item.report_id == report_id
    assert (item.body["trace_id"], item.body["span_id"]) == (TRACE, SPAN)
    with ErrorSink(service.url, source="restarted", spool=spool, background=False) as later:
        assert later.flush(timeout=30) == 0
    record = desk.get(report_id)
    assert (record.trace_id, record.span_id) == (TRACE, SPAN)
    (server,) = [s for s in tracing.spans if s.kind == "server"]
    assert (server.trace_id, server.parent_id) == (TRACE, SPAN)


# -- the API -----------------------------------------------------------------------------------


BODY = {"kind": "stock.decrement", "action": "retry", "source": "warehouse"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"trace_id": TRACE.upper()}, "trace_id"),
        ({"trace_id": "0" * 32}, "trace_id"),
        ({"trace_id": "x" * 32}, "trace_id"),
        ({"trace_id": TRACE + "0"}, "trace_id"),
        ({"trace_id": 42}, "trace_id"),
        ({"span_id": "0" * 16}, "span_id"),
        ({"span_id": SPAN[:-1]}, "span_id"),
    ],
)
def test_the_api_refuses_a_bad_id_with_422_naming_it(
    no_tracing: None, desk: ErrorDesk, fields: dict[str, Any], field: str
) -> None:
    """A malformed trace or span id is a 422 naming the field; nothing is stored."""

    async def scenario() -> list[httpx.Response]:
        async with review(desk) as client:
            one = await client.post("/v1/reports", json={**BODY, **fields})
            batch = await client.post(
                "/v1/reports/batch",
                json={"reports": [{"id": "r1", "report": BODY}, {"report": {**BODY, **fields}}]},
            )
            return [one, batch]

    one, batch = _run(scenario())
    assert one.status_code == 422, one.text
    assert one.json()["field"] == field
    assert batch.status_code == 422, batch.text
    assert batch.json()["field"] == f"reports[1].{field}"
    assert desk.find(Query()).total == 0


def test_the_api_stores_and_lists_records_by_trace(no_tracing: None, desk: ErrorDesk) -> None:
    """Ids go in (one report or a batch), come out in the record, and filter the listing."""

    async def scenario() -> dict[str, Any]:
        async with review(desk) as client:
            made = await client.post(
                "/v1/reports", json={**BODY, "trace_id": TRACE, "span_id": SPAN}
            )
            assert made.status_code == 201, made.text
            batch = await client.post(
                "/v1/reports/batch",
                json={
                    "reports": [
                        {"report": {**BODY, "kind": "order.lost", "trace_id": TRACE}},
                        {"report": {**BODY, "kind": "order.late", "trace_id": OTHER_TRACE}},
                        {"report": {**BODY, "kind": "order.gone"}},
                    ]
                },
            )
            assert batch.status_code == 200, batch.text
            upper = await client.get(
                "/v1/records", params={"trace_id": TRACE.upper(), "status": "pending_retry"}
            )
            bad = await client.get("/v1/records", params={"trace_id": "nope"})
            empty = await client.get("/v1/records", params={"trace_id": "  "})
            return {
                "made": made.json()["record"],
                "upper": upper.json(),
                "bad": bad,
                "empty": empty.json(),
            }

    out = _run(scenario())
    assert (out["made"]["trace_id"], out["made"]["span_id"]) == (TRACE, SPAN)
    # stored at one instant (the fake clock stands still): the order is the ids'
    found = {r["kind"]: r for r in out["upper"]["records"]}
    assert sorted(found) == ["order.lost", "stock.decrement"]
    assert found["order.lost"]["span_id"] is None
    assert out["bad"].status_code == 422
    assert out["bad"].json()["field"] == "trace_id"
    assert out["empty"]["total"] == 4  # empty: no filter
    (late,) = desk.find(Query(trace_id=OTHER_TRACE)).records
    assert late.kind == "order.late"


def test_the_openapi_document_states_the_trace_fields() -> None:
    """The Report, the ErrorRecord and the listing's parameters document the trace ids."""
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for name in ("trace_id", "span_id"):
        assert name in schemas["Report"]["properties"]
        assert name in schemas["ErrorRecord"]["required"]
    assert "pattern" in schemas["Report"]["properties"]["trace_id"]
    listing = document["paths"]["/v1/records"]["get"]["parameters"]
    assert "trace_id" in [p["name"] for p in listing]


# -- the console ---------------------------------------------------------------------------------


def test_the_record_page_shows_the_trace_and_links_to_its_records(
    no_tracing: None, desk: ErrorDesk
) -> None:
    """The record's page shows its trace id (linked to that trace's records) and span id."""
    traced, _ = desk.report(traced_report(), actor="warehouse")
    plain, _ = desk.report(traced_report(kind="order.lost", trace_id=None, span_id=None), actor="w")

    async def scenario() -> tuple[str, str]:
        async with review(desk) as client:
            one = await client.get(f"/review/records/{traced.id}")
            other = await client.get(f"/review/records/{plain.id}")
            assert one.status_code == other.status_code == 200
            return one.text, other.text

    page, other = _run(scenario())
    assert f"<code>{TRACE}</code></a>" in page
    assert f"<code>{SPAN}</code>" in page
    assert f"/review/records?status=all&amp;trace_id={TRACE}" in page
    assert "<th>trace id</th><td>-</td>" in other


def test_the_records_list_filters_by_trace_id(no_tracing: None, desk: ErrorDesk) -> None:
    """``?trace_id=`` (any case) lists only that trace's records and keeps it in the form."""
    mine, _ = desk.report(traced_report(), actor="warehouse")
    theirs, _ = desk.report(
        traced_report(kind="order.lost", trace_id=OTHER_TRACE, span_id=None), actor="orders"
    )

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with review(desk) as client:
            listing = await client.get(
                "/review/records", params={"status": "all", "trace_id": TRACE.upper()}
            )
            bad = await client.get("/review/records", params={"trace_id": "1234"})
            return listing, bad

    listing, bad = _run(scenario())
    assert listing.status_code == 200
    assert mine.id[:12] in listing.text
    assert theirs.id[:12] not in listing.text
    assert f'name="trace_id" value="{TRACE}"' in listing.text
    assert bad.status_code == 400
    assert "trace_id" in bad.text


# -- the worker continues the trace --------------------------------------------------------------


def claim_now(desk: ErrorDesk, record: ErrorRecord) -> None:
    """Move the desk's clock to the record's next attempt."""
    clock = desk.clock
    assert isinstance(clock, FakeClock)
    assert record.next_attempt_at is not None
    clock.advance(record.next_attempt_at - clock.time())


def test_a_retry_is_a_span_in_the_records_trace(tracing: FakeTracing, desk: ErrorDesk) -> None:
    """The retry span's parent is the reporting span; the handler runs inside it."""
    record, _ = desk.report(traced_report(), actor="warehouse")
    seen: list[tuple[str, str] | None] = []
    handlers = Handlers()
    handlers.register("stock.decrement", lambda r: seen.append(tracing.current_ids()) or "ok")
    claim_now(desk, record)
    assert RetryWorker(desk, handlers).run_once() == 1
    (span,) = tracing.named(RETRY_SPAN)
    assert (span.kind, span.trace_id, span.parent_id) == ("internal", TRACE, SPAN)
    assert span.remote_parent
    assert span.ended
    assert seen == [(TRACE, span.span_id)]
    assert span.attributes == {
        "failsafe.errors.record_id": record.id,
        "failsafe.errors.kind": "stock.decrement",
        "failsafe.errors.source": "warehouse",
        "failsafe.errors.attempt": 1,
        "failsafe.errors.outcome": "succeeded",
        "failsafe.errors.status": "resolved",
    }
    assert span.error is None


def test_a_failed_retry_marks_its_span_with_the_error_type_only(
    tracing: FakeTracing, desk: ErrorDesk
) -> None:
    """A handler that raises: span failed with the type, no message anywhere, retry queued."""
    record, _ = desk.report(traced_report(), actor="warehouse")

    def broken(record: ErrorRecord) -> str:
        raise ConnectionError("password=hunter2 refused")

    handlers = Handlers()
    handlers.register("stock.decrement", broken)
    worker = RetryWorker(desk, handlers)
    claim_now(desk, record)
    worker.run_once()
    claim_now(desk, desk.get(record.id))
    worker.run_once()
    first, second = tracing.named(RETRY_SPAN)
    assert first.error == second.error == "ConnectionError"
    assert first.attributes["failsafe.errors.outcome"] == "failed"
    assert first.attributes["failsafe.errors.status"] == "pending_retry"
    assert second.attributes["failsafe.errors.attempt"] == 2
    assert (second.trace_id, second.parent_id) == (TRACE, SPAN)  # each retry: the same parent
    assert "hunter2" not in repr(tracing.spans)


def test_a_record_without_a_trace_gets_a_retry_span_of_its_own(
    tracing: FakeTracing, desk: ErrorDesk
) -> None:
    """No stored trace: the retry span starts a trace; no handler marks it ``no_handler``."""
    record, _ = desk.report(traced_report(trace_id=None, span_id=None), actor="w")
    claim_now(desk, record)
    RetryWorker(desk, Handlers()).run_once()
    (span,) = tracing.named(RETRY_SPAN)
    assert span.parent_id is None
    assert span.trace_id != TRACE
    assert span.error == "no_handler"


def test_a_record_with_only_a_trace_id_continues_that_trace(
    tracing: FakeTracing, desk: ErrorDesk
) -> None:
    """A trace id without a span id: the retry joins the trace under a stand-in parent."""
    record, _ = desk.report(traced_report(span_id=None), actor="w")
    handlers = Handlers()
    handlers.register("stock.decrement", lambda r: None)
    claim_now(desk, record)
    RetryWorker(desk, handlers).run_once()
    (span,) = tracing.named(RETRY_SPAN)
    assert (span.trace_id, span.parent_id) == (TRACE, record.id[:16])


class Receiver:
    """A retry callback target in a uvicorn thread: keeps each call's headers, traced."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []

        async def retry(request: Request) -> JSONResponse | PlainTextResponse:
            self.calls.append(dict(request.headers))
            await request.body()
            if request.query_params.get("fail"):
                return PlainTextResponse("stock database unavailable", status_code=503)
            return JSONResponse({"applied": True})

        self.server = ThreadServer(
            TracingMiddleware(Starlette(routes=[Route("/retry", retry, methods=["POST"])]))
        )
        self.url = f"{self.server.url}/retry"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A callback receiver for the test, stopped after it."""
    made = Receiver()
    yield made
    made.server.stop()


@pytest.mark.real_time
def test_an_http_retry_carries_the_trace_to_its_handler(
    tracing: FakeTracing, desk: ErrorDesk, receiver: Receiver
) -> None:
    """The callback request carries the retry span's traceparent; its server span is a child."""
    record, _ = desk.report(traced_report(), actor="warehouse")
    handlers = Handlers()
    handlers.register_url("stock.decrement", receiver.url)
    claim_now(desk, record)
    with httpx.Client(timeout=5.0) as client:
        assert RetryWorker(desk, handlers, http=client).run_once() == 1
    (retry,) = tracing.named(RETRY_SPAN)
    assert (retry.kind, retry.trace_id, retry.parent_id) == ("client", TRACE, SPAN)
    assert retry.attributes["http.response.status_code"] == 200
    assert retry.attributes["server.address"] == "127.0.0.1"
    assert retry.attributes["failsafe.errors.status"] == "resolved"
    (call,) = receiver.calls
    assert call["traceparent"] == f"00-{TRACE}-{retry.span_id}-01"
    assert call["idempotency-key"] == record.id
    (handled,) = [s for s in tracing.spans if s.kind == "server"]
    assert (handled.trace_id, handled.parent_id) == (TRACE, retry.span_id)


@pytest.mark.real_time
def test_a_failed_http_retry_marks_its_span_with_the_status(
    tracing: FakeTracing, desk: ErrorDesk, receiver: Receiver
) -> None:
    """A 503 from the callback fails the retry span with ``503`` as its error type."""
    record, _ = desk.report(traced_report(), actor="warehouse")
    handlers = Handlers()
    handlers.register_url("stock.decrement", f"{receiver.url}?fail=1")
    claim_now(desk, record)
    with httpx.Client(timeout=5.0) as client:
        RetryWorker(desk, handlers, http=client).run_once()
    (retry,) = tracing.named(RETRY_SPAN)
    assert retry.error == "503"
    assert retry.attributes["http.response.status_code"] == 503
    assert retry.attributes["failsafe.errors.outcome"] == "failed"


@pytest.mark.real_time
def test_without_tracing_a_retry_sends_no_traceparent(
    no_tracing: None, desk: ErrorDesk, receiver: Receiver
) -> None:
    """No tracing system: the callback gets no traceparent, the record keeps its ids."""
    record, _ = desk.report(traced_report(), actor="warehouse")
    handlers = Handlers()
    handlers.register_url("stock.decrement", receiver.url)
    claim_now(desk, record)
    with httpx.Client(timeout=5.0) as client:
        RetryWorker(desk, handlers, http=client).run_once()
    (call,) = receiver.calls
    assert "traceparent" not in call
    assert desk.get(record.id).status is Status.RESOLVED


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- with OpenTelemetry --------------------------------------------------------------------------


@pytest.mark.real_time
def test_one_opentelemetry_trace_from_the_report_to_its_retry(
    desk: ErrorDesk, tmp_path: Path
) -> None:
    """Reporter's span -> the service's server span -> the record -> the retry span: one trace."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from failsafe.opentelemetry import OpenTelemetryTracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = _tracing.install(OpenTelemetryTracing(provider))
    handlers = Handlers()
    handlers.register("stock.decrement", lambda record: "decremented")
    server = ThreadServer(create_app(desk, tokens=Tokens(), handlers=handlers))
    try:
        tracer = provider.get_tracer("orders")
        with (
            ErrorSink(
                server.url, source="warehouse", spool=tmp_path / "spool.db", background=False
            ) as sink,
            tracer.start_as_current_span("POST /orders") as caller,
        ):
            report_id = sink.report("stock.decrement", "retry", payload={"sku": "A1"})
        context = caller.get_span_context()
        trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
        record = desk.get(report_id)
        assert (record.trace_id, record.span_id) == (trace_id, span_id)
        for _ in range(500):  # the server span ends just after its answer is sent
            if any(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()):
                break
            pause(0.01)
        (served,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
        assert served.context is not None
        assert served.context.trace_id == context.trace_id
        assert served.parent is not None
        assert served.parent.span_id == context.span_id
        (stored,) = [s for s in exporter.get_finished_spans() if s.name == REPORT_SPAN]
        assert stored.attributes is not None
        assert stored.attributes["failsafe.errors.record_id"] == record.id

        claim_now(desk, record)
        assert RetryWorker(desk, handlers).run_once() == 1
        (retry,) = [s for s in exporter.get_finished_spans() if s.name == RETRY_SPAN]
        assert retry.context is not None
        assert retry.context.trace_id == context.trace_id
        assert retry.parent is not None
        assert retry.parent.span_id == context.span_id
        assert retry.attributes is not None
        assert retry.attributes["failsafe.errors.status"] == "resolved"
        assert desk.get(record.id).status is Status.RESOLVED
    finally:
        server.stop()
        _tracing.install(previous)
        provider.shutdown()
