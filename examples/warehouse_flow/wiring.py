"""The wiring: failsafe's policies and clients, built from `failsafe.toml` and the `Settings`.

Every resilience decision of the example is made here, once, by configuring failsafe. The
numbers (attempts, backoff, breakers, deadlines) are in ``failsafe.toml`` beside this
module, one pipeline per client: `policies` loads it, and each client's transport takes its
pipeline with ``policies=`` and follows the file's reloads.

- `warehouse_client`: the Order service's client for the two Warehouse instances (steps
  3-5): `ResilientTransport` with the instances as its ``endpoints`` (failover) and the
  ``warehouse`` pipeline: a total deadline (its timeout), four attempts on each instance
  with exponential backoff and full jitter (its retry), a circuit breaker per instance (its
  circuit_breaker); and an ``Idempotency-Key`` on the POST so that it may be resent;
- `products_client`: the Warehouse's client for the Products service (step 6): the same
  transport on one endpoint with the ``products`` pipeline (a GET is always safe to resend;
  a 404 is an answer, not retried);
- `error_sink`: the Warehouse's `ErrorSink` (steps 8 and 10): a report is delivered at once
  or spooled on disk in the run folder, and never lost (built the same way in both
  examples: `examples._support.errors_service.error_sink`);
- `errors_desk`, `retry_handlers`, `callback_client`: the Error-handling service's desk,
  with the retry schedule of failed stock writes, and the HTTP callback that redoes them on
  the Warehouse, sent through a failover transport over both instances (the ``callback``
  pipeline).
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from examples._support.errors_service import error_sink
from examples._support.policies import load_policies
from examples.warehouse_flow.settings import Settings
from failsafe import Backoff
from failsafe.config import Configuration
from failsafe.errors import ErrorDesk, ErrorStore, Handlers, RetrySchedule
from failsafe.http import HttpAttempt, ResilientTransport
from failsafe.logging import LoggingListener

__all__ = [
    "POLICIES",
    "RETRY_KIND",
    "RETRY_PATH",
    "REVIEW_KIND",
    "callback_client",
    "error_sink",
    "errors_desk",
    "policies",
    "products_client",
    "retry_handlers",
    "warehouse_client",
]

POLICIES = Path(__file__).with_name("failsafe.toml")
"""The example's pipelines: ``warehouse``, ``products`` and ``callback``."""
RETRY_KIND = "stock.decrement"
"""The kind of a failed stock write (step 10): retried by the Error-handling service."""
REVIEW_KIND = "product.not_found"
"""The kind of an unknown product (steps 7-8): for a Warehouse employee to review."""
RETRY_PATH = "/warehouse/v1/retry/stock-decrement"
"""The Warehouse's retry endpoint, which the Error-handling service calls back."""


class _Noteworthy(logging.Filter):
    """Keep the failures, retries, failovers and circuit changes; drop plain successes."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "failsafe_event", None)
        if isinstance(event, HttpAttempt):
            return event.error is not None or (event.status_code or 0) >= 500
        return True


def _listener(name: str) -> LoggingListener:
    logger = logging.getLogger(name)
    logger.addFilter(_Noteworthy())
    return LoggingListener(logger)


def policies(settings: Settings) -> Configuration:
    """The example's pipelines: `POLICIES` (or ``settings.policies_file``), with overrides.

    Each service keeps the result for its life and watches it (``watch``): the transports
    given its pipelines follow every reload.

    Raises:
        failsafe.config.ConfigError: Naming the file, line and key of the first problem.
    """
    return load_policies(settings, POLICIES)


def warehouse_client(settings: Settings, config: Configuration) -> httpx.Client:
    """The Order service's client for the Warehouse (order flow steps 2-5).

    One client for the whole service: it holds the connection pools and, in its transport,
    the instances' circuit breakers, which protect only if they outlive a request. Its
    policies are the ``warehouse`` pipeline's: the transport's breakers count transport
    errors and 502/503/504 answers (not a passed deadline); when both instances' circuits
    are open, it still sends a request to the one nearest to its probe (its
    ``last_resort``), so one healthy instance is never left unused.
    """
    transport = ResilientTransport(
        httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100)
        ),
        endpoints=settings.warehouse_urls,  # instance 1, then instance 2
        policies=config["warehouse"],  # timeout, retry, circuit_breaker: see failsafe.toml
        idempotency_key=True,  # the Order service sets its own; any other POST gets one too
        listeners=[_listener("order.warehouse")],
        name="warehouse",
    )
    return httpx.Client(
        transport=transport, base_url="http://warehouse", timeout=settings.warehouse_timeout
    )


def products_client(settings: Settings, config: Configuration) -> httpx.Client:
    """The Warehouse's client for the Products service (step 6)."""
    transport = ResilientTransport(
        endpoints=[settings.url("products")],
        policies=config["products"],
        listeners=[_listener("warehouse.products")],
        name="products",
    )
    return httpx.Client(
        transport=transport, base_url="http://products", timeout=settings.products_timeout
    )


def errors_desk(settings: Settings, store: ErrorStore) -> ErrorDesk:
    """The Error-handling service's desk, with the retry schedule of failed stock writes."""
    schedule = RetrySchedule(
        attempts=settings.retry_attempts,
        backoff=Backoff.exponential(settings.retry_backoff, maximum=settings.retry_backoff_max),
        lease=30.0,
    )
    return ErrorDesk(store, schedules={RETRY_KIND: schedule})


def retry_handlers() -> Handlers:
    """How the Error-handling service retries each kind: a failed stock write is POSTed to
    the Warehouse's retry endpoint (the host is chosen by `callback_client`)."""
    handlers = Handlers()
    handlers.register_url(RETRY_KIND, f"http://warehouse{RETRY_PATH}")
    return handlers


def callback_client(settings: Settings, config: Configuration) -> httpx.Client:
    """The Error-handling service's client for its callbacks to the Warehouse.

    One attempt per instance and per round (the ``callback`` pipeline: the service's
    schedule is the retry), failing over from instance 1 to instance 2 when instance 1 is
    down. The callback carries the record's id as its ``Idempotency-Key``, so the transport
    may resend it.
    """
    transport = ResilientTransport(
        endpoints=settings.warehouse_urls,
        policies=config["callback"],
        listeners=[_listener("errors.callback")],
        name="callback",
    )
    return httpx.Client(transport=transport, timeout=10.0)
