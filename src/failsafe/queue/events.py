"""Events of the queue consumers, given to the same listeners as the core policies' events.

Pass listeners to a consumer (``Consumer(..., listeners=[...])``) or to every policy at once
with [`add_listener`][failsafe.events.add_listener]. Each event names the queue and the
message id. A [`LoggingListener`][failsafe.logging.LoggingListener] logs them.
"""

from __future__ import annotations

import attrs

from failsafe.events import Event

__all__ = [
    "MessageDeadLettered",
    "MessageEvent",
    "MessageHandled",
    "MessageReceived",
    "MessageRetried",
    "MessageSentForReview",
    "RedeliveryScheduled",
]


@attrs.frozen(kw_only=True)
class MessageEvent(Event):
    """Base of the queue events.

    Attributes:
        queue: The work queue.
        message_id: The message's id.
    """

    queue: str
    message_id: str


@attrs.frozen(kw_only=True)
class MessageReceived(MessageEvent):
    """A consumer took a message: ``deliveries`` of this copy, after ``delayed_attempts`` rounds."""

    deliveries: int
    delayed_attempts: int


@attrs.frozen(kw_only=True)
class MessageHandled(MessageEvent):
    """The handler succeeded on attempt ``attempt`` of the round; the message was acked."""

    attempt: int


@attrs.frozen(kw_only=True)
class MessageRetried(MessageEvent):
    """An immediate retry: attempt ``attempt`` starts after ``error`` (a type name)."""

    attempt: int
    error: str


@attrs.frozen(kw_only=True)
class RedeliveryScheduled(MessageEvent):
    """The message went to the DLQ; it is due back at ``due_at`` (wall clock)."""

    round: int
    delay: float
    due_at: float
    error: str


@attrs.frozen(kw_only=True)
class MessageSentForReview(MessageEvent):
    """The failure was reported to the error sink for a person (``report_id``)."""

    report_id: str | None
    reason: str


@attrs.frozen(kw_only=True)
class MessageDeadLettered(MessageEvent):
    """The message was moved to the parking queue (``reason`` says why)."""

    reason: str
