"""A listener that writes failsafe's events to the standard `logging` module."""

from __future__ import annotations

import logging as _logging

from failsafe.events import (
    AttemptFailed,
    BulkheadRejected,
    CircuitOpened,
    CircuitRejected,
    CircuitStorageUnavailable,
    Event,
    RetriesExhausted,
    RetryBudgetExhausted,
    TimedOut,
)

__all__ = ["LoggingListener"]

_WARNINGS = (
    CircuitOpened,
    CircuitStorageUnavailable,
    RetriesExhausted,
    RetryBudgetExhausted,
    BulkheadRejected,
    CircuitRejected,
    TimedOut,
)


class LoggingListener:
    """Log every event: warnings for give-ups and rejections, info for the rest.

    ``AttemptFailed`` is logged at debug (a ``RetryScheduled`` or ``RetriesExhausted``
    always follows it). The log record carries the event as ``record.failsafe_event``.

    Args:
        logger: The logger to write to (default: ``logging.getLogger("failsafe")``).

    Example:
        ```python
        import failsafe
        from failsafe.logging import LoggingListener

        failsafe.add_listener(LoggingListener())
        ```
    """

    __slots__ = ("logger",)

    def __init__(self, logger: _logging.Logger | None = None) -> None:
        self.logger = logger or _logging.getLogger("failsafe")

    def __call__(self, event: Event, /) -> None:
        """Log one event."""
        if isinstance(event, AttemptFailed):
            level = _logging.DEBUG
        elif isinstance(event, _WARNINGS):
            level = _logging.WARNING
        else:
            level = _logging.INFO
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "%s", event, extra={"failsafe_event": event})

    def __repr__(self) -> str:
        return f"LoggingListener(logger={self.logger.name!r})"
