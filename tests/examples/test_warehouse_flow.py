"""examples/warehouse_flow end to end: each seed step of scenario A on the real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from examples._support.faults import Faults, fault_routes
from examples._support.processes import ROOT
from examples.warehouse_flow.domain import ADDED, CATALOGUE, INFO_LATER, NOT_ENOUGH_STOCK, needed
from examples.warehouse_flow.runner import Supervisor
from examples.warehouse_flow.wiring import RETRY_KIND, REVIEW_KIND
from starlette.applications import Starlette

pytestmark = pytest.mark.real_time  # real processes: the tests poll them with deadlines


def add(
    services: Supervisor, order: str, product: str, quantity: int = 1, key: str | None = None
) -> httpx.Response:
    """What the site sends to the Order service."""
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(
        f"{services.settings.url('order')}/orders/{order}/products",
        json={"clientId": "c-1", "productId": product, "quantity": quantity},
        headers=headers,
        timeout=30.0,
    )


def stock(services: Supervisor) -> dict[str, int]:
    """The stock, as Warehouse 2 reads it."""
    url = f"{services.settings.url('warehouse-2')}/warehouse/v1/stock"
    levels: dict[str, int] = httpx.get(url, timeout=5.0).json()["stock"]
    return levels


def records(services: Supervisor, kind: str, status: str) -> list[dict[str, Any]]:
    """The Error-handling service's records of ``kind`` in ``status`` (comma-separated)."""
    response = httpx.get(
        f"{services.settings.url('errors')}/v1/records",
        params={"kind": kind, "status": status, "limit": 500},
        timeout=5.0,
    )
    found: list[dict[str, Any]] = response.json()["records"]
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.05)
    return True


def minus(levels: dict[str, int], product: str, quantity: int) -> dict[str, int]:
    """``levels`` after ``quantity`` of ``product`` were taken."""
    take = needed(CATALOGUE[product], quantity)
    return {c: n - take.get(c, 0) for c, n in levels.items()}


def test_a_normal_add_decrements_every_component_once(warehouse_services: Supervisor) -> None:
    """Steps 1-2, 6, 9, 11: a 200 from Warehouse 1 at the first attempt, every component taken."""
    before = stock(warehouse_services)
    response = add(warehouse_services, "o-1", "p-desk", 2)
    assert response.status_code == 200
    assert response.json()["message"] == ADDED
    assert response.headers["X-Warehouse-Endpoint"] == warehouse_services.settings.url(
        "warehouse-1"
    )
    assert response.headers["X-Warehouse-Attempts"] == "1"
    assert stock(warehouse_services) == minus(before, "p-desk", 2)


@pytest.mark.parametrize(
    ("service", "path", "body", "field"),
    [
        ("order", "/orders/o-1/products", {"productId": "p-desk"}, "clientId"),
        (
            "order",
            "/orders/o-1/products",
            {"clientId": "c-1", "productId": "p-desk", "quantity": 0},
            "quantity",
        ),
        ("order", "/orders/o-1/products", {"clientId": "c-1", "productId": "p desk"}, "productId"),
        ("order", "/orders/o-1/products", [1], "body"),
        ("warehouse-1", "/warehouse/v1/order/products", {"clientId": "c-1"}, "orderDate"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    warehouse_services: Supervisor, service: str, path: str, body: Any, field: str
) -> None:
    """Step 2: a request that breaks a rule is refused with 422 and the field's name."""
    response = httpx.post(
        f"{warehouse_services.settings.url(service)}{path}", json=body, timeout=10
    )
    assert response.status_code == 422
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"orderDate": "2026-11-14T10:00:00"}, "orderDate"),
        ({"orderDate": "yesterday"}, "orderDate"),
        ({"status": "paid"}, "status"),
        ({"quantity": -1}, "quantity"),
        ({"oderId": "o-1"}, "oderId"),
    ],
)
def test_the_warehouse_checks_each_field_of_the_order_line(
    warehouse_services: Supervisor, change: dict[str, Any], field: str
) -> None:
    """Step 2: a time zone is required, the status is one of three, the quantity positive."""
    line = {
        "orderId": "o-1",
        "clientId": "c-1",
        "productId": "p-desk",
        "orderDate": "2026-11-14T10:00:00+01:00",
        "status": "placed",
        **change,
    }
    url = f"{warehouse_services.settings.url('warehouse-1')}/warehouse/v1/order/products"
    response = httpx.post(url, json=line, timeout=10)
    assert (response.status_code, response.json()["field"]) == (422, field)


def test_an_unknown_product_is_404_and_a_record_for_review(warehouse_services: Supervisor) -> None:
    """Steps 7-8: the client hears "available later"; the Error-handling service keeps a record."""
    response = add(warehouse_services, "o-2", "p-unknown")
    assert (response.status_code, response.json()["error"]) == (404, INFO_LATER)
    assert wait_until(lambda: bool(records(warehouse_services, REVIEW_KIND, "needs_review")), 10)
    [record] = records(warehouse_services, REVIEW_KIND, "needs_review")
    assert record["payload"] == {"productId": "p-unknown", "orderId": "o-2", "clientId": "c-1"}


def test_not_enough_stock_is_202_and_nothing_is_decremented(
    warehouse_services: Supervisor,
) -> None:
    """Step 9: the custom 202 names the shortage; no component is touched."""
    before = stock(warehouse_services)
    response = add(warehouse_services, "o-3", "p-shelf", 2)  # 8 boards; 6 in stock
    assert response.status_code == 202
    assert response.json()["message"] == NOT_ENOUGH_STOCK
    assert response.json()["short"] == {"c-board": 2}
    assert stock(warehouse_services) == before


def test_a_key_is_applied_once_on_either_instance(warehouse_services: Supervisor) -> None:
    """The same Idempotency-Key sent to both instances and again decrements once."""
    before = stock(warehouse_services)
    key = uuid.uuid4().hex
    line = {
        "orderId": "o-4",
        "clientId": "c-1",
        "productId": "p-chair",
        "orderDate": "2026-11-14T10:00:00Z",
        "status": "approved",
        "quantity": 3,
    }
    answers = []
    for name in ("warehouse-1", "warehouse-2", "warehouse-1"):
        answers.append(
            httpx.post(
                f"{warehouse_services.settings.url(name)}/warehouse/v1/order/products",
                json=line,
                headers={"Idempotency-Key": key},
                timeout=10,
            )
        )
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["replayed"] for a in answers] == [False, True, True]
    again = add(warehouse_services, "o-4", "p-chair", 3, key=key)  # through the Order service
    assert again.status_code == 200
    assert again.json()["requestId"] == key
    assert stock(warehouse_services) == minus(before, "p-chair", 3)


def test_a_failed_stock_write_is_retried_until_the_stock_is_right(
    warehouse_services: Supervisor,
) -> None:
    """Steps 10-11: the client is told success; the service retries through the callback."""
    for name in ("warehouse-1", "warehouse-2"):
        httpx.post(
            f"{warehouse_services.settings.url(name)}/_faults", json={"fail_writes": 2}, timeout=5
        ).raise_for_status()
    before = stock(warehouse_services)
    response = add(warehouse_services, "o-5", "p-lamp", 2)
    assert (response.status_code, response.json()["message"]) == (200, ADDED)
    key = response.json()["requestId"]

    def resolved() -> list[dict[str, Any]]:
        return [
            r
            for r in records(warehouse_services, RETRY_KIND, "resolved")
            if r["payload"]["key"] == key
        ]

    assert wait_until(lambda: bool(resolved()), 30)
    [record] = resolved()
    assert [a["ok"] for a in record["attempts"]][-1] is True
    assert not all(a["ok"] for a in record["attempts"])  # it failed first, then worked
    assert stock(warehouse_services) == minus(before, "p-lamp", 2)
    for name in ("warehouse-1", "warehouse-2"):
        httpx.delete(f"{warehouse_services.settings.url(name)}/_faults", timeout=5)


def test_a_503_from_warehouse_1_fails_over_to_warehouse_2(warehouse_services: Supervisor) -> None:
    """Steps 3-4 with an unavailable (503) instance: four attempts there, then instance 2."""
    w1 = f"{warehouse_services.settings.url('warehouse-1')}/_faults"
    httpx.post(w1, json={"unavailable": 4}, timeout=5).raise_for_status()
    try:
        before = stock(warehouse_services)
        response = add(warehouse_services, "o-6", "p-lamp")
        assert response.status_code == 200
        assert response.headers["X-Warehouse-Endpoint"] == warehouse_services.settings.url(
            "warehouse-2"
        )
        assert response.headers["X-Warehouse-Attempts"] == "5"
        assert httpx.get(w1, timeout=5).json()["answered_503"] == 4
        assert stock(warehouse_services) == minus(before, "p-lamp", 1)
    finally:
        httpx.delete(w1, timeout=5)


def test_fault_switches_are_refused_off_loopback() -> None:
    """The fault endpoint answers 403 to a caller that is not on this machine."""
    app = Starlette(routes=fault_routes(Faults()))

    async def post_from(host: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(host, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://order") as client:
            return await client.post("/_faults", json={"fail_writes": 1})

    assert asyncio.run(post_from("203.0.113.7")).status_code == 403
    assert asyncio.run(post_from("127.0.0.1")).json()["fail_writes"] == 1


def test_the_demo_plays_every_step_and_exits_0(tmp_path: Any) -> None:
    """``python -m examples.warehouse_flow demo`` checks every seed step and exits 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "examples.warehouse_flow", "demo", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "answered by warehouse-2 after 5 attempt(s)" in out  # Warehouse 1 killed
    assert "500 'The product could not be added now; please try again later'" in out
    assert "is now resolved" in out  # the review record, resolved by a person
    assert "ok: Warehouse 1's circuit opened after 5 failures in a row" in out  # /health
    assert "ok: Warehouse 1's circuit is closed again" in out
    assert "ok: one trace holds the site's, the Order service's, the Warehouse's" in out
    assert "errors: failsafe.errors retry [client" in out  # in the printed tree
    assert "FAILED" not in out
    assert (tmp_path / "traces" / "order.jsonl").exists()
    assert (tmp_path / "warehouse-1.log").exists()
    assert (tmp_path / "stock.db").exists()
