"""From a person's review back to the queue: "retry" on a review record replays its message.

A message sent to review is in two places: its **error record** (what a person sees in the
Error-handling service) and the **parked message** (what can be replayed). Register
`replay_handler` as the retry handler of the queue's review kind, and a person's *retry* on
the record (in the review pages, the API or ``failsafe errors retry``) moves the parked
message back to its work queue, with fresh counts; the record is resolved by that attempt:

```python
from failsafe.errors import Handlers
from failsafe.queue import InMemoryBroker, replay_handler

broker = InMemoryBroker()
handlers = Handlers()
handlers.register("queue.order-status", replay_handler(broker))
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from failsafe.queue.broker import Broker

if TYPE_CHECKING:
    from failsafe.errors.record import ErrorRecord

__all__ = ["replay_handler"]


def replay_handler(broker: Broker) -> Callable[[ErrorRecord], str | None]:
    """A retry handler for the review records a consumer reports: replay the parked message.

    Args:
        broker: The broker holding the parking queue (a blocking `Broker`).

    Returns:
        A handler for [`Handlers.register`][failsafe.errors.Handlers.register]. It raises
        `ValueError` for a record that does not come from a consumer's review (no queue or
        message id in its payload), and succeeds, saying so, when the message is no longer
        parked (replayed or purged meanwhile: nothing is left to do).
    """

    def replay(record: ErrorRecord) -> str | None:
        payload: Any = record.payload
        message = payload.get("message") if isinstance(payload, dict) else None
        queue = payload.get("queue") if isinstance(payload, dict) else None
        message_id = message.get("id") if isinstance(message, dict) else None
        if not isinstance(queue, str) or not isinstance(message_id, str):
            raise ValueError(
                f"record {record.id} is not a queue consumer's review record: its payload "
                "needs 'queue' and 'message.id'"
            )
        if broker.replay(queue, [message_id]):
            return f"replayed message {message_id} to {queue!r}"
        return f"message {message_id} is no longer parked in {queue!r} (replayed or purged)"

    return replay
