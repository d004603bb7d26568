"""The broker contract on the in-memory broker (on a fake clock)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from failsafe.queue import Broker, Envelope, InMemoryBroker, SettleConflict
from failsafe.testing import FakeClock
from tests.queue.broker_contract import BrokerContract


class TestInMemoryBroker(BrokerContract):
    """The shared contract, in memory."""

    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        broker = InMemoryBroker(clock=FakeClock())
        yield broker
        broker.close()

    def elapse(self, broker: Broker, seconds: float) -> None:
        assert isinstance(broker, InMemoryBroker)
        clock = broker.clock
        assert isinstance(clock, FakeClock)
        clock.advance(seconds)

    def lose_consumer(self, broker: Broker) -> Broker:
        assert isinstance(broker, InMemoryBroker)
        broker.crash()
        return broker


def test_lease_hands_a_message_out_again() -> None:
    """With a lease, a message held past it is delivered again and the old delivery is stale."""
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock, lease=10.0)
    broker.publish("q", Envelope(body=b"x"))
    [first] = broker.receive("q")
    clock.advance(10.0)
    [second] = broker.receive("q")
    assert second.deliveries == 2
    with pytest.raises(SettleConflict):
        broker.ack(first)
    broker.ack(second)
    assert broker.messages("q") == []
