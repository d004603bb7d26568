"""The Payment service (payment flow step 1): ``POST /payments``, then a message on the queue.

``POST /payments`` takes ``{"orderId": ..., "amount": ..., "card": ...}`` (`domain.parse_payment`;
422 naming the field otherwise) and runs the simulated card (`domain.charge`; 402 when it is
declined). On success it publishes ``{"orderId": ..., "status": "paid"}`` to the
``order-status`` queue and answers ``202 Accepted`` with the payment's id, which is also the
message's id, only once the broker has the message: committed to the SQLite file, or
confirmed by RabbitMQ (a persistent, ``mandatory`` publish with a publisher confirm). A broker
that cannot take it gets a 503 and the client tries again (the card charge is simulated;
a real service would void it, or write the message to an outbox in the payment's own
transaction).

An ``Idempotency-Key`` header makes the payment's id deterministic: a client that resends
a payment after a lost answer publishes a message with the same id, which the Order
service applies once.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples._support.faults import FaultMiddleware, Faults, fault_routes
from examples._support.web import healthz, invalid, read_json
from examples.payment_flow.domain import Invalid, charge, parse_payment, status_message
from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import async_broker
from failsafe.health import health_route
from failsafe.queue import AsyncBroker, Envelope
from failsafe.tracing import TracingMiddleware

__all__ = ["create_app", "payment_id"]

log = logging.getLogger("payment")
_NAMESPACE = uuid.UUID("6f1c9e8a-4a5b-4d0e-9a47-3b2f1c0d9e21")


def payment_id(idempotency_key: str | None) -> str:
    """The payment's (and its message's) id: derived from the client's key, or new."""
    if idempotency_key:
        return uuid.uuid5(_NAMESPACE, idempotency_key).hex
    return uuid.uuid4().hex


def create_app(settings: Settings) -> Starlette:
    """The Payment service's app."""
    faults = Faults()
    holder: dict[str, AsyncBroker] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = async_broker(settings)
        await broker.declare(settings.queue)
        holder["broker"] = broker
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await broker.aclose()

    async def pay(request: Request) -> Response:
        try:
            payment = parse_payment(await read_json(request, Invalid.not_json))
        except Invalid as exc:
            return invalid(exc)
        declined = charge(payment)
        if declined is not None:
            return JSONResponse({"error": declined, "orderId": payment.order_id}, status_code=402)
        ident = payment_id(request.headers.get("idempotency-key"))
        message = Envelope(
            body=status_message(payment.order_id),
            id=ident,
            content_type="application/json",
        )
        try:
            await holder["broker"].publish(settings.queue, message)
        except Exception as exc:  # BrokerUnavailable, a refused confirm, ...
            log.warning("payment %s: the queue did not take the message: %s", ident, exc)
            return JSONResponse(
                {"error": "the payment could not be completed now; try again later"},
                status_code=503,
            )
        return JSONResponse(
            {"paymentId": ident, "messageId": ident, "orderId": payment.order_id},
            status_code=202,
        )

    routes = [
        Route("/payments", pay, methods=["POST"]),
        Route("/healthz", healthz("payment")),
        health_route("/health"),  # no policy here: an empty list
        *fault_routes(faults),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(TracingMiddleware), Middleware(FaultMiddleware, faults=faults)],
        lifespan=lifespan,
    )
