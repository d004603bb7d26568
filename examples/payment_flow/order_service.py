"""The Order service (payment flow steps 4-6): writes an order's new status to the Orders database.

``PUT /orders/{orderId}/status`` takes ``{"status": "paid"}`` with the queue message's id as
``Idempotency-Key`` (`domain.parse_status_update`; 422 naming the field otherwise), and
applies it once (`db.OrdersDB.apply`):

- ``200`` with the outcome: ``applied``, ``duplicate`` (this message was applied before)
  or ``stale`` (the order already has this status or a later one);
- the write failed (step 5): the failure is reported to the Error-handling service for an
  automatic retry (kind ``order.status``, the message in the payload), and the answer is
  ``202 Accepted``: the Error-handling service now owns the write, and the consumer may
  settle the message;
- the order is not in the database (step 6): the failure is reported for a person's review
  (kind ``order.not_found``), and the answer is ``404`` with ``"reported": true``, which
  tells the consumer that the message is in the Error-handling service's hands.

A report goes through the service's `ErrorSink`: delivered at once, or spooled on disk
while the Error-handling service is down. If even that fails, the answer is ``503`` and the
consumer tries again later.

``POST /orders/v1/retry/status`` is the Error-handling service's callback: it redoes the
write of a record (``{"record": ...}``, its id as ``Idempotency-Key``) with the message id
of its payload, so a write that the queue redelivered meanwhile is not applied twice; it
answers ``503`` while the write still fails and ``404`` while the order is still unknown.

``POST /orders`` creates orders in status ``reserved`` (``{"orderId": ...}`` or
``{"orders": [...]}``); ``GET /orders/{orderId}`` shows one with its status history.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples._support.faults import FaultMiddleware, Faults, fault_routes
from examples._support.web import healthz, invalid, read_json
from examples.payment_flow.db import OrdersDB, Outcome, StatusWriteFailed
from examples.payment_flow.domain import Invalid, StatusUpdate, parse_status_update
from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import RETRY_KIND, RETRY_PATH, REVIEW_KIND, error_sink
from failsafe.health import health_route
from failsafe.tracing import TracingMiddleware

__all__ = ["OrderService", "create_app"]

log = logging.getLogger("order")


class OrderService:
    """The Order service's logic over the Orders database and its error sink."""

    def __init__(self, settings: Settings) -> None:
        self.faults = Faults("Orders database refused the write (injected fault)")
        self.db = OrdersDB.open(settings)
        self.sink = error_sink(settings, "order-service")

    def close(self) -> None:
        """Close the sink (its spool keeps what it holds) and the database."""
        self.sink.close()
        self.db.close()

    def change_status(self, update: StatusUpdate) -> tuple[int, dict[str, Any]]:
        """Steps 4-6 for one message: the status and body of the answer."""
        payload = {
            "orderId": update.order_id,
            "status": update.status,
            "messageId": update.message_id,
        }
        try:
            outcome, status = self.db.apply(
                update, source="consumer", before_write=self.faults.before_write
            )
        except StatusWriteFailed as exc:
            # step 5: the Error-handling service retries the write by its own logic
            report_id = self.sink.report(
                RETRY_KIND,
                "retry",
                payload=payload,
                error=exc,
                dedupe_key=f"{RETRY_KIND}:{update.message_id}",
                correlation_id=update.message_id,
            )
            log.warning("order %s: status write failed (%s); reported", update.order_id, exc)
            return 202, {**payload, "outcome": "retry_reported", "reportId": report_id}
        if outcome is Outcome.NOT_FOUND:
            # step 6: a person looks for the lost order
            report_id = self.sink.report(
                REVIEW_KIND,
                "review",
                payload=payload,
                error=LookupError(f"no order {update.order_id} in the Orders database"),
                dedupe_key=f"{REVIEW_KIND}:{update.message_id}",
                correlation_id=update.message_id,
            )
            log.warning("order %s not found; reported for review", update.order_id)
            return 404, {
                "error": "order not found",
                "orderId": update.order_id,
                "reported": True,
                "reportId": report_id,
            }
        return 200, {**payload, "outcome": outcome.value, "current": status}

    def retry(self, record: Any) -> tuple[int, dict[str, Any]]:
        """The Error-handling service's retry of a record: the status and body of the answer."""
        if not isinstance(record, dict) or not isinstance(record.get("payload"), dict):
            raise Invalid("record", "must be an error record with a payload")
        payload = record["payload"]
        order_id = payload.get("orderId")
        if not isinstance(order_id, str):
            raise Invalid("record.payload.orderId", "must be a string")
        update = parse_status_update(
            order_id, {"status": payload.get("status")}, payload.get("messageId")
        )
        try:
            outcome, status = self.db.apply(
                update, source="errors-retry", before_write=self.faults.before_write
            )
        except StatusWriteFailed as exc:
            return 503, {"error": f"status write failed: {exc}"}
        if outcome is Outcome.NOT_FOUND:
            return 404, {"error": f"order {update.order_id} is still not in the database"}
        return 200, {"orderId": update.order_id, "outcome": outcome.value, "current": status}


def create_app(settings: Settings) -> Starlette:
    """The Order service's app."""
    service = OrderService(settings)

    async def put_status(request: Request) -> Response:
        try:
            update = parse_status_update(
                request.path_params["order_id"],
                await read_json(request, Invalid.not_json),
                request.headers.get("idempotency-key"),
            )
        except Invalid as exc:
            return invalid(exc)
        try:
            status, body = await run_in_threadpool(service.change_status, update)
        except Exception as exc:  # the report could neither be delivered nor spooled
            log.exception("order %s: status change failed", update.order_id)
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=503)
        return JSONResponse(body, status_code=status)

    async def retry(request: Request) -> Response:
        try:
            body = await read_json(request, Invalid.not_json)
            if not isinstance(body, dict):
                raise Invalid("body", "must be a JSON object")
            status, answer = await run_in_threadpool(service.retry, body.get("record"))
        except Invalid as exc:
            return invalid(exc)
        return JSONResponse(answer, status_code=status)

    async def add(request: Request) -> Response:
        try:
            body = await read_json(request, Invalid.not_json)
            if not isinstance(body, dict):
                raise Invalid("body", "must be a JSON object")
            ids = body["orders"] if "orders" in body else [body.get("orderId")]
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                raise Invalid("orders", "must be a list of order ids")
        except Invalid as exc:
            return invalid(exc)
        added = await run_in_threadpool(service.db.add_orders, ids)
        return JSONResponse({"added": added}, status_code=201)

    async def show(request: Request) -> Response:
        order = await run_in_threadpool(service.db.get, request.path_params["order_id"])
        if order is None:
            return JSONResponse({"error": "order not found"}, status_code=404)
        return JSONResponse(order)

    routes = [
        Route("/orders", add, methods=["POST"]),
        Route("/orders/{order_id}", show, methods=["GET"]),
        Route("/orders/{order_id}/status", put_status, methods=["PUT"]),
        Route(RETRY_PATH, retry, methods=["POST"]),
        Route("/healthz", healthz("order")),
        health_route("/health"),  # the error sink's circuit
        *fault_routes(service.faults),
    ]
    middleware = [Middleware(TracingMiddleware), Middleware(FaultMiddleware, faults=service.faults)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.closers = [service.close]
    return app
