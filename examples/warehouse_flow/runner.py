"""The example's processes: which app each service runs, and its supervisor.

`Supervisor` is the shared `examples._support.processes.Supervisor` set up for this example:
it starts each of `SERVICES` as ``python -m examples.warehouse_flow serve NAME --settings
PATH --fd N`` on a free loopback port, logs to ``NAME.log`` in the run folder, and kills
(``kill -9``) and restarts a service on the same port. `Supervisor.serve` is the child's side.
"""

from __future__ import annotations

from examples._support import processes
from examples.warehouse_flow.settings import SERVICES, Settings

__all__ = ["Supervisor"]


class Supervisor(processes.Supervisor[Settings], services=SERVICES, settings=Settings):
    """The five services as processes; the Order service stops first, the Error-handling
    service last."""

    @staticmethod
    def create_app(name: str, settings: Settings) -> object:
        """The app of service ``name``."""
        if name in ("warehouse-1", "warehouse-2"):
            from examples.warehouse_flow.warehouse import create_app as warehouse_app

            return warehouse_app(settings, name)
        if name == "order":
            from examples.warehouse_flow.order_service import create_app as order_app

            return order_app(settings)
        if name == "products":
            from examples.warehouse_flow.products import create_app as products_app

            return products_app(settings)
        if name == "errors":
            from examples.warehouse_flow.errors_service import create_app as errors_app

            return errors_app(settings)
        raise ValueError(f"no service {name!r}; one of {', '.join(SERVICES)}")
