"""The broker contract on the in-memory broker (on a fake clock)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from failsafe.exceptions import ConfigurationError
from failsafe.queue import (
    Broker,
    BrokerError,
    Envelope,
    InMemoryBroker,
    NoSuchQueue,
    Place,
    SettleConflict,
)
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
        ({"id_prefixes": "3f2a9c1b"}, "id_prefixes"),
        ({"id_prefixes": [""]}, "id_prefixes"),
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


def test_no_such_queue_names_the_queue_and_the_broker() -> None:
    """NoSuchQueue is a BrokerError and a LookupError, with its queue and broker; it pickles."""
    error = NoSuchQueue("ordrs", "queue.db")
    assert str(error) == "no such queue 'ordrs' on queue.db"
    assert isinstance(error, BrokerError)
    assert isinstance(error, LookupError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.queue, copy.broker, str(copy)) == (
        NoSuchQueue,
        "ordrs",
        "queue.db",
        str(error),
    )


def test_an_id_matches_a_filter_by_id_or_by_prefix() -> None:
    """``names_id``: one of ``ids``, or beginning with one of ``id_prefixes``."""
    where = DeadLetterFilter(ids=["m-1"], id_prefixes=["3f2a9c1b", "77aa"])
    assert where.names_id("m-1")
    assert where.names_id("3f2a9c1b-0001")
    assert where.names_id("77aa")
    assert not where.names_id("m-10")
    assert not where.names_id("3f2a9c1")
    assert not DeadLetterFilter().names_id("m-1")
