"""Fallback: a value or a handler, on chosen exceptions or results."""

from __future__ import annotations

import asyncio

import pytest

from failsafe import CircuitOpenError, ConfigurationError, Fallback, Outcome
from failsafe.events import FallbackUsed
from failsafe.testing import RecordingListener
from tests.conftest import Driver


def fail() -> None:
    raise ConnectionError("down")


def test_value_replaces_a_failure(driver: Driver) -> None:
    """A matching exception is replaced by the fallback value and an event is emitted."""
    events = RecordingListener()
    assert driver.call(Fallback("cached", listeners=[events]), fail) == "cached"
    assert isinstance(events.of_type(FallbackUsed)[0].outcome.exception, ConnectionError)


def test_handler_receives_the_outcome(driver: Driver) -> None:
    """A handler gets the failed outcome and its return value is the answer."""

    def handler(outcome: Outcome[object]) -> str:
        return f"fallback for {type(outcome.exception).__name__}"

    assert driver.call(Fallback(handler=handler), fail) == "fallback for ConnectionError"


def test_other_exceptions_pass_through(driver: Driver) -> None:
    """An exception outside ``on`` reaches the caller unchanged."""
    with pytest.raises(ConnectionError):
        driver.call(Fallback(0, on=KeyError), fail)


def test_results_can_be_replaced(driver: Driver) -> None:
    """``on_result`` replaces matching results and leaves the others."""
    fb = Fallback(-1, on_result=lambda r: r is None)
    assert driver.call(fb, lambda: None) == -1
    assert driver.call(fb, lambda: 5) == 5


def test_failsafe_rejections_are_replaced_by_default() -> None:
    """By default the fallback also answers for failsafe's own errors (an open circuit)."""

    def rejected() -> None:
        raise CircuitOpenError("b", 1.0)

    assert Fallback("degraded").call(rejected) == "degraded"


def test_async_handler_is_awaited() -> None:
    """Under call_async a coroutine handler is awaited."""

    async def handler(outcome: Outcome[object]) -> str:
        return "async fallback"

    async def afail() -> None:
        raise ConnectionError

    assert asyncio.run(Fallback(handler=handler).call_async(afail)) == "async fallback"


def test_failing_handler_chains_the_original(driver: Driver) -> None:
    """A handler's own exception reaches the caller with the original as its context."""

    def handler(outcome: Outcome[object]) -> None:
        raise RuntimeError("no cache either")

    with pytest.raises(RuntimeError) as info:
        driver.call(Fallback(handler=handler), fail)
    assert isinstance(info.value.__context__, ConnectionError)


def test_value_or_handler_exactly_one() -> None:
    """Giving neither or both of value and handler is a configuration error."""
    with pytest.raises(ConfigurationError, match="value"):
        Fallback()
    with pytest.raises(ConfigurationError, match="value"):
        Fallback(1, handler=lambda o: 2)
