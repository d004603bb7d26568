"""Every knob of the example that is not a pipeline, in one frozen value saved as JSON.

The supervisor (``runner``) writes ``settings.json`` once the ports are chosen, and each
service process reads it back, so that all of them agree on the addresses, the broker and
the queue's recoverability. The defaults follow the payment flow (the DLQ redelivers every
60 s). The HTTP client's policies (one attempt, a circuit breaker) are in ``failsafe.toml``
beside this module (`wiring.policies`). `Settings.fast` shortens every wait for the demo,
the tests and the benchmark: its own, and the file's through ``overrides``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from examples._support.settings import RunSettings

__all__ = ["SERVICES", "Settings", "parse_duration"]

SERVICES = ("errors", "order", "payment", "consumer")
"""The service processes, in the order they start (each needs the ones before it)."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``60``, ``2s``, ``500ms``, ``1.5m``, ``1h``.

    Raises:
        ValueError: If ``text`` is not a duration of at least 0.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (such as 60, 2s, 500ms, 1m)")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * unit


@dataclass(frozen=True)
class Settings(RunSettings):
    """Where the services listen, where they keep their data, and their policies.

    `RunSettings` holds the run folder, the ports of `SERVICES`, ``dsn`` (the Orders
    database and the error records in PostgreSQL) and the Error-handling service's retries
    of a failed status write (20 attempts here, from 30 s apart). The queue's side:

    Attributes:
        broker: ``None`` for the embedded SQLite broker (``queue.db`` in the run folder), or
            an ``amqp://`` URL for RabbitMQ.
        queue: The work queue's name.
        redelivery_delay: Seconds a message waits in the DLQ between rounds (payment flow: 60).
        redelivery_rounds: Rounds through the DLQ before a message goes to review.
        immediate: Immediate retries of a delivery in the consumer, before the DLQ.
        immediate_backoff: First pause between them, in seconds (doubling, jittered).
        lease: Seconds a SQLite delivery stays reserved: a consumer killed with ``kill -9``
            delays its messages by this much.
        prefetch: Messages a RabbitMQ consumer may hold unacknowledged.
        concurrency: Messages the Status consumer handles at once.
        http_timeout: Seconds for each step of one call of the consumer to the Order
            service (the client's ``timeout``); its circuit breaker is the ``order``
            pipeline's, in ``failsafe.toml``.
    """

    FAST: ClassVar[dict[str, Any]] = {
        "redelivery_delay": 2.0,
        "immediate_backoff": 0.05,
        "lease": 5.0,
        "http_timeout": 2.0,
        "retry_backoff_max": 1.0,
        "overrides": {"FAILSAFE_ORDER_CIRCUIT_BREAKER_RESET_TIMEOUT": "1"},
    }
    """What `fast` changes: the same policies as the defaults, with the DLQ's 60 s shrunk to
    2 s and the Error-handling service's retries within a second."""

    run_dir: str = ".payment-flow"
    ports: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    schema: str = "payment_flow"
    retry_attempts: int = 20
    retry_backoff: float = 30.0
    broker: str | None = None
    queue: str = "order-status"
    redelivery_delay: float = 60.0
    redelivery_rounds: int = 30
    immediate: int = 2
    immediate_backoff: float = 0.1
    lease: float = 60.0
    prefetch: int = 16
    concurrency: int = 8
    http_timeout: float = 5.0

    @property
    def broker_url(self) -> str:
        """The broker's URL: ``broker``, or the SQLite file in the run folder."""
        return self.broker or str(self.path / "queue.db")

    @property
    def rabbitmq(self) -> bool:
        """Whether the broker is RabbitMQ."""
        return self.broker is not None and self.broker.startswith(("amqp://", "amqps://"))
