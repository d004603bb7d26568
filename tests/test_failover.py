"""Failover: ordered targets, an inner policy per target, and an error naming every target."""

from __future__ import annotations

import pytest

import failsafe
from failsafe import (
    AllTargetsFailed,
    Backoff,
    CircuitOpenError,
    ConfigurationError,
    Failover,
    Retry,
)
from failsafe.events import FailedOver
from failsafe.testing import RecordingListener
from tests.conftest import Driver


class Targets:
    """A fake of several servers: each target fails a given number of times, then answers."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = dict(failures)
        self.calls: list[str] = []

    def __call__(self, path: str) -> str:
        target = failsafe.current_context().target
        assert isinstance(target, str)
        self.calls.append(target)
        if self.failures.get(target, 0) > 0:
            self.failures[target] -= 1
            raise ConnectionError(f"{target} refused")
        return f"{target}{path}"


def test_the_seed_four_attempts_then_the_second_instance(driver: Driver) -> None:
    """First try plus three retries on Warehouse 1, then Warehouse 2 answers."""
    events = RecordingListener()
    servers = Targets({"w1": 99})
    failover = Failover(["w1", "w2"], policy=Retry(backoff=Backoff.none()), listeners=[events])
    assert driver.call(failover, servers, "/v1/order/products") == "w2/v1/order/products"
    assert servers.calls == ["w1"] * 4 + ["w2"]
    moved = events.of_type(FailedOver)
    assert [(e.from_target, e.to_target) for e in moved] == [("w1", "w2")]


def test_all_failed_lists_every_target(driver: Driver) -> None:
    """When every target fails, AllTargetsFailed names each target and chains the last error."""
    servers = Targets({"a": 9, "b": 9})
    with pytest.raises(AllTargetsFailed) as info:
        driver.call(Failover(["a", "b"]), servers, "/")
    error = info.value
    assert [f.target for f in error.failures] == ["a", "b"]
    assert all(isinstance(f.outcome.exception, ConnectionError) for f in error.failures)
    assert error.__cause__ is error.failures[-1].outcome.exception
    assert "a: raised ConnectionError('a refused')" in str(error)


def test_result_failures_move_on_and_are_reported(driver: Driver) -> None:
    """A result matched by ``on_result`` moves to the next target; the error carries the results."""
    answers = {"a": 503, "b": 503}

    def call() -> int:
        return answers[str(failsafe.current_context().target)]

    with pytest.raises(AllTargetsFailed) as info:
        driver.call(Failover(["a", "b"], on_result=lambda r: r == 503), call)
    assert [f.outcome.result for f in info.value.failures] == [503, 503]
    assert info.value.__cause__ is None


def test_unhandled_exception_stops_at_once(driver: Driver) -> None:
    """An exception that is not a failover failure reaches the caller from the first target."""
    calls = []

    def call() -> None:
        calls.append(failsafe.current_context().target)
        raise LookupError("product not found")

    with pytest.raises(LookupError):
        driver.call(Failover(["a", "b"]), call)
    assert calls == ["a"]


def test_open_circuit_moves_to_the_next_target(driver: Driver) -> None:
    """Policy rejections (an open circuit) count as failures by default."""

    def call() -> str:
        target = failsafe.current_context().target
        if target == "a":
            raise CircuitOpenError("a", 3.0)
        return "b-answered"

    assert driver.call(Failover(["a", "b"]), call) == "b-answered"


def test_target_is_reset_after_the_call() -> None:
    """Outside the failover the context has no target again."""
    Failover(["x"]).call(lambda: None)
    assert failsafe.current_context().target is None


@pytest.mark.parametrize(("targets", "problem"), [([], "at least one"), ("http://a", "sequence")])
def test_bad_targets(targets: object, problem: str) -> None:
    """An empty or non-sequence target list fails at construction."""
    with pytest.raises(ConfigurationError, match=problem) as info:
        Failover(targets)  # type: ignore[arg-type]
    assert info.value.option == "targets"


def test_policy_must_be_a_policy() -> None:
    """The per-target policy is checked at construction."""
    with pytest.raises(ConfigurationError, match="policy"):
        Failover(["a"], policy="retry")  # type: ignore[arg-type]


def test_discarded_results_are_released_but_not_the_last(driver: Driver) -> None:
    """``on_discard`` releases each failed result before the next target, not the last one."""
    released: list[object] = []

    def call() -> tuple[object, int]:
        return (failsafe.current_context().target, 503)

    with pytest.raises(AllTargetsFailed) as info:
        driver.call(
            Failover(["a", "b", "c"], on_result=lambda r: r[1] == 503, on_discard=released.append),
            call,
        )
    assert released == [("a", 503), ("b", 503)]
    assert info.value.failures[-1].outcome.result == ("c", 503)
