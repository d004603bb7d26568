"""The policies' success-path shortcuts keep their behaviour.

The drivers call a predicate's bare tests (their answer's truth is all that counts), a breaker
reads pybreaker's memory storage's fields directly (any other storage through its
properties), and a keyed breaker reads the failover target inline.
"""

from __future__ import annotations

from typing import Any

import pybreaker
import pytest

from failsafe import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    ConsecutiveFailures,
    Failover,
    KeyedCircuitBreaker,
    Retry,
)
from failsafe.exceptions import AllTargetsFailed
from failsafe.predicates import exception, result
from failsafe.testing import FakeClock
from tests.conftest import Driver


def test_truthy_answers_of_user_tests_count_as_matches(driver: Driver) -> None:
    """A test answering a non-empty list matches, an empty one does not (not only bools)."""
    answers = iter([["again"], ["again"], []])
    retry = Retry(
        attempts=5,
        backoff=Backoff.none(),
        on=exception(ValueError, where=lambda e: "retry" in str(e)),
        on_result=lambda value: next(answers),  # type: ignore[arg-type,return-value]
        clock=FakeClock(),
    )
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        return len(calls)

    assert driver.call(retry, fn) == 3
    failover = Failover(["a", "b"], on_result=lambda v: [v] if v == "bad" else "")  # type: ignore[arg-type,return-value]
    values = iter(["bad", "good"])
    assert driver.call(failover, lambda: next(values)) == "good"
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1),
        on_result=lambda v: {"failed": v},  # type: ignore[arg-type,return-value]
        clock=FakeClock(),
    )
    assert driver.call(breaker, lambda: "answer") == "answer"
    with pytest.raises(CircuitOpenError):
        driver.call(breaker, lambda: "never called")


def test_a_predicate_without_an_exception_side_lets_exceptions_through(driver: Driver) -> None:
    failover = Failover(["a", "b"], on=result(lambda v: v is None))
    with pytest.raises(KeyError):
        driver.call(failover, _raise_key_error)
    with pytest.raises(AllTargetsFailed):
        driver.call(failover, lambda: None)


class _ElsewhereStorage(pybreaker.CircuitMemoryStorage):
    """A memory storage subclass whose state and count live outside pybreaker's fields."""

    def __init__(self) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self.kept: dict[str, Any] = {"state": pybreaker.STATE_CLOSED, "counter": 0}

    @property
    def state(self) -> str:
        return str(self.kept["state"])

    @state.setter
    def state(self, state: str) -> None:
        self.kept["state"] = state

    @property
    def counter(self) -> int:
        return int(self.kept["counter"])

    def increment_counter(self) -> None:
        self.kept["counter"] += 1

    def reset_counter(self) -> None:
        self.kept["counter"] = 0


def test_a_storage_subclass_is_read_through_its_properties(driver: Driver) -> None:
    """Only pybreaker's own memory storage is read field by field: a subclass is obeyed."""
    storage = _ElsewhereStorage()
    breaker = CircuitBreaker(
        storage=storage, trip=ConsecutiveFailures(threshold=2), clock=FakeClock()
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            driver.call(breaker, _refuse)
    assert storage.kept["state"] == pybreaker.STATE_OPEN
    assert storage._state == pybreaker.STATE_CLOSED  # pybreaker's field never moved
    with pytest.raises(CircuitOpenError):
        driver.call(breaker, lambda: "never called")
    storage.kept.update(state=pybreaker.STATE_CLOSED, counter=1)
    assert driver.call(breaker, lambda: "ok") == "ok"
    assert storage.kept["counter"] == 0  # the success reset the count it read there


def test_a_keyed_breaker_outside_a_failover_still_says_so(driver: Driver) -> None:
    with pytest.raises(ConfigurationError, match="key"):
        driver.call(KeyedCircuitBreaker(), lambda: "ok")


def test_a_key_function_answering_none_keys_one_breaker(driver: Driver) -> None:
    asked: list[int] = []

    def key() -> None:
        asked.append(1)

    keyed = KeyedCircuitBreaker(key=key)
    assert driver.call(keyed, lambda: "ok") == "ok"
    assert driver.call(keyed, lambda: "ok") == "ok"
    assert list(keyed.breakers) == [None]
    assert len(asked) == 2  # once a call


def _raise_key_error() -> None:
    raise KeyError("not a target failure")


def _refuse() -> None:
    raise ConnectionError("refused")
