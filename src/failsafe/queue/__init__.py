"""failsafe.queue: consumer-side redelivery with a DLQ over brokers. Not built yet (issue 5)."""

__all__: list[str] = []
