"""Misuse of the API is loud, at once, and never counted as a failure of the dependency."""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import pickle
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from failsafe import (
    AdaptiveConcurrency,
    Backoff,
    Bulkhead,
    Chaos,
    CircuitBreaker,
    CircuitState,
    ConsecutiveFailures,
    Failover,
    Fallback,
    Hedging,
    KeyedCircuitBreaker,
    Pipeline,
    Policy,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
    UsageError,
)
from failsafe.testing import FakeClock, RecordingListener


def _policies(clock: FakeClock, events: RecordingListener) -> dict[str, Policy]:
    return {
        "retry": Retry(on=Exception, backoff=Backoff.none(), clock=clock, listeners=[events]),
        "breaker": CircuitBreaker(
            trip=ConsecutiveFailures(threshold=1), clock=clock, listeners=[events]
        ),
        "timeout": Timeout(1, clock=clock, listeners=[events]),
        "bulkhead": Bulkhead(max_concurrent=1, listeners=[events]),
        "fallback": Fallback("replaced", listeners=[events]),
        "failover": Failover(["a", "b"], on=Exception, listeners=[events]),
        "rate_limiter": RateLimiter(rate=1, clock=clock, listeners=[events]),
        "hedging": Hedging(delay=0.5, clock=clock, listeners=[events]),
        "adaptive": AdaptiveConcurrency(clock=clock, listeners=[events]),
        # switched on, injecting nothing: a function that turns out to return a coroutine
        # cannot be told from a good one before it runs, and an injected fault skips running it
        "chaos": Chaos.fault(0.0, ConnectionError, enabled=True, clock=clock, listeners=[events]),
        "pipeline": Pipeline(
            Fallback("replaced", listeners=[events]),
            Retry(on=Exception, backoff=Backoff.none(), clock=clock, listeners=[events]),
            CircuitBreaker(trip=ConsecutiveFailures(threshold=1), clock=clock, listeners=[events]),
        ),
    }


POLICY_NAMES = [
    "retry",
    "breaker",
    "timeout",
    "bulkhead",
    "fallback",
    "failover",
    "rate_limiter",
    "hedging",
    "adaptive",
    "chaos",
    "pipeline",
]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_call_refuses_a_coroutine_function_and_closes_the_coroutine(name: str) -> None:
    """call(afn) raises UsageError naming call_async, closes the coroutine and counts nothing."""
    clock, events = FakeClock(), RecordingListener()
    policy = _policies(clock, events)[name]
    made: list[Coroutine[Any, Any, str]] = []

    async def afn() -> str:
        return "never run"

    def calls_afn() -> Coroutine[Any, Any, str]:
        coro = afn()
        made.append(coro)
        return coro

    for _ in range(3):
        with pytest.raises(UsageError, match="call_async") as info:
            policy.call(calls_afn)
        assert isinstance(info.value, TypeError)
    assert len(made) == 3  # each call ran once: no retry, no failover to "b"
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in made)
    assert events.events == []  # no attempt failed, no fallback, no circuit opened


def test_call_of_an_async_def_directly_is_refused_by_every_breaker_state() -> None:
    """Three misuses do not open a breaker that opens after one failure."""
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=1), clock=FakeClock())

    async def afn() -> None:
        raise ConnectionError

    for _ in range(3):
        with pytest.raises(UsageError):
            breaker.call(afn)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 0


def test_awaiting_call_of_a_coroutine_function_raises_before_any_await() -> None:
    """``await policy.call(afn)`` fails at ``call``, with the hint, and runs nothing."""
    ran = []

    async def afn() -> None:
        ran.append(1)

    async def main() -> None:
        with pytest.raises(UsageError, match="call_async"):
            await Retry().call(afn)  # type: ignore[misc]

    asyncio.run(main())
    assert ran == []


def test_call_refuses_other_awaitables_too() -> None:
    """A plain function that returns a Future is refused under call as well."""

    async def main() -> None:
        future = asyncio.get_running_loop().create_future()
        with pytest.raises(UsageError, match="Future"):
            Retry().call(lambda: future)

    asyncio.run(main())


def test_a_misuse_is_not_counted_in_a_retry_budget() -> None:
    """The budget's allowance does not grow with calls that were misuses."""
    budget = RetryBudget(ratio=1.0, min_per_second=0, clock=FakeClock())
    retry = Retry(budget=budget, clock=budget.clock)

    async def afn() -> None:
        return None

    for _ in range(5):
        with pytest.raises(UsageError):
            retry.call(afn)
    assert budget.available == 0
    retry.call(lambda: None)
    assert budget.available == 1  # a real call still counts


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_call_async_refuses_a_plain_function(name: str) -> None:
    """call_async(fn) with a plain function raises UsageError naming call, counted nowhere."""
    clock, events = FakeClock(), RecordingListener()
    policy = _policies(clock, events)[name]
    calls = []

    def plain() -> str:
        calls.append(1)
        return "value"

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(UsageError, match=r"policy\.call"):
                await policy.call_async(plain)  # type: ignore[arg-type]

    asyncio.run(main())
    assert len(calls) == 3  # it ran (it cannot be stopped), once per call: no retry
    assert events.events == []


def test_call_async_misuse_does_not_open_the_circuit() -> None:
    """Three misuses through call_async leave a threshold-1 breaker closed."""
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=1), clock=FakeClock())

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(UsageError):
                await breaker.call_async(lambda: None)  # type: ignore[arg-type,return-value]
        assert await breaker.call_async(_answer) == 42

    asyncio.run(main())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 0


async def _answer() -> int:
    return 42


def test_call_async_accepts_a_plain_function_that_returns_a_coroutine() -> None:
    """A lambda that returns a coroutine is a valid coroutine factory for call_async."""
    assert asyncio.run(Retry().call_async(lambda: _answer())) == 42


class AsyncCallable:
    """An object whose ``__call__`` is ``async def``; fails its first two calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, x: int) -> int:
        self.calls += 1
        if self.calls <= 2:
            raise ConnectionError("down")
        return x * 2


def test_decorating_an_object_with_an_async_call_makes_an_async_wrapper() -> None:
    """@policy on an object whose __call__ is async def retries inside the coroutine."""
    target = AsyncCallable()
    decorated = Retry(backoff=Backoff.none())(target)
    assert inspect.iscoroutinefunction(decorated)
    assert asyncio.run(decorated(21)) == 42
    assert target.calls == 3


def test_decorating_a_partial_of_a_coroutine_function_makes_an_async_wrapper() -> None:
    """@policy on functools.partial(async_fn, ...) is treated as a coroutine function."""
    calls = []

    async def add(a: int, b: int) -> int:
        calls.append((a, b))
        if len(calls) < 2:
            raise TimeoutError
        return a + b

    decorated = Retry(backoff=Backoff.none())(functools.partial(add, 1))
    assert inspect.iscoroutinefunction(decorated)
    assert asyncio.run(decorated(2)) == 3
    assert calls == [(1, 2), (1, 2)]


def test_decorating_a_plain_function_that_returns_a_coroutine_is_refused_when_called() -> None:
    """A sync-looking function that returns a coroutine fails loudly under the decorator."""

    @Retry()
    def sneaky() -> Coroutine[Any, Any, int]:
        return _answer()

    with pytest.raises(UsageError, match="call_async"):
        sneaky()


def test_fallback_with_an_async_handler_is_refused_under_call_before_the_call_runs() -> None:
    """Fallback(handler=async def) under call raises UsageError naming handler; fn never runs."""

    async def handler(outcome: object) -> str:
        return "cached"

    ran = []
    fallback = Fallback(handler=handler)
    with pytest.raises(UsageError, match="handler"):
        fallback.call(lambda: ran.append(1))
    assert ran == []
    # the same policy serves call_async, where the async handler is awaited
    assert asyncio.run(fallback.call_async(_failing)) == "cached"


async def _failing() -> str:
    raise ConnectionError


def test_fallback_handler_returning_a_coroutine_is_refused_and_closed() -> None:
    """A plain handler that returns a coroutine under call raises UsageError; it is closed."""
    made: list[Coroutine[Any, Any, int]] = []

    def handler(outcome: object) -> Coroutine[Any, Any, int]:
        made.append(_answer())
        return made[-1]

    def down() -> int:
        raise ConnectionError

    with pytest.raises(UsageError, match="handler"):
        Fallback(handler=handler).call(down)
    assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED


BARE: list[tuple[str, Callable[[Callable[..., Any]], object]]] = [
    ("Retry", Retry),
    ("CircuitBreaker", CircuitBreaker),
    ("Timeout", Timeout),
    ("Bulkhead", Bulkhead),
    ("Fallback", Fallback),
    ("Failover", Failover),
    ("KeyedCircuitBreaker", KeyedCircuitBreaker),
    ("RateLimiter", RateLimiter),
    ("Hedging", Hedging),
    ("AdaptiveConcurrency", AdaptiveConcurrency),
    ("Chaos", Chaos),
    ("Pipeline", Pipeline),
]


@pytest.mark.parametrize(("name", "cls"), BARE, ids=[n for n, _ in BARE])
def test_a_bare_decorator_says_call_it(
    name: str, cls: Callable[[Callable[..., Any]], object]
) -> None:
    """@Retry (no parentheses) raises UsageError saying to write @Retry(...)."""

    def fetch() -> None:
        return None

    with pytest.raises(UsageError, match=rf"call it first: @{name}\(\.\.\.\)"):
        cls(fetch)


def test_a_bare_decorator_on_an_async_function_says_call_it_too() -> None:
    """@Timeout on an async def says to call it, not that seconds must be a number."""

    async def fetch() -> None:
        return None

    with pytest.raises(UsageError, match=r"@Timeout\(\.\.\.\)"):
        Timeout(fetch)  # type: ignore[arg-type]


def test_policies_still_build_copy_and_pickle() -> None:
    """The bare-decorator check leaves ordinary construction, copy and pickle alone."""
    retry = Retry(attempts=2)
    assert copy.copy(retry) == retry
    assert pickle.loads(pickle.dumps(Timeout(2.0))).seconds == 2.0
    assert Fallback(len).value is len  # a builtin as a fallback value is still a value
