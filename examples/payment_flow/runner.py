"""The example's processes: which app each service runs, its supervisor, and cleaning up
RabbitMQ after a run.

`Supervisor` is the shared `examples._support.processes.Supervisor` set up for this example:
it starts each of `SERVICES` as ``python -m examples.payment_flow serve NAME --settings PATH
--fd N`` on a free loopback port, logs to ``NAME.log`` in the run folder, and kills
(``kill -9``) and restarts a service on the same port. `Supervisor.serve` is the child's side.
"""

from __future__ import annotations

from examples._support import processes
from examples.payment_flow.settings import SERVICES, Settings

__all__ = ["Supervisor", "delete_rabbitmq_queues"]


class Supervisor(processes.Supervisor[Settings], services=SERVICES, settings=Settings):
    """Error-handling, Order, Payment, Status consumer: started in that order, stopped in
    the reverse one."""

    @staticmethod
    def create_app(name: str, settings: Settings) -> object:
        """The app of service ``name``."""
        if name == "order":
            from examples.payment_flow.order_service import create_app as order_app

            return order_app(settings)
        if name == "payment":
            from examples.payment_flow.payment_service import create_app as payment_app

            return payment_app(settings)
        if name == "consumer":
            from examples.payment_flow.status_consumer import create_app as consumer_app

            return consumer_app(settings)
        if name == "errors":
            from examples.payment_flow.errors_service import create_app as errors_app

            return errors_app(settings)
        raise ValueError(f"no service {name!r}; one of {', '.join(SERVICES)}")


def delete_rabbitmq_queues(settings: Settings) -> None:
    """Delete a run's work, delay and parking queues from RabbitMQ (tests and benchmarks).

    RabbitMQ's queues are durable: a run with a queue name of its own leaves them behind.
    """
    import asyncio

    import aio_pika

    async def delete() -> None:
        connection = await aio_pika.connect(settings.broker_url)
        async with connection:
            channel = await connection.channel()
            ms = int(settings.redelivery_delay * 1000)
            for name in (
                settings.queue,
                f"{settings.queue}.parked",
                f"{settings.queue}.delay.{ms}",
            ):
                await channel.queue_delete(name)

    if settings.rabbitmq:
        asyncio.run(delete())
