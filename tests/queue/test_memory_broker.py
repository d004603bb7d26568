"""The broker contract on the in-memory broker (on a fake clock)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from failsafe.exceptions import ConfigurationError
from failsafe.queue import Broker, Envelope, InMemoryBroker, Place, SettleConflict
from failsafe.queue.broker import DeadLetterFilter, error_type_matches
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


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ids": "m-1"}, "ids"),
        ({"ids": ["m-1", ""]}, "ids"),
        ({"error_types": "KeyError"}, "error_types"),
        ({"place": "ready"}, "place"),
        ({"until": "yesterday"}, "until"),
    ],
)
def test_a_bad_filter_is_refused_by_name(options: dict[str, Any], named: str) -> None:
    """A bare string where names are wanted, an unknown place or a non-time is refused."""
    with pytest.raises(ConfigurationError, match=named):
        DeadLetterFilter(**options)


def test_error_types_match_by_full_or_last_name() -> None:
    """A dotted name matches the full type only; a plain one its last dotted part too."""
    kind = "app.errors.OrderNotFound"
    assert error_type_matches(kind, ["OrderNotFound"])
    assert error_type_matches(kind, [kind])
    assert not error_type_matches(kind, ["errors.OrderNotFound"])
    assert not error_type_matches(kind, ["Order"])
    assert error_type_matches("ValueError", ["ValueError"])
    assert not error_type_matches(None, ["ValueError"])
    assert DeadLetterFilter(place="parked", ids=["a", "a"]) == DeadLetterFilter(
        place=Place.PARKED, ids=("a",)
    )
