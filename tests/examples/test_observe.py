"""The examples observed: every service's ``/health``, and one trace across the processes.

Real processes (the Supervisor, fast settings, ``traces`` on): each service answers
``GET /health`` with failsafe's snapshot of its own policies, and one order (one payment)
is one trace whose spans, written by several processes to ``traces/*.jsonl``, link up
parent to child. The payment flow's demo, which prints such a trace, exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples._support.processes import ROOT
from examples._support.telemetry import Site
from examples._support.traces import Span, read_spans
from examples.payment_flow.demo import Flow
from examples.payment_flow.domain import PAID
from examples.payment_flow.runner import Supervisor as PaymentSupervisor
from examples.payment_flow.settings import Settings as PaymentSettings
from examples.warehouse_flow.runner import Supervisor as WarehouseSupervisor
from examples.warehouse_flow.settings import Settings as WarehouseSettings
from examples.warehouse_flow.wiring import RETRY_PATH

pytestmark = pytest.mark.real_time  # real processes: the tests poll them with deadlines


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarehouseSupervisor]:
    """Every warehouse_flow service, traced, started once for the module."""
    settings = WarehouseSettings.fast(tmp_path_factory.mktemp("warehouse-traced"), traces=True)
    with WarehouseSupervisor(settings) as supervisor:
        supervisor.start()
        yield supervisor


@pytest.fixture(scope="module")
def payment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """Every payment_flow service (SQLite broker), traced, and a client that pays as the site."""
    settings = PaymentSettings.fast(tmp_path_factory.mktemp("payment-traced"), traces=True)
    with PaymentSupervisor(settings) as supervisor:
        supervisor.start()
        flow = Flow(supervisor.settings)
        try:
            yield flow
        finally:
            flow.close()


def health(url: str) -> dict[str, Any]:
    """``GET /health`` on the service at ``url``, checked to be a 200 JSON answer."""
    response = httpx.get(f"{url}/health", timeout=5.0)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    snapshot: dict[str, Any] = response.json()
    return snapshot


def named(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The snapshot's entries by policy name."""
    return {entry["name"]: entry for entry in snapshot["entries"]}


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.05)
    return True


def trace_of(run: Path, trace_id: str | None) -> list[Span]:
    """The spans of trace ``trace_id`` that the run's processes have written so far."""
    return [s for s in read_spans(run) if s.trace_id == trace_id]


def one(spans: list[Span], **wanted: Any) -> Span:
    """The one span with the given service/kind/name and attributes (``url_path=...``)."""
    fields = ("service", "kind", "name")
    found = [
        s
        for s in spans
        if all(getattr(s, k) == v for k, v in wanted.items() if k in fields)
        and all(
            s.attributes.get(k.replace("_", ".")) == v for k, v in wanted.items() if k not in fields
        )
    ]
    assert len(found) == 1, (wanted, found)
    return found[0]


def test_every_warehouse_flow_service_serves_its_policies_at_health(
    warehouse: WarehouseSupervisor,
) -> None:
    """Each process lists its own breakers: the Order service's, the instances', the callbacks'."""
    settings = warehouse.settings
    order = named(health(settings.url("order")))
    assert order["warehouse-breaker"]["kind"] == "keyed_circuit_breaker"
    assert order["warehouse-breaker"]["state"] == "closed"
    for instance in ("warehouse-1", "warehouse-2"):
        assert named(health(settings.url(instance)))["products-breaker"]["enforced"] is True
    assert named(health(settings.url("errors")))["callback-breaker"]["keys"] == 0
    products = health(settings.url("products"))
    assert (products["status"], products["entries"]) == ("ok", [])  # it holds no policy
    assert httpx.get(f"{settings.url('order')}/healthz", timeout=5.0).json()["ok"] is True


def test_the_payment_consumer_serves_its_consumer_and_circuit_at_health(payment: Flow) -> None:
    """The Status consumer lists itself (running, in flight, DLQ depth) and its breaker."""
    consumer = named(payment.health("consumer"))
    assert consumer["status-consumer"]["kind"] == "queue_consumer"
    assert consumer["status-consumer"]["state"] == "running"
    assert consumer["status-consumer"]["queue"] == payment.settings.queue
    assert consumer["status-consumer"]["in_flight"] == 0
    assert consumer["order-breaker"]["kind"] == "keyed_circuit_breaker"
    assert "failsafe.errors.client" in named(payment.health("order"))  # its error sink's
    for service in ("order", "payment", "errors"):  # nothing of theirs is open
        assert payment.health(service)["status"] == "ok"


def test_one_order_with_a_failed_write_is_one_trace_across_the_services(
    warehouse: WarehouseSupervisor,
) -> None:
    """Site -> Order -> Warehouse -> report, then the later retry -> Warehouse: linked spans."""
    settings = warehouse.settings
    for name in ("warehouse-1", "warehouse-2"):
        httpx.post(f"{settings.url(name)}/_faults", json={"fail_writes": 1}, timeout=5)
    site = Site(settings)
    try:
        with site.request("add product") as request:
            answer = httpx.post(
                f"{settings.url('order')}/orders/o-traced/products",
                json={"clientId": "c-1", "productId": "p-lamp"},
                headers=request.headers,
                timeout=30.0,
            )
    finally:
        site.close()
    assert answer.status_code == 200
    assert request.trace_id is not None

    def retried() -> bool:
        spans = trace_of(settings.path, request.trace_id)
        return any(
            s.attributes.get("url.path") == RETRY_PATH
            and s.attributes.get("http.response.status_code") == 200
            for s in spans
        )

    assert wait_for(retried)
    spans = trace_of(settings.path, request.trace_id)
    by_id = {s.span_id: s for s in spans}
    root = one(spans, service="site")
    order = one(spans, service="order", kind="server")
    assert order.parent_id == root.span_id
    stock = one(spans, kind="server", url_path="/warehouse/v1/order/products")
    sent = by_id[str(stock.parent_id)]  # the Order service's attempt that reached it
    assert (sent.service, sent.kind, sent.parent_id) == ("order", "client", order.span_id)
    report = one(spans, service="errors", kind="server", url_path="/v1/reports")
    assert report.parent_id == stock.span_id
    retry = one(spans, name="failsafe.errors retry")
    assert retry.parent_id == stock.span_id  # the record kept the span it was reported in
    assert retry.attributes["failsafe.errors.outcome"] == "succeeded"
    callback = one(spans, kind="server", url_path=RETRY_PATH)
    assert callback.service.startswith("warehouse-")
    assert by_id[str(callback.parent_id)].parent_id == retry.span_id
    assert {s.service for s in spans} >= {"site", "order", "errors", stock.service}


def test_one_payment_is_one_trace_through_the_queue(payment: Flow) -> None:
    """Site -> Payment -> publish -> the consumer's process span -> its PUT -> the Order service."""
    payment.add_orders("o-traced")
    assert payment.pay("o-traced").status_code == 202
    payment.wait_status("o-traced", PAID)
    trace_id = payment.payment_traces["o-traced"]

    def handled() -> bool:  # the consumer's span ends once the message is acked
        return any(s.kind == "consumer" for s in trace_of(payment.settings.path, trace_id))

    assert wait_for(handled)
    spans = trace_of(payment.settings.path, trace_id)
    root = one(spans, service="site")
    server = one(spans, service="payment", kind="server")
    publish = one(spans, service="payment", kind="producer")
    process = one(spans, service="consumer", kind="consumer")
    put = one(spans, service="consumer", kind="client")
    order = one(spans, service="order", kind="server")
    assert (server.parent_id, publish.parent_id, process.parent_id) == (
        root.span_id,
        server.span_id,
        publish.span_id,
    )
    assert (put.parent_id, order.parent_id) == (process.span_id, put.span_id)
    assert process.attributes["failsafe.queue.outcome"] == "acked"
    assert order.attributes["url.path"] == "/orders/o-traced/status"


def test_the_payment_demo_prints_a_payment_s_trace_and_exits_0(tmp_path: Path) -> None:
    """``python -m examples.payment_flow demo`` checks every step, the trace included."""
    done = subprocess.run(
        [sys.executable, "-m", "examples.payment_flow", "demo", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "FAIL " not in out
    # the consumer's /health while the Order service is down, and once it is back
    assert "ok   the consumer's circuit to the Order service is not closed" in out
    assert "ok   the consumer's circuit is closed again" in out
    assert "spans from consumer, errors, order, payment, site" in out
    assert "errors: failsafe.errors retry [client" in out
    assert (tmp_path / "traces" / "consumer.jsonl").exists()
