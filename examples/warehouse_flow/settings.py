"""Every knob of the example in one frozen value, saved as JSON in the run folder.

The supervisor (``runner``) writes ``settings.json`` once the ports are chosen, and each
service process reads it back, so that all of them agree on the addresses and the policies.
The defaults follow the order flow (the first try plus three retries per Warehouse instance, with
backoff and jitter); `Settings.fast` shortens every wait for the demo, the tests and the
benchmark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from examples._support.settings import RunSettings

__all__ = ["SERVICES", "Settings"]

SERVICES = ("errors", "products", "warehouse-1", "warehouse-2", "order")
"""The service processes, in the order they start (each needs the ones before it)."""


@dataclass(frozen=True)
class Settings(RunSettings):
    """Where the services listen, where they keep their data, and their policies.

    The run's place and the Error-handling service's knobs are `RunSettings` fields (with
    ``dsn``, the stock, the catalogue and the error records live in PostgreSQL); the
    Warehouse calls' policies are this class's:

    Attributes:
        warehouse_attempts: Attempts per Warehouse instance, the first included (order flow: 4).
        warehouse_backoff: First backoff delay between them, in seconds (doubling, full
            jitter).
        warehouse_backoff_max: The longest backoff delay, in seconds.
        warehouse_timeout: Seconds for one attempt.
        warehouse_deadline: Seconds for the whole call, both instances included.
        breaker_failures: Consecutive failures that open an instance's circuit.
        breaker_reset: Seconds an open circuit first stays open before one probe.
        breaker_reset_max: The longest open period: it doubles after each failed probe, up
            to this, so that a restarted instance is found soon and a dead one is not
            probed every few seconds.
        products_attempts: Attempts on the Products service (GET: always safe to resend).
        products_timeout: Seconds for one attempt on the Products service.
    """

    FAST: ClassVar[dict[str, Any]] = {
        "warehouse_backoff": 0.02,
        "warehouse_backoff_max": 0.1,
        "warehouse_timeout": 3.0,
        "warehouse_deadline": 10.0,
        "breaker_reset": 5.0,
        "retry_attempts": 12,
        "retry_backoff_max": 0.8,
    }
    """What `fast` changes: the same policies as the defaults (four attempts per instance,
    failover, breakers, retries by the Error-handling service), with delays of tens of
    milliseconds."""

    run_dir: str = ".warehouse-flow"
    ports: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    schema: str = "warehouse_flow"
    warehouse_attempts: int = 4
    warehouse_backoff: float = 0.1
    warehouse_backoff_max: float = 2.0
    warehouse_timeout: float = 2.0
    warehouse_deadline: float = 15.0
    breaker_failures: int = 5
    breaker_reset: float = 2.0
    breaker_reset_max: float = 30.0
    products_attempts: int = 3
    products_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.breaker_reset_max < self.breaker_reset:
            raise ValueError(
                f"breaker_reset_max ({self.breaker_reset_max:g} s) must be at least"
                f" breaker_reset ({self.breaker_reset:g} s)"
            )

    @property
    def warehouse_urls(self) -> list[str]:
        """The Warehouse instances, in the Order service's order of preference."""
        return [self.url("warehouse-1"), self.url("warehouse-2")]
