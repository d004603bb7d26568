"""Retry: attempts, classification, delays, hooks, deadline, budget, on both drivers."""

from __future__ import annotations

import random

import pytest

from failsafe import Backoff, ConfigurationError, Outcome, Retry, RetryBudget
from failsafe.events import AttemptFailed, RetriesExhausted, RetryBudgetExhausted, RetryScheduled
from failsafe.testing import FakeClock, RecordingListener, fail_first
from tests.conftest import Driver


class UserError(Exception):
    pass


def test_default_retry_is_the_seed_first_try_plus_three(driver: Driver) -> None:
    """`Retry()` makes four attempts on a connection error, then re-raises the last one."""
    clock = FakeClock()
    fn = fail_first(10, ConnectionError("down"))
    with pytest.raises(ConnectionError, match="down") as info:
        driver.call(Retry(clock=clock), fn)
    assert fn.calls == 4
    assert len(clock.sleeps) == 3
    assert all(0 <= d <= 1.0 for d in clock.sleeps)
    assert any("gave up after 4 attempt(s)" in note for note in info.value.__notes__)


def test_success_after_failures_returns_the_result(driver: Driver) -> None:
    """A call that fails twice then succeeds returns its value after exactly three calls."""
    clock = FakeClock()
    fn = fail_first(2, TimeoutError, returns=42)
    assert driver.call(Retry(clock=clock, backoff=Backoff.constant(0.5)), fn) == 42
    assert fn.calls == 3
    assert clock.sleeps == [0.5, 0.5]


def test_last_exception_is_the_same_object(driver: Driver) -> None:
    """The caller gets the very exception object the operation raised last, not a wrapper."""
    errors = [ConnectionError(f"#{i}") for i in range(3)]

    def fn() -> None:
        raise errors.pop(0)

    last = errors[-1]
    with pytest.raises(ConnectionError) as info:
        driver.call(Retry(attempts=3, backoff=Backoff.none()), fn)
    assert info.value is last


def test_unmatched_exception_is_not_retried(driver: Driver) -> None:
    """An exception outside ``on`` passes through at the first attempt."""
    fn = fail_first(5, UserError)
    with pytest.raises(UserError):
        driver.call(Retry(backoff=Backoff.none()), fn)
    assert fn.calls == 1


def test_zero_delay_never_calls_sleep(driver: Driver) -> None:
    """`Backoff.none()` retries without a single sleep call (sleep(0) costs ~55 us here)."""
    clock = FakeClock()
    fn = fail_first(3, ConnectionError, returns="ok")
    assert driver.call(Retry(backoff=Backoff.none(), clock=clock), fn) == "ok"
    assert clock.sleeps == []


def test_result_predicate_retries_results_and_returns_the_last(driver: Driver) -> None:
    """A result matched by ``on_result`` is retried; when attempts run out it is returned."""
    answers = iter([503, 503, 503])
    retry = Retry(attempts=3, backoff=Backoff.none(), on_result=lambda r: r == 503)
    assert driver.call(retry, lambda: next(answers)) == 503
    assert next(answers, None) is None

    answers2 = iter([503, 200])
    assert driver.call(retry, lambda: next(answers2)) == 200


def test_delay_hook_sets_the_delay(driver: Driver) -> None:
    """``delay_from`` (for Retry-After) overrides the backoff; ``None`` falls back to it."""
    clock = FakeClock()
    hints = iter([7.0, None])

    def hook(outcome: Outcome[object]) -> float | None:
        assert outcome.exception is not None
        return next(hints)

    retry = Retry(clock=clock, delay_from=hook, backoff=Backoff.constant(0.25))
    driver.call(retry, fail_first(2, ConnectionError, returns=1))
    assert clock.sleeps == [7.0, 0.25]


def test_delay_hook_in_the_past_retries_at_once(driver: Driver) -> None:
    """A negative hinted delay (a Retry-After date already past) retries without sleeping."""
    clock = FakeClock()
    retry = Retry(clock=clock, delay_from=lambda outcome: -3.0)
    assert driver.call(retry, fail_first(1, ConnectionError, returns=1)) == 1
    assert clock.sleeps == []


def test_deadline_stops_retrying(driver: Driver) -> None:
    """No retry starts whose delay would end past the overall deadline."""
    clock = FakeClock()
    events = RecordingListener()
    retry = Retry(
        attempts=10, backoff=Backoff.constant(1.0), deadline=2.5, clock=clock, listeners=[events]
    )
    fn = fail_first(10, ConnectionError)
    with pytest.raises(ConnectionError) as info:
        driver.call(retry, fn)
    assert fn.calls == 3  # t=0, t=1, t=2; the next would start at t=3 > 2.5
    assert clock.sleeps == [1.0, 1.0]
    assert events.of_type(RetriesExhausted)[0].reason == "deadline"
    assert any("deadline" in n for n in info.value.__notes__)


def test_events_describe_every_decision(driver: Driver) -> None:
    """Each failure emits AttemptFailed, then RetryScheduled or RetriesExhausted."""
    events = RecordingListener()
    retry = Retry(attempts=2, backoff=Backoff.none(), listeners=[events], name="warehouse")
    with pytest.raises(ConnectionError):
        driver.call(retry, fail_first(5, ConnectionError))
    assert events.kinds == ["AttemptFailed", "RetryScheduled", "AttemptFailed", "RetriesExhausted"]
    assert all(e.policy == "warehouse" for e in events.events)
    scheduled = events.of_type(RetryScheduled)[0]
    assert (scheduled.attempt, scheduled.delay) == (1, 0.0)
    assert isinstance(events.of_type(AttemptFailed)[0].outcome.exception, ConnectionError)


def test_success_emits_nothing(driver: Driver) -> None:
    """A first-try success produces no event at all."""
    events = RecordingListener()
    assert driver.call(Retry(listeners=[events]), lambda: "x") == "x"
    assert events.events == []


def test_budget_refuses_retries_when_spent(driver: Driver) -> None:
    """A spent retry budget makes the policy give up after the first attempt."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10, clock=clock)  # one retry
    events = RecordingListener()
    retry = Retry(backoff=Backoff.none(), budget=budget, listeners=[events])
    first = fail_first(10, ConnectionError)
    with pytest.raises(ConnectionError) as info:
        driver.call(retry, first)
    assert first.calls == 2  # one retry allowed by the floor, then the budget is spent
    assert len(events.of_type(RetryBudgetExhausted)) == 1
    assert any("budget" in n for n in info.value.__notes__)


def test_jitter_uses_the_injected_rng(driver: Driver) -> None:
    """Two retries with equally seeded RNGs sleep the same jittered delays."""
    runs = []
    for _ in range(2):
        clock = FakeClock()
        retry = Retry(clock=clock, rng=random.Random(7), backoff=Backoff.exponential(1, maximum=8))
        driver.call(retry, fail_first(3, ConnectionError, returns=0))
        runs.append(clock.sleeps)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3


def test_without_rng_the_shared_generator_jitters(driver: Driver) -> None:
    """``rng=None`` (the default) draws the jitter from one generator shared by every Retry."""
    retry = Retry(backoff=Backoff.exponential(1, maximum=8))
    assert retry.rng is None
    assert retry == Retry(backoff=Backoff.exponential(1, maximum=8))
    clock = FakeClock()
    driver.call(Retry(clock=clock, rng=None), fail_first(3, ConnectionError, returns=0))
    assert len(clock.sleeps) == 3
    assert all(0 <= d <= 1.0 for d in clock.sleeps)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 1.5}, "attempts"),
        ({"deadline": -1}, "deadline"),
        ({"backoff": 3}, "backoff"),
        ({"on": "ConnectionError"}, "on"),
        ({"rng": 7}, "rng"),
        ({"rng": random}, "rng"),
    ],
)
def test_bad_configuration_names_the_option(kwargs: dict[str, object], option: str) -> None:
    """Bad options fail at construction with a ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError) as info:
        Retry(**kwargs)  # type: ignore[arg-type]
    assert info.value.option == option
    assert option in str(info.value)


def test_backoff_rejects_maximum_below_initial() -> None:
    """A maximum delay below the initial one fails at construction."""
    with pytest.raises(ConfigurationError, match="maximum"):
        Backoff.exponential(2.0, maximum=1.0)


def test_keyboard_interrupt_is_never_retried(driver: Driver) -> None:
    """BaseExceptions (Ctrl-C, cancellation) pass straight through."""
    fn = fail_first(5, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        driver.call(Retry(on=BaseException, backoff=Backoff.none()), fn)
    assert fn.calls == 1


def test_decorator_keeps_name_and_retries() -> None:
    """``@Retry(...)`` keeps the function's metadata and retries each call."""
    fn = fail_first(1, ConnectionError, returns="done")

    @Retry(backoff=Backoff.none())
    def fetch(x: int) -> str:
        """Doc."""
        return f"{fn()}-{x}"

    assert fetch(3) == "done-3"
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Doc."


def test_async_decorator_retries_coroutines() -> None:
    """``@Retry`` on an ``async def`` awaits each attempt."""
    import asyncio
    import inspect

    fn = fail_first(2, ConnectionError, returns="ok")

    @Retry(backoff=Backoff.none())
    async def fetch() -> str:
        return await fn.async_()

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch()) == "ok"
    assert fn.calls == 3


def test_repr_describes_in_words() -> None:
    """The repr says attempts, what is retried and the backoff."""
    text = repr(Retry(attempts=3, backoff=Backoff.constant(2)))
    assert "up to 3 attempts" in text
    assert "ConnectionError" in text
    assert "2s between attempts" in text


def test_discarded_results_are_released(driver: Driver) -> None:
    """``on_discard`` gets every result dropped for a retry, never the one returned."""
    answers = iter(["503-a", "503-b", "200"])
    released: list[str] = []
    retry = Retry(
        backoff=Backoff.none(), on_result=lambda r: r.startswith("503"), on_discard=released.append
    )
    assert driver.call(retry, lambda: next(answers)) == "200"
    assert released == ["503-a", "503-b"]


def test_async_discard_hook_is_awaited() -> None:
    """Under call_async a coroutine ``on_discard`` is awaited before the next attempt."""
    import asyncio

    answers = iter([1, 2])
    released: list[int] = []

    async def release(value: int) -> None:
        released.append(value)

    async def op() -> int:
        return next(answers)

    retry = Retry(backoff=Backoff.none(), on_result=lambda r: r == 1, on_discard=release)
    assert asyncio.run(retry.call_async(op)) == 2
    assert released == [1]


def test_enclosing_timeout_deadline_stops_retries(driver: Driver) -> None:
    """A retry whose delay would end past an enclosing Timeout's deadline is not made."""
    from failsafe import Pipeline, Timeout

    clock = FakeClock()
    events = RecordingListener()
    retry = Retry(attempts=10, backoff=Backoff.constant(1.0), clock=clock, listeners=[events])
    fn = fail_first(10, ConnectionError)
    with pytest.raises(ConnectionError):
        driver.call(Pipeline(Timeout(2.5, clock=clock), retry), fn)
    assert fn.calls == 3  # at t=0, 1, 2; a fourth would start at t=3, past the 2.5 s deadline
    assert events.of_type(RetriesExhausted)[0].reason == "deadline"


def test_giving_up_again_on_the_same_exception_adds_no_second_note(driver: Driver) -> None:
    """An exception instance raised by every call carries the give-up note once, not per call."""
    shared = ConnectionError("down")
    retry = Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock())
    for _ in range(3):
        with pytest.raises(ConnectionError):
            driver.call(retry, fail_first(10, shared))
    assert shared.__notes__ == ["failsafe: gave up after 2 attempt(s), attempts exhausted"]


def test_no_attempt_starts_at_the_enclosing_deadline(driver: Driver) -> None:
    """A retry whose backoff would end exactly at an enclosing Timeout's deadline gives up."""
    from failsafe import Pipeline, Timeout

    clock = FakeClock()
    fn = fail_first(10, ConnectionError)
    retry = Retry(attempts=5, backoff=Backoff.constant(1.0), clock=clock)
    with pytest.raises(ConnectionError) as info:
        driver.call(Pipeline(Timeout(2, clock=clock), retry), fn)
    assert fn.calls == 2  # at t = 0 and 1; a third would start at 2, the deadline itself
    assert info.value.__notes__ == ["failsafe: gave up after 2 attempt(s), deadline reached"]
