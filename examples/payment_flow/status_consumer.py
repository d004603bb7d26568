"""The Status consumer (payment flow steps 2-4): the ``order-status`` queue to the Order service.

A failsafe [`Consumer`][failsafe.queue.Consumer] hands each message to `deliver`, which
sends ``PUT /orders/{orderId}/status`` with the message id as ``Idempotency-Key``. Which
component reports what (one owner per failure, so nothing is reported twice and nothing
waits unseen):

- 2xx (applied, duplicate, stale, or a failed write it has reported for a retry):
  `deliver` returns and the message is acked;
- 404 with ``"reported": true`` (it filed a review record for the unknown order): `deliver`
  returns and the message is acked, since the record holds it;
- no answer, a 5xx or a 429, or the circuit is open (the Order service is down): `deliver`
  raises a transient error: immediate retries, then the DLQ every ``redelivery_delay``
  seconds; after the last round, a review record ``queue.order-status`` from the consumer
  and the parking queue;
- another 4xx, or a body that is not a status message: `deliver` raises `Unrecoverable`: a
  review record ``queue.order-status`` and the parking queue at once.

The process has no API of its own, but serves a small app on its port: ``/healthz``,
``/stats`` (the consumer's events, counted) and ``/health``, failsafe's snapshot
(`failsafe.health.health_route`): the consumer (running, messages in flight, the DLQ depth
it last learnt), its circuit to the Order service and its error sink's. Its client's
policies are the ``order`` pipeline of ``failsafe.toml``, which it watches.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples._support.web import healthz
from examples.payment_flow.domain import Invalid, parse_status_message
from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import (
    blocking_broker,
    error_sink,
    order_client,
    policies,
    queue_review_kind,
    redelivery,
)
from failsafe.events import Event
from failsafe.health import health_route
from failsafe.logging import LoggingListener
from failsafe.queue import Consumer, Envelope, Unrecoverable
from failsafe.queue.events import MessageHandled, MessageReceived
from failsafe.tracing import TracingMiddleware

__all__ = ["EventCounter", "OrderServiceUnavailable", "StatusRefused", "create_app", "deliver"]

log = logging.getLogger("consumer")


class OrderServiceUnavailable(Exception):
    """The Order service answered that it cannot take the status now (5xx, 429)."""


class StatusRefused(Unrecoverable):
    """The message can never be applied: not a status message, or refused by the Order service."""


def deliver(client: httpx.Client, message: Envelope) -> None:
    """Hand one ``order-status`` message to the Order service.

    Raises:
        StatusRefused: If the message is not a status message or the Order service refuses
            it for good (a 4xx other than a reported 404): it goes to review at once.
        OrderServiceUnavailable: On a 5xx or 429 answer (transient).
        httpx.HTTPError: If the Order service cannot be reached (transient).
    """
    try:
        order_id, status = parse_status_message(message.json())
    except Invalid as exc:
        raise StatusRefused(f"not a status message: {exc}") from None
    response = client.put(
        f"/orders/{order_id}/status",
        json={"status": status},
        headers={"Idempotency-Key": message.id},
    )
    code = response.status_code
    if 200 <= code < 300:
        return
    if code == 404 and _reported(response):
        return  # the Order service filed a review record: the message is in its hands
    if code >= 500 or code in (408, 429):
        raise OrderServiceUnavailable(f"the Order service answered HTTP {code}")
    raise StatusRefused(f"the Order service refused the status: HTTP {code} {response.text[:200]}")


def _reported(response: httpx.Response) -> bool:
    try:
        return response.json().get("reported") is True
    except (ValueError, AttributeError):
        return False


class EventCounter:
    """A failsafe listener counting the consumer's events by type (``/stats``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, event: Event, /) -> None:
        """Count one event."""
        with self._lock:
            self.counts[type(event).__name__] += 1

    def snapshot(self) -> dict[str, int]:
        """The counts so far."""
        with self._lock:
            return dict(self.counts)


class _Quiet(logging.Filter):
    """Log the failures and the DLQ moves; not every message received or handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "failsafe_event", None)
        return not isinstance(event, MessageReceived | MessageHandled)


def create_app(settings: Settings) -> Starlette:
    """The Status consumer's process: the consumer on a thread, ``/stats`` and ``/health``
    on the port."""
    counter = EventCounter()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = blocking_broker(settings)
        config = policies(settings)
        watch = config.watch(settings.watch_interval)  # failsafe.toml: edits apply at once
        client = order_client(settings, config)
        sink = error_sink(settings, "status-consumer")
        logger = logging.getLogger("consumer.events")
        logger.addFilter(_Quiet())
        consumer = Consumer(
            broker,
            settings.queue,
            lambda message: deliver(client, message),
            redelivery=redelivery(settings),
            errors=sink,
            concurrency=settings.concurrency,
            poll=0.2,
            listeners=[counter, LoggingListener(logger)],
            name="status-consumer",
            review_kind=queue_review_kind(settings),
        )
        thread = threading.Thread(target=consumer.run, name="status-consumer", daemon=True)
        thread.start()
        state["consumer"] = consumer
        try:
            yield
        finally:
            consumer.stop()
            thread.join(30.0)
            for close in (watch.close, client.close, sink.close, broker.close):
                with contextlib.suppress(Exception):
                    close()

    async def stats(request: Request) -> Response:
        return JSONResponse(counter.snapshot())

    routes = [
        Route("/stats", stats),
        Route("/healthz", healthz("consumer")),
        health_route("/health"),  # the consumer (in flight, DLQ depth) and its circuit
    ]
    return Starlette(routes=routes, middleware=[Middleware(TracingMiddleware)], lifespan=lifespan)
