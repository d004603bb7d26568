"""The Warehouse (order flow steps 6-11); two instances of this app share one stock database.

``POST /warehouse/v1/order/products`` takes an order line (`domain.parse_order_line`; 422
naming the field otherwise) and its ``Idempotency-Key``:

1. asks the Products service for the product's components, through a resilient client
   (`wiring.products_client`, the ``products`` pipeline of ``failsafe.toml``, whose file
   the instance watches); a 404 there is reported for review to the Error-handling
   service (`wiring.error_sink`, kind ``product.not_found``) and answered 404 (steps 7-8);
2. in one transaction, records the key, checks every component and decrements all of them
   (200), or none (the custom 202, "accepted, not enough stock") (step 9);
3. if the write fails, reports a ``stock.decrement`` for the Error-handling service to
   retry, and answers 200 all the same: the stock was known to be sufficient (steps 10-11).

A key already recorded gets its first answer again and changes nothing: retries and
failover never decrement twice.

``POST /warehouse/v1/retry/stock-decrement`` is the Error-handling service's callback: it
redoes a failed write (``{"record": ...}``, with the record id as ``Idempotency-Key``), once
per order line's key, and answers 500 while the write still fails. ``GET
/warehouse/v1/stock`` shows every component's quantity.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples._support.faults import FaultMiddleware, Faults, fault_routes
from examples._support.web import closing, healthz, invalid, read_json
from examples.warehouse_flow.db import APPLIED, StockDB, StockWriteFailed, open_database
from examples.warehouse_flow.domain import (
    NOT_ENOUGH_STOCK,
    STOCK,
    Invalid,
    OrderLine,
    needed,
    parse_order_line,
)
from examples.warehouse_flow.settings import Settings
from examples.warehouse_flow.wiring import (
    RETRY_KIND,
    RETRY_PATH,
    REVIEW_KIND,
    error_sink,
    policies,
    products_client,
)
from failsafe.health import health_route
from failsafe.tracing import TracingMiddleware

__all__ = ["Warehouse", "create_app"]

log = logging.getLogger("warehouse")


class ProductsUnavailable(Exception):
    """The Products service did not answer (after the client's retries)."""


class Warehouse:
    """One Warehouse instance's logic, over its clients and the shared stock database."""

    def __init__(self, settings: Settings, instance: str) -> None:
        self.instance = instance
        self.faults = Faults("stock write failed (injected fault)")
        self.stock = StockDB(open_database(settings, "stock"))
        self.stock.create(STOCK)
        self.policies = policies(settings)
        self.watch = self.policies.watch(settings.watch_interval)  # edits apply, no restart
        self.products = products_client(settings, self.policies)
        self.sink = error_sink(settings, instance)

    def close(self) -> None:
        """Close the clients and the database (the sink's spool keeps what it holds)."""
        self.watch.close()
        self.products.close()
        self.sink.close()
        self.stock.db.close()

    def components(self, product_id: str) -> dict[str, int] | None:
        """Step 6: the product's components, or ``None`` for an unknown product (404).

        Raises:
            ProductsUnavailable: If the Products service did not answer.
        """
        try:
            response = self.products.get(f"/products/{product_id}/components")
        except httpx.TransportError as exc:
            raise ProductsUnavailable(str(exc)) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ProductsUnavailable(f"HTTP {response.status_code}")
        found: dict[str, int] = response.json()["components"]
        return found

    def add(self, line: OrderLine, key: str) -> tuple[int, dict[str, Any]]:
        """Steps 6-11 for one order line: the status and body of the answer."""
        try:
            components = self.components(line.product_id)
        except ProductsUnavailable as exc:
            log.warning("Products service unavailable: %s", exc)
            return 503, {"error": "the Products service is unavailable"}
        if components is None:
            # steps 7-8: a person looks into it; one record per unknown product
            self._report_review(line, key)
            log.info("unknown product %s: reported for review", line.product_id)
            return 404, {"error": "product not found", "productId": line.product_id}
        take = needed(components, line.quantity)
        try:
            outcome = self.stock.decrement(
                key, line.product_id, line.quantity, take, before_write=self.faults.before_write
            )
        except StockWriteFailed as exc:
            return self._write_failed(line, key, take, exc)
        except Exception:  # the stock could not even be read: another attempt may work
            log.exception("stock database unavailable")
            return 503, {"error": "the stock database is unavailable"}
        headers = {"replayed": outcome.replayed}
        if outcome.outcome == APPLIED:
            return 200, {"status": "added", "stock": "decremented", **headers}
        short = dict(outcome.decision.short) if outcome.decision is not None else {}
        return 202, {"status": "accepted", "message": NOT_ENOUGH_STOCK, "short": short, **headers}

    def _report_review(self, line: OrderLine, key: str) -> None:
        try:
            self.sink.report(
                REVIEW_KIND,
                "review",
                payload={
                    "productId": line.product_id,
                    "orderId": line.order_id,
                    "clientId": line.client_id,
                },
                error=LookupError(f"the Products service has no product {line.product_id!r}"),
                dedupe_key=f"{REVIEW_KIND}:{line.product_id}",
                correlation_id=key,
            )
        except Exception:  # the answer is 404 all the same; the log keeps the failure
            log.exception("could not report unknown product %s", line.product_id)

    def _write_failed(
        self, line: OrderLine, key: str, take: dict[str, int], exc: StockWriteFailed
    ) -> tuple[int, dict[str, Any]]:
        # step 10: the Error-handling service redoes the write later, by itself
        try:
            self.sink.report(
                RETRY_KIND,
                "retry",
                payload={
                    "key": key,
                    "orderId": line.order_id,
                    "productId": line.product_id,
                    "quantity": line.quantity,
                    "take": take,
                },
                error=exc,
                dedupe_key=f"{RETRY_KIND}:{key}",
                correlation_id=key,
            )
        except Exception as report_failed:
            # not recorded anywhere: do not promise; the Order service retries elsewhere
            log.error("stock write failed and could not be reported: %s", report_failed)
            return 503, {"error": "the stock could not be written"}
        log.warning("stock write failed key=%s: %s; reported for a retry", key, exc)
        # step 11: the stock was known to be sufficient, so the product is added anyway
        return 200, {"status": "added", "stock": "pending retry", "replayed": False}

    def retry(self, record: Any) -> tuple[int, dict[str, Any]]:
        """The Error-handling service's callback: redo a failed write, once per key."""
        try:
            payload = record["payload"]
            key = payload["key"]
            take = {str(c): int(n) for c, n in payload["take"].items()}
            product_id, quantity = str(payload["productId"]), int(payload["quantity"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return 422, {"error": "record.payload: needs key, productId, quantity, take"}
        try:
            outcome = self.stock.decrement(
                key, product_id, quantity, take, before_write=self.faults.before_write, force=True
            )
        except StockWriteFailed as exc:
            log.warning("retried stock write failed key=%s: %s", key, exc)
            return 500, {"error": f"stock write failed: {exc}"}
        log.info("retried stock write key=%s: %s", key, outcome)
        return 200, {"outcome": outcome.outcome, "replayed": outcome.replayed}


def create_app(settings: Settings, instance: str) -> Starlette:
    """The app of the Warehouse instance ``instance`` (``warehouse-1`` or ``warehouse-2``)."""
    warehouse = Warehouse(settings, instance)

    async def add(request: Request) -> Response:
        try:
            line = parse_order_line(await read_json(request, Invalid.not_json))
        except Invalid as exc:
            return invalid(exc)
        # a request without a key is applied once too: under a key of its own
        key = request.headers.get("Idempotency-Key") or f"local-{uuid.uuid4().hex}"
        status, body = await run_in_threadpool(warehouse.add, line, key)
        return JSONResponse(body, status_code=status, headers={"X-Instance": instance})

    async def retry(request: Request) -> Response:
        try:
            data = await read_json(request, Invalid.not_json)
        except Invalid as exc:
            return invalid(exc)
        record = data.get("record") if isinstance(data, dict) else None
        status, body = await run_in_threadpool(warehouse.retry, record)
        return JSONResponse(body, status_code=status, headers={"X-Instance": instance})

    async def stock(request: Request) -> Response:
        levels = await run_in_threadpool(warehouse.stock.levels)
        return JSONResponse({"stock": levels})

    return Starlette(
        routes=[
            Route("/warehouse/v1/order/products", add, methods=["POST"]),
            Route(RETRY_PATH, retry, methods=["POST"]),
            Route("/warehouse/v1/stock", stock, methods=["GET"]),
            Route("/healthz", healthz(instance), methods=["GET"]),
            health_route("/health"),  # the Products client's and the error sink's circuits
            *fault_routes(warehouse.faults),
        ],
        middleware=[
            Middleware(TracingMiddleware),
            Middleware(FaultMiddleware, faults=warehouse.faults),
        ],
        lifespan=closing(warehouse.close),
    )
