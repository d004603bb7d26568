"""The Order service (order flow steps 1-5 and 11): what the site calls to add a product.

``POST /orders/{orderId}/products`` with ``{"clientId": ..., "productId": ..., "quantity":
n}`` (422 naming the field otherwise). It calls the Warehouse through
`wiring.warehouse_client`, whose transport retries instance 1 (the first try plus three
retries), fails over to instance 2, and skips an instance whose circuit is open, with the
numbers of the ``warehouse`` pipeline in ``failsafe.toml``. The service watches that file:
an edit applies to the next request, without a restart. The answer
(`domain.order_answer`):

- ``200`` "The product was added to your order" (also when the stock write is left to the
  Error-handling service, step 11);
- ``202`` "Accepted, but there is not enough stock" (step 9);
- ``404`` "The product's information will be available later" (step 7);
- ``500`` "The product could not be added now; please try again later" (step 5).

Every answer carries ``requestId``, the idempotency key sent to the Warehouse: a site that
sends it back as ``Idempotency-Key`` on a later try (after a 500, say) can never add the
product twice. Without one, the Order service generates it.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
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
from examples.warehouse_flow.domain import Invalid, OrderLine, order_answer, parse_add_request
from examples.warehouse_flow.settings import Settings
from examples.warehouse_flow.wiring import policies, warehouse_client
from failsafe.health import health_route
from failsafe.tracing import TracingMiddleware

__all__ = ["OrderService", "create_app"]

log = logging.getLogger("order")
_KEY = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")


class OrderService:
    """The Order service's logic over its one Warehouse client."""

    def __init__(self, settings: Settings) -> None:
        self.policies = policies(settings)
        # a daemon thread reads failsafe.toml every watch_interval seconds; a change that
        # loads applies to the next request, one that does not is logged and ignored
        self.watch = self.policies.watch(settings.watch_interval)
        self.warehouse = warehouse_client(settings, self.policies)

    def close(self) -> None:
        """Stop watching the file and close the client."""
        self.watch.close()
        self.warehouse.close()

    def add(self, line: OrderLine, key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Steps 2-5 and 11: call the Warehouse; return the status, body and headers."""
        headers = {"Idempotency-Key": key}
        try:
            response = self.warehouse.post(
                "/warehouse/v1/order/products", json=line.to_json(), headers=headers
            )
        except httpx.TransportError as exc:  # AllEndpointsFailed, DeadlineExceeded
            log.warning("Warehouse unavailable for %s: %s", key, exc)
            status, message = order_answer(None)
            return status, {"error": message, "requestId": key}, {}
        endpoint = str(response.extensions.get("failsafe.endpoint", ""))
        attempts = str(response.extensions.get("failsafe.attempts", ""))
        log.info(
            "Warehouse answered %s for %s from %s after %s attempt(s)",
            response.status_code,
            key,
            endpoint,
            attempts,
        )
        status, message = order_answer(response.status_code)
        body: dict[str, Any] = {"requestId": key}
        body["message" if status < 400 else "error"] = message
        if status == 202:
            body["short"] = response.json().get("short", {})
        where = {"X-Warehouse-Endpoint": endpoint, "X-Warehouse-Attempts": attempts}
        return status, body, where


def create_app(settings: Settings) -> Starlette:
    """The Order service's ASGI app."""
    faults = Faults()
    service = OrderService(settings)

    async def add_product(request: Request) -> Response:
        key = request.headers.get("Idempotency-Key") or uuid.uuid4().hex
        try:
            if not _KEY.match(key):
                raise Invalid(
                    "Idempotency-Key", "must be 8-128 letters, digits, '.', '_', ':' or '-'"
                )
            line = parse_add_request(
                request.path_params["order_id"],
                await read_json(request, Invalid.not_json),
                now=datetime.now(UTC),
            )
        except Invalid as exc:
            return invalid(exc)
        status, body, headers = await run_in_threadpool(service.add, line, key)
        return JSONResponse(body, status_code=status, headers=headers)

    return Starlette(
        routes=[
            Route("/orders/{order_id}/products", add_product, methods=["POST"]),
            Route("/healthz", healthz("order"), methods=["GET"]),
            health_route("/health"),  # the Warehouse instances' circuits
            *fault_routes(faults),
        ],
        middleware=[Middleware(TracingMiddleware), Middleware(FaultMiddleware, faults=faults)],
        lifespan=closing(service.close),
    )
