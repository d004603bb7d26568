"""Every knob of the example that is not a policy, in one frozen value saved as JSON.

The supervisor (``runner``) writes ``settings.json`` in the run folder once the ports are
chosen, and each service process reads it back, so that all of them agree on the addresses.
The policies (attempts, backoff, breakers, the deadline) are not here: they are in
``failsafe.toml`` beside this module, one pipeline per HTTP client, which every service
loads and watches (`wiring.policies`). `Settings.fast` shortens every wait for the demo, the
tests and the benchmark: its own, and the file's through ``overrides``.
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
    """Where the services listen, where they keep their data, and the clients' timeouts.

    The run's place, the Error-handling service's knobs and the policies' file are
    `RunSettings` fields (with ``dsn``, the stock, the catalogue and the error records live
    in PostgreSQL). This class adds:

    Attributes:
        warehouse_timeout: Seconds for each step of one attempt on a Warehouse instance
            (connect, read, write: the client's ``timeout``); the whole call is bounded by
            the ``warehouse`` pipeline's timeout, in ``failsafe.toml``.
        products_timeout: The same, for one attempt on the Products service.
    """

    FAST: ClassVar[dict[str, Any]] = {
        "warehouse_timeout": 3.0,
        "retry_attempts": 12,
        "retry_backoff_max": 0.8,
        "overrides": {
            "FAILSAFE_WAREHOUSE_RETRY_BACKOFF": "{initial = 0.02, maximum = 0.1}",
            "FAILSAFE_WAREHOUSE_TIMEOUT_SECONDS": "10",
            "FAILSAFE_WAREHOUSE_CIRCUIT_BREAKER_RESET_TIMEOUT": "5",
            "FAILSAFE_PRODUCTS_RETRY_BACKOFF": "{initial = 0.02, maximum = 0.1}",
            "FAILSAFE_CALLBACK_CIRCUIT_BREAKER_RESET_TIMEOUT": "5",
        },
    }
    """What `fast` changes: the same policies as the file's (four attempts per instance,
    failover, breakers, retries by the Error-handling service), with delays of tens of
    milliseconds."""

    run_dir: str = ".warehouse-flow"
    ports: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    schema: str = "warehouse_flow"
    warehouse_timeout: float = 2.0
    products_timeout: float = 2.0

    @property
    def warehouse_urls(self) -> list[str]:
        """The Warehouse instances, in the Order service's order of preference."""
        return [self.url("warehouse-1"), self.url("warehouse-2")]
