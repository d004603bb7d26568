"""Every knob of the example in one frozen value, saved as JSON in the run folder.

The supervisor (``runner``) writes ``settings.json`` once the ports are chosen, and each
service process reads it back, so that all of them agree on the addresses and the policies.
The defaults follow the seed (the first try plus three retries per Warehouse instance, with
backoff and jitter); `Settings.fast` shortens every wait for the demo, the tests and the
benchmark.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SERVICES", "Settings"]

SERVICES = ("errors", "products", "warehouse-1", "warehouse-2", "order")
"""The service processes, in the order they start (each needs the ones before it)."""


@dataclass(frozen=True)
class Settings:
    """Where the services listen, where they keep their data, and their policies.

    Attributes:
        run_dir: The run folder: SQLite files, logs, spools and ``settings.json``.
        host: The loopback address every service listens on.
        ports: The port of each service (see `SERVICES`); 0 until the supervisor picks them.
        dsn: A PostgreSQL DSN: the stock, the catalogue and the error records go there
            (in ``schema``) instead of SQLite files in the run folder.
        schema: The PostgreSQL schema of this run (with ``dsn``).
        warehouse_attempts: Attempts per Warehouse instance, the first included (seed: 4).
        warehouse_backoff: First backoff delay between them, in seconds (doubling, full
            jitter).
        warehouse_backoff_max: The longest backoff delay, in seconds.
        warehouse_timeout: Seconds for one attempt.
        warehouse_deadline: Seconds for the whole call, both instances included.
        breaker_failures: Consecutive failures that open an instance's circuit.
        breaker_reset: Seconds an open circuit stays open before one probe.
        products_attempts: Attempts on the Products service (GET: always safe to resend).
        products_timeout: Seconds for one attempt on the Products service.
        retry_attempts: The Error-handling service's attempts at a failed stock write
            before a person gets it.
        retry_backoff: Its first delay, in seconds (doubling, full jitter).
        retry_backoff_max: Its longest delay, in seconds.
        poll_interval: Seconds between the Error-handling service's retry rounds.
        sink_poll: Seconds between the Warehouse's deliveries of spooled reports.
    """

    run_dir: str = ".warehouse-flow"
    host: str = "127.0.0.1"
    ports: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    dsn: str | None = None
    schema: str = "warehouse_flow"
    warehouse_attempts: int = 4
    warehouse_backoff: float = 0.1
    warehouse_backoff_max: float = 2.0
    warehouse_timeout: float = 2.0
    warehouse_deadline: float = 15.0
    breaker_failures: int = 5
    breaker_reset: float = 30.0
    products_attempts: int = 3
    products_timeout: float = 2.0
    retry_attempts: int = 8
    retry_backoff: float = 10.0
    retry_backoff_max: float = 900.0
    poll_interval: float = 1.0
    sink_poll: float = 5.0

    @classmethod
    def fast(cls, run_dir: str | Path, **changes: Any) -> Settings:
        """Settings with short waits, for the demo, the tests and the benchmark.

        The same policies as the defaults (four attempts per instance, failover, breakers,
        retries by the Error-handling service), with delays of tens of milliseconds.
        """
        options: dict[str, Any] = {
            "run_dir": str(run_dir),
            "warehouse_backoff": 0.02,
            "warehouse_backoff_max": 0.1,
            "warehouse_timeout": 3.0,
            "warehouse_deadline": 10.0,
            "breaker_reset": 5.0,
            "retry_attempts": 12,
            "retry_backoff": 0.2,
            "retry_backoff_max": 0.8,
            "poll_interval": 0.1,
            "sink_poll": 0.5,
        }
        options.update(changes)
        return cls(**options)

    def url(self, service: str) -> str:
        """The base URL of ``service`` (one of `SERVICES`)."""
        return f"http://{self.host}:{self.ports[service]}"

    @property
    def warehouse_urls(self) -> list[str]:
        """The Warehouse instances, in the Order service's order of preference."""
        return [self.url("warehouse-1"), self.url("warehouse-2")]

    @property
    def path(self) -> Path:
        """The run folder."""
        return Path(self.run_dir)

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
