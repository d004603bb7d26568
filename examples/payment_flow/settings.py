"""Every knob of the example in one frozen value, saved as JSON in the run folder.

The supervisor (``runner``) writes ``settings.json`` once the ports are chosen, and each
service process reads it back, so that all of them agree on the addresses, the broker and
the policies. The defaults follow the seed (the DLQ redelivers every 60 s); `Settings.fast`
shortens every wait for the demo, the tests and the benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
class Settings:
    """Where the services listen, where they keep their data, and their policies.

    Attributes:
        run_dir: The run folder: SQLite files, logs, spools and ``settings.json``.
        host: The loopback address every service listens on.
        ports: The port of each service (see `SERVICES`); 0 until the supervisor picks them.
        broker: ``None`` for the embedded SQLite broker (``queue.db`` in the run folder), or
            an ``amqp://`` URL for RabbitMQ.
        queue: The work queue's name.
        dsn: A PostgreSQL DSN: the Orders database and the error records go there (in
            ``schema``) instead of SQLite files in the run folder.
        schema: The PostgreSQL schema of this run (with ``dsn``).
        redelivery_delay: Seconds a message waits in the DLQ between rounds (seed: 60).
        redelivery_rounds: Rounds through the DLQ before a message goes to review.
        immediate: Immediate retries of a delivery in the consumer, before the DLQ.
        immediate_backoff: First pause between them, in seconds (doubling, jittered).
        lease: Seconds a SQLite delivery stays reserved: a consumer killed with ``kill -9``
            delays its messages by this much.
        prefetch: Messages a RabbitMQ consumer may hold unacknowledged.
        concurrency: Messages the Status consumer handles at once.
        http_timeout: Seconds for one call of the consumer to the Order service.
        breaker_failures: Consecutive failures that open the consumer's circuit to the
            Order service.
        breaker_reset: Seconds the circuit stays open before one probe.
        retry_attempts: The Error-handling service's attempts at a failed status write.
        retry_backoff: Its first delay, in seconds (doubling, full jitter).
        retry_backoff_max: Its longest delay, in seconds.
        poll_interval: Seconds between the Error-handling service's retry rounds.
        sink_poll: Seconds between deliveries of spooled reports.
    """

    run_dir: str = ".payment-flow"
    host: str = "127.0.0.1"
    ports: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    broker: str | None = None
    queue: str = "order-status"
    dsn: str | None = None
    schema: str = "payment_flow"
    redelivery_delay: float = 60.0
    redelivery_rounds: int = 30
    immediate: int = 2
    immediate_backoff: float = 0.1
    lease: float = 60.0
    prefetch: int = 16
    concurrency: int = 8
    http_timeout: float = 5.0
    breaker_failures: int = 5
    breaker_reset: float = 10.0
    retry_attempts: int = 20
    retry_backoff: float = 30.0
    retry_backoff_max: float = 900.0
    poll_interval: float = 1.0
    sink_poll: float = 5.0

    @classmethod
    def fast(cls, run_dir: str | Path, **changes: Any) -> Settings:
        """Settings with short waits, for the demo, the tests and the benchmark.

        The same policies as the defaults, with the DLQ's 60 s shrunk to 2 s and the
        Error-handling service's retries within a second.
        """
        options: dict[str, Any] = {
            "run_dir": str(run_dir),
            "redelivery_delay": 2.0,
            "immediate_backoff": 0.05,
            "lease": 5.0,
            "http_timeout": 2.0,
            "breaker_reset": 1.0,
            "retry_backoff": 0.2,
            "retry_backoff_max": 1.0,
            "poll_interval": 0.1,
            "sink_poll": 0.5,
        }
        options.update(changes)
        return cls(**options)

    def url(self, service: str) -> str:
        """The base URL of ``service`` (one of `SERVICES`)."""
        return f"http://{self.host}:{self.ports[service]}"

    @property
    def path(self) -> Path:
        """The run folder."""
        return Path(self.run_dir)

    @property
    def broker_url(self) -> str:
        """The broker's URL: ``broker``, or the SQLite file in the run folder."""
        return self.broker or str(self.path / "queue.db")

    @property
    def rabbitmq(self) -> bool:
        """Whether the broker is RabbitMQ."""
        return self.broker is not None and self.broker.startswith(("amqp://", "amqps://"))

    def save(self) -> Path:
        """Write ``settings.json`` in the run folder (created if missing); return its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / "settings.json"
        target.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return target

    @classmethod
    def load(cls, path: str | Path) -> Settings:
        """Read settings written by `save`."""
        return cls(**json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)
