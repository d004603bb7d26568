"""The wiring: failsafe's policies, brokers and clients, built from the `Settings`.

Every resilience decision of the example is made here, once, by configuring failsafe:

- `redelivery`: the Status consumer's `Redelivery` (payment flow step 3): a couple of immediate
  retries in process, then the DLQ every ``redelivery_delay`` seconds (60 by default),
  ``redelivery_rounds`` times, then review (the Error-handling service and the parking
  queue); nothing is dropped;
- `blocking_broker`, `async_broker`: the embedded `SQLiteBroker` (a file in the run folder)
  or RabbitMQ (`failsafe.queue.rabbitmq.RabbitMQBroker`: quorum queues, confirmed
  publishes, TTL delay queues), from one setting;
- `policies`: the example's pipelines, from ``failsafe.toml`` beside this module (the
  Status consumer watches it: an edit applies without a restart);
- `order_client`: the consumer's HTTP client for the Order service: a `ResilientTransport`
  with the ``order`` pipeline: one attempt per call (the consumer's `Redelivery` is the
  retry) and a circuit breaker, so that while the Order service is down messages go to the
  DLQ without a connection attempt each;
- `error_sink`: a service's `ErrorSink` (steps 5 and 6): a report is delivered at once or
  spooled on disk in the run folder, and never lost (built the same way in both examples:
  `examples._support.errors_service.error_sink`);
- `errors_desk`, `retry_handlers`: the Error-handling service's desk, with the retry schedule
  of failed status writes, and the HTTP callback through which it redoes them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from examples._support.errors_service import error_sink
from examples._support.policies import load_policies
from examples.payment_flow.settings import Settings
from failsafe import Backoff
from failsafe.config import Configuration
from failsafe.errors import ErrorDesk, ErrorStore, Handlers, RetrySchedule
from failsafe.http import ResilientTransport
from failsafe.queue import AsyncBroker, AsyncSQLiteBroker, Broker, Redelivery, SQLiteBroker
from failsafe.queue.bridge import as_blocking

__all__ = [
    "POLICIES",
    "RETRY_KIND",
    "RETRY_PATH",
    "REVIEW_KIND",
    "async_broker",
    "blocking_broker",
    "error_sink",
    "errors_desk",
    "order_client",
    "policies",
    "queue_review_kind",
    "redelivery",
    "retry_handlers",
]

POLICIES = Path(__file__).with_name("failsafe.toml")
"""The example's pipelines: ``order``, the Status consumer's calls to the Order service."""
RETRY_KIND = "order.status"
"""The kind of a failed status write (step 5): retried by the Error-handling service."""
REVIEW_KIND = "order.not_found"
"""The kind of a status for an unknown order (step 6): for a person to review."""
RETRY_PATH = "/orders/v1/retry/status"
"""The Order service's retry endpoint, which the Error-handling service calls back."""

log = logging.getLogger("payment_flow")


def queue_review_kind(settings: Settings) -> str:
    """The kind of a message the consumer gave up on (``queue.<queue>``)."""
    return f"queue.{settings.queue}"


def redelivery(settings: Settings) -> Redelivery:
    """The Status consumer's recoverability policy (payment flow step 3)."""
    return Redelivery(
        immediate=settings.immediate,
        immediate_backoff=Backoff.exponential(settings.immediate_backoff, maximum=1.0),
        delayed=settings.redelivery_rounds,
        delay=settings.redelivery_delay,
    )


def blocking_broker(settings: Settings) -> Broker:
    """The broker for blocking code (the Status consumer's threads, the demo, the tests).

    SQLite is built here rather than with `failsafe.queue.open_broker` because the lease
    (how long a killed consumer delays its messages) is a setting and ``open_broker`` takes
    no broker options.
    """
    if settings.rabbitmq:
        from failsafe.queue.rabbitmq import RabbitMQBroker

        url = settings.broker_url
        return as_blocking(lambda: RabbitMQBroker(url, prefetch=settings.prefetch))
    return SQLiteBroker(settings.broker_url, lease=settings.lease)


def async_broker(settings: Settings) -> AsyncBroker:
    """The broker for the Payment service's event loop.

    On RabbitMQ every publish is persistent, ``mandatory`` and waits for the publisher
    confirm; on SQLite it returns once the message is committed to the file.
    """
    if settings.rabbitmq:
        from failsafe.queue.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(settings.broker_url, prefetch=settings.prefetch)
    return AsyncSQLiteBroker(settings.broker_url, lease=settings.lease)


def policies(settings: Settings) -> Configuration:
    """The example's pipelines: `POLICIES` (or ``settings.policies_file``), with overrides.

    Raises:
        failsafe.config.ConfigError: Naming the file, line and key of the first problem.
    """
    return load_policies(settings, POLICIES)


def order_client(settings: Settings, config: Configuration) -> httpx.Client:
    """The Status consumer's client for the Order service (payment flow steps 2-4).

    The ``order`` pipeline: one attempt per call (the consumer's `Redelivery` decides what
    a failure leads to), and a circuit breaker that opens after its threshold of transport
    errors or 502/503/504 answers in a row, and probes again after its reset timeout.
    """
    transport = ResilientTransport(
        httpx.HTTPTransport(
            limits=httpx.Limits(
                max_connections=settings.concurrency * 2,
                max_keepalive_connections=settings.concurrency * 2,
            )
        ),
        endpoints=[settings.url("order")],
        policies=config["order"],  # retry, circuit_breaker: see failsafe.toml
        name="order",
    )
    return httpx.Client(transport=transport, base_url="http://order", timeout=settings.http_timeout)


def errors_desk(settings: Settings, store: ErrorStore) -> ErrorDesk:
    """The Error-handling service's desk, with the retry schedule of failed status writes.

    A review record of an unknown order that a person sends back for a retry (once the
    order is found) gets a few quick attempts, then comes back to the person.
    """
    retry = RetrySchedule(
        attempts=settings.retry_attempts,
        backoff=Backoff.exponential(settings.retry_backoff, maximum=settings.retry_backoff_max),
        lease=30.0,
    )
    found = RetrySchedule(attempts=3, backoff=Backoff.exponential(1.0, maximum=10.0), lease=30.0)
    return ErrorDesk(store, schedules={RETRY_KIND: retry, REVIEW_KIND: found})


def retry_handlers(settings: Settings) -> Handlers:
    """How the Error-handling service retries: both kinds are POSTed to the Order service's
    retry endpoint, with the record id as ``Idempotency-Key``."""
    handlers = Handlers()
    for kind in (RETRY_KIND, REVIEW_KIND):
        handlers.register_url(kind, f"{settings.url('order')}{RETRY_PATH}")
    return handlers
