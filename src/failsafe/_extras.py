"""A missing optional dependency named by the extra that installs it.

``import failsafe.http`` without httpx should not end in a bare ``No module named 'httpx'``:
the user needs to know which extra to install.
"""

from __future__ import annotations

from typing import Final

EXTRAS: Final = {
    "http": "httpx transports (failsafe.http)",
    "errors": "the Error-handling service and its client (failsafe.errors)",
    "postgres": "the PostgreSQL error store (failsafe.errors.postgres, --dsn)",
    "rabbitmq": "RabbitMQ queues (failsafe.queue.rabbitmq, amqp:// brokers)",
    "redis": "circuit breakers and rate limits shared through Redis (redis_storage,"
    " redis_rate_limit)",
    "otel": "OpenTelemetry traces, metrics and gauges (failsafe.opentelemetry)",
    "prometheus": "Prometheus metrics and gauges (failsafe.prometheus)",
}
"""Every extra of the distribution that adds a runtime feature, with what it adds."""


class MissingExtra(ImportError):
    """A feature's extra is not installed (the message names it and the pip command)."""


def missing_extra(extra: str, feature: str, error: ImportError) -> ImportError:
    """An ImportError saying that ``feature`` needs ``extra``, for ``raise ... from error``."""
    assert extra in EXTRAS, extra
    # the distribution's top-level package, not the submodule that was asked for
    missing = (error.name or "").partition(".")[0] or "a dependency"
    return MissingExtra(
        f"{feature} needs the {extra!r} extra ({missing} is not installed): "
        f"pip install 'failsafe-kit[{extra}]'",
        name=missing,
    )
