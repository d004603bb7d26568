"""Open a broker from a URL: what the ``failsafe queue`` command line and configuration use.

The accepted forms:

```text
sqlite:///var/lib/app/queue.db   a SQLite file, absolute path   -> SQLiteBroker
sqlite:queue.db                  a SQLite file, relative path   -> SQLiteBroker
queue.db                         a plain file path              -> SQLiteBroker
amqp://user:pass@host:5672/vhost RabbitMQ (amqps:// for TLS)    -> RabbitMQBroker, blocking
```

RabbitMQ needs the ``failsafe-kit[rabbitmq]`` extra; aio-pika is imported only for an
``amqp://`` or ``amqps://`` URL.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError
from failsafe.queue.broker import Broker, BrokerUnavailable

__all__ = ["open_broker"]

_FORMS = (
    "sqlite:///absolute/path.db, sqlite:relative/path.db, a plain file path, "
    "or amqp://user:password@host:5672/vhost (amqps:// for TLS)"
)


def _check_options(kind: type, options: dict[str, Any]) -> None:
    accepted = set(inspect.signature(kind).parameters) - {"path", "url", "clock"}
    for name in options:
        if name not in accepted:
            raise ConfigurationError(
                name, f"is not an option of {kind.__name__} (its options: {sorted(accepted)})"
            )


def _sqlite_path(url: str) -> str | None:
    """The file path a SQLite form names, or ``None`` if ``url`` is not a SQLite form."""
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise ConfigurationError(
                    "broker",
                    f"{url!r} has a host part; write sqlite:///absolute/path.db or "
                    "sqlite:relative/path.db",
                )
        if not rest:
            raise ConfigurationError("broker", f"{url!r} names no file; accepted: {_FORMS}")
        return rest
    if "://" in url:
        return None
    return url


def open_broker(
    url: str, *, create: bool = True, clock: Clock = SYSTEM_CLOCK, **options: Any
) -> Broker:
    """Open the blocking broker that ``url`` names.

    Args:
        url: ``sqlite:///absolute/path.db``, ``sqlite:relative/path.db`` or a plain file path
            for a `SQLiteBroker`; ``amqp://...`` or ``amqps://...`` for a `RabbitMQBroker`
            (run on a background event loop through `as_blocking`).
        create: Whether a SQLite file that does not exist is created (``False``: raise
            `BrokerUnavailable` instead, so a typo does not leave an empty file behind).
        clock: Wall-clock time for the broker (a ``FakeClock`` in tests).
        **options: More options for the broker's constructor (`SQLiteBroker`'s ``lease``,
            ``poll_interval``, ...; `RabbitMQBroker`'s ``prefetch``, ``delivery_limit``, ...);
            a wrong one is a `ConfigurationError` naming it.

    Returns:
        The broker; call ``close()`` when done.

    Raises:
        ConfigurationError: For a URL of another form (naming ``broker`` and listing the
            accepted forms), or an ``amqp://`` URL without the rabbitmq extra installed.
        BrokerUnavailable: If the broker cannot be opened.

    Example:
        ```python
        from failsafe.queue.connect import open_broker

        broker = open_broker("sqlite:///var/lib/app/queue.db")
        try:
            parked = broker.dead_letters("orders")
        finally:
            broker.close()
        ```
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("broker", f"must be a URL or a file path; accepted: {_FORMS}")
    url = url.strip()
    path = _sqlite_path(url)
    if path is not None:
        from failsafe.queue.sqlite import SQLiteBroker

        if not create and path != ":memory:" and not Path(path).is_file():
            raise BrokerUnavailable(f"no queue file at {path}")
        _check_options(SQLiteBroker, options)
        return SQLiteBroker(path, clock=clock, **options)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("amqp", "amqps"):
        try:
            from failsafe.queue.rabbitmq import RabbitMQBroker
        except ImportError as exc:
            raise ConfigurationError(
                "broker",
                f"{scheme}:// needs the rabbitmq extra (pip install 'failsafe-kit[rabbitmq]'): "
                f"{exc}",
            ) from None
        from failsafe.queue.bridge import as_blocking

        _check_options(RabbitMQBroker, options)
        RabbitMQBroker(url, clock=clock, **options)  # bad options raise here, in this thread
        return as_blocking(lambda: RabbitMQBroker(url, clock=clock, **options))
    raise ConfigurationError(
        "broker", f"unknown broker URL scheme {scheme + '://'!r}; accepted: {_FORMS}"
    )
