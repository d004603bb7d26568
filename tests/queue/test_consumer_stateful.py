"""The consumer under Hypothesis: every published message ends in exactly one place.

Messages are published; time passes; each message's handler succeeds, fails transiently,
fails permanently, or kills the consumer (before or after committing its effect); the
consumer runs. The handler is idempotent the way `ProcessedMessages` makes it: the effect and
the message id commit together, and a copy whose id is known returns at once.

After every step, for every message:

- it is in at most one place of the broker (work queue, DLQ or parking queue);
- its effect applied at most once; a message no longer in the broker was handled (effect
  applied exactly once) — nothing is ever dropped;
- a parked message has its review report in the error sink, and its effect never applied;
- the handler ran at most ``Redelivery.max_attempts`` times for it (dead consumers count).
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from failsafe import Backoff
from failsafe.queue import (
    Consumer,
    Envelope,
    InMemoryBroker,
    Place,
    Redelivery,
    Unrecoverable,
)
from failsafe.testing import FakeClock

QUEUE = "orders.paid"
POLICY = Redelivery(immediate=1, delayed=2, delay=60.0, immediate_backoff=Backoff.none())
MODES = ("ok", "transient", "permanent", "crash_before", "crash_after")


class ConsumerKilled(BaseException):
    """The consumer's process dies here (not an Exception: nothing in failsafe catches it)."""


class Sink:
    """An error sink that keeps reports in a dict by dedupe key (as the service does)."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)

    def report(self, kind: str, action: Any, **fields: Any) -> str:
        self.reports[fields["dedupe_key"]] = {"kind": kind, "action": action, **fields}
        return f"r-{next(self.ids)}"


class ConsumerMachine(RuleBasedStateMachine):
    messages = Bundle("messages")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.broker = InMemoryBroker(clock=self.clock)
        self.broker.declare(QUEUE)  # the invariant lists its dead letters before any publish
        self.sink = Sink()
        self.modes: dict[str, str] = {}
        self.calls: dict[str, int] = {}
        self.processed: set[str] = set()  # ids committed with their effect
        self.effects: dict[str, int] = {}
        self.consumer = Consumer(
            self.broker, QUEUE, self.handle, redelivery=POLICY, errors=self.sink, clock=self.clock
        )

    def handle(self, message: Envelope) -> None:
        mid = message.id
        self.calls[mid] += 1
        if mid in self.processed:
            return  # a copy of a message already applied
        mode = self.modes[mid]
        if mode == "transient":
            raise ConnectionError("orders service down")
        if mode == "permanent":
            raise Unrecoverable("order not found")
        if mode == "crash_before":
            raise ConsumerKilled
        self.processed.add(mid)  # the effect and the id, one transaction
        self.effects[mid] += 1
        if mode == "crash_after":
            raise ConsumerKilled

    @rule(target=messages, mode=st.sampled_from(MODES))
    def publish(self, mode: str) -> str:
        message = Envelope(body=b'{"orderId": "o-1", "status": "paid"}')
        self.modes[message.id] = mode
        self.calls[message.id] = 0
        self.effects[message.id] = 0
        self.broker.publish(QUEUE, message)
        return message.id

    @rule(mid=messages, mode=st.sampled_from(MODES))
    def change(self, mid: str, mode: str) -> None:
        """The world changes for one message (the Order service came back, ...)."""
        self.modes[mid] = mode

    @rule(seconds=st.sampled_from([0.0, 1.0, 30.0, 60.0, 600.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(limit=st.integers(min_value=1, max_value=5))
    def consume(self, limit: int) -> None:
        try:
            self.consumer.process_available(limit)
        except ConsumerKilled:
            self.broker.crash()  # the dead consumer's reservations go back

    @invariant()
    def every_message_is_in_one_place(self) -> None:
        ready = [m.id for m in self.broker.messages(QUEUE)]
        letters = self.broker.dead_letters(QUEUE, limit=10_000)
        dead = [d.message.id for d in letters]
        parked = {d.message.id for d in letters if d.place is Place.PARKED}
        places = ready + dead
        assert len(places) == len(set(places)), "a message is in two places"
        for mid in self.modes:
            assert self.effects[mid] <= 1, f"{mid} applied {self.effects[mid]} times"
            if mid not in places:
                assert self.effects[mid] == 1, f"{mid} left the broker without being handled"
            if mid in parked:
                assert f"queue:{QUEUE}:{mid}" in self.sink.reports, f"{mid} parked unreported"
                assert self.effects[mid] == 0
            assert self.calls[mid] <= POLICY.max_attempts, (
                f"{mid} handled {self.calls[mid]} times, policy allows {POLICY.max_attempts}"
            )


ConsumerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConsumerMachine = ConsumerMachine.TestCase
