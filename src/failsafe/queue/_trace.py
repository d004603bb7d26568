"""How a trace crosses a queue: the publisher's span travels in the message's headers.

Internal. Nothing here is called unless a tracing system is installed
(``failsafe._tracing.installed()`` is not ``None``): the adapters and consumers read that
global once per publish or per message and, when it is ``None``, take their old path.

- Publishing a new message (an adapter's ``publish`` / ``publish_many``, or a
  ``BlockingView``'s, which runs the adapter on a loop thread that does not see the caller's
  span) starts a PRODUCER span ``<queue> publish`` and writes its W3C ``traceparent`` and
  ``tracestate`` into the headers of every message that has no ``traceparent`` yet. A
  message that already carries one (the user's own, or a copy of a traced message) keeps
  it; when every message of a publish does, there is no span at all.
- Consumers handle each delivery in a CONSUMER span ``<queue> process`` that continues the
  trace named by the message's ``traceparent`` (`consumer_span`).

Deferring, parking and replaying store the message with the headers it came with: they are
not publishing, and a redelivered copy still names its original publisher.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import attrs

from failsafe import _tracing
from failsafe.queue.broker import Delivery
from failsafe.queue.envelope import Envelope

__all__: list[str] = []

CARRIER = "traceparent"  # the header whose presence means "already traced"
UNKNOWN_SYSTEM = "unknown"  # messaging.system of a broker that does not name its system
_MAX_WRAPPED = 4  # views over views a broker's system is looked for through


def system_of(broker: object) -> str:
    """The ``messaging.system`` of ``broker``, or of the broker a view wraps.

    An adapter names its system in a ``messaging_system`` string attribute (``rabbitmq``,
    ``failsafe.sqlite``, ``failsafe.memory``); `as_async` / `as_blocking` views hold the
    adapter as ``broker``, and are looked through.
    """
    for _ in range(_MAX_WRAPPED):
        name = getattr(broker, "messaging_system", None)
        if isinstance(name, str) and name:
            return name
        broker = getattr(broker, "broker", None)
        if broker is None:
            break
    return UNKNOWN_SYSTEM


@contextmanager
def publishing(
    tracing: _tracing.Tracing, system: str, queue: str, messages: Sequence[Envelope]
) -> Iterator[Sequence[Envelope]]:
    """A producer span over a publish; yields the messages to store, traced.

    Messages without a ``traceparent`` get the span's context in their headers (copies:
    envelopes are frozen); those with one are yielded as they are. When all of them have
    one, no span is started. An exception leaving the block marks the span failed.
    """
    if all(CARRIER in message.headers for message in messages):
        yield messages
        return
    attributes: dict[str, _tracing.Value] = {
        "messaging.system": system,
        "messaging.destination.name": queue,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    }
    if len(messages) == 1:
        attributes["messaging.message.id"] = messages[0].id
    else:
        attributes["messaging.batch.message_count"] = len(messages)
    with tracing.span(f"{queue} publish", kind="producer", attributes=attributes):
        carrier: dict[str, str] = {}
        tracing.inject(carrier)
        if CARRIER not in carrier:  # no valid span to name (a sampler dropped it, say)
            yield messages
            return
        yield [
            message
            if CARRIER in message.headers
            else attrs.evolve(message, headers={**message.headers, **carrier})
            for message in messages
        ]


def consumer_span(
    tracing: _tracing.Tracing, system: str, policy: str, delivery: Delivery
) -> AbstractContextManager[_tracing.Span]:
    """The CONSUMER span one delivery is handled in, continuing the publisher's trace.

    A message without a ``traceparent`` starts a span under the current one (a new trace
    in a consumer's own threads and tasks).
    """
    message = delivery.message
    headers = message.headers
    attributes: dict[str, _tracing.Value] = {
        "messaging.system": system,
        "messaging.destination.name": delivery.queue,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": message.id,
        "messaging.message.body.size": len(message.body),
        "failsafe.policy": policy,
        "failsafe.queue.deliveries": delivery.deliveries,
        "failsafe.queue.delayed_attempts": message.delayed_attempts,
    }
    return tracing.span(
        f"{delivery.queue} process",
        kind="consumer",
        attributes=attributes,
        carrier=headers if CARRIER in headers else None,
    )


def finish(span: _tracing.Span, outcome: str, error: BaseException | None, attempts: int) -> None:
    """Record how a delivery ended on its span (the error by its type only)."""
    span.set("failsafe.queue.outcome", outcome)
    span.set("failsafe.queue.attempts", attempts)
    if error is not None:
        span.failed(error)
