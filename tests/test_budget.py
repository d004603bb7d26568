"""RetryBudget: retries capped at a ratio of calls plus a floor, over a sliding window."""

from __future__ import annotations

import pytest

from failsafe import ConfigurationError, RetryBudget
from failsafe.testing import FakeClock


def test_floor_allows_retries_without_traffic() -> None:
    """With no calls, ``min_per_second * window`` retries are allowed, then no more."""
    budget = RetryBudget(ratio=0.2, min_per_second=1, window=5, clock=FakeClock())
    assert sum(budget.try_withdraw() for _ in range(20)) == 5


def test_ratio_of_calls_is_added() -> None:
    """Each call adds ``ratio`` retries to the budget."""
    budget = RetryBudget(ratio=0.2, min_per_second=0, window=10, clock=FakeClock())
    for _ in range(100):
        budget.record_call()
    assert budget.available == pytest.approx(20)
    assert sum(budget.try_withdraw() for _ in range(50)) == 20


def test_old_calls_and_retries_leave_the_window() -> None:
    """After the window passes, spent retries no longer count against the budget."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0, min_per_second=1, window=2, clock=clock)
    assert sum(budget.try_withdraw() for _ in range(5)) == 2
    clock.advance(2.5)
    assert budget.try_withdraw() is True


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"window": 0}, "window"),
    ],
)
def test_bad_configuration_names_the_option(kwargs: dict[str, float], option: str) -> None:
    """Bad budget options fail at construction."""
    with pytest.raises(ConfigurationError) as info:
        RetryBudget(**kwargs)  # type: ignore[arg-type]
    assert info.value.option == option
