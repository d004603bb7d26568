"""Pipeline: outermost-first composition, the decorator, and the repr in words."""

from __future__ import annotations

import asyncio

import pytest

import failsafe
from failsafe import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    ConsecutiveFailures,
    Fallback,
    Pipeline,
    Retry,
    Timeout,
    TimeoutExceeded,
)
from failsafe.testing import FakeClock, RecordingListener, fail_first
from tests.conftest import Driver


def test_retry_outside_breaker_sees_rejections(driver: Driver) -> None:
    """Retry outside the breaker: once the circuit opens, later attempts are rejected, not run."""
    clock = FakeClock()
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=2), clock=clock)
    retry = Retry(attempts=4, backoff=Backoff.none(), on=(ConnectionError, CircuitOpenError))
    fn = fail_first(10, ConnectionError)
    with pytest.raises(CircuitOpenError):
        driver.call(Pipeline(retry, breaker), fn)
    assert fn.calls == 2
    assert breaker.state is CircuitState.OPEN


def test_breaker_outside_retry_counts_one_failure_per_call(driver: Driver) -> None:
    """Breaker outside the retry: a call whose retries all failed counts once."""
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=2), clock=FakeClock())
    fn = fail_first(4, ConnectionError)
    with pytest.raises(ConnectionError):
        driver.call(Pipeline(breaker, Retry(backoff=Backoff.none())), fn)
    assert fn.calls == 4
    assert breaker.failure_count == 1


def test_fallback_sees_only_the_final_outcome(driver: Driver) -> None:
    """The outermost fallback answers after the inner retry gave up."""
    events = RecordingListener()
    fn = fail_first(10, ConnectionError)
    pipeline = Pipeline(
        Fallback("cached", listeners=[events]), Retry(backoff=Backoff.none(), listeners=[events])
    )
    assert driver.call(pipeline, fn) == "cached"
    assert fn.calls == 4
    assert events.kinds[-2:] == ["RetriesExhausted", "FallbackUsed"]


def test_timeout_inside_retry_is_per_attempt() -> None:
    """Timeout inside the retry bounds each attempt; the retry retries the timeouts."""
    clock = FakeClock()
    durations = iter([5, 5, 0.1])

    async def op() -> str:
        await clock.sleep_async(next(durations))
        return "ok"

    pipeline = Pipeline(Retry(backoff=Backoff.none(), clock=clock), Timeout(1, clock=clock))
    assert asyncio.run(pipeline.call_async(op)) == "ok"
    assert clock.monotonic() == pytest.approx(2.1)


def test_timeout_outside_retry_bounds_the_whole() -> None:
    """Timeout outside the retry bounds all attempts and their delays together."""
    clock = FakeClock()

    async def op() -> None:
        await clock.sleep_async(0.4)
        raise ConnectionError

    pipeline = Pipeline(Timeout(1, clock=clock), Retry(backoff=Backoff.none(), clock=clock))
    with pytest.raises(TimeoutExceeded):
        asyncio.run(pipeline.call_async(op))
    assert clock.monotonic() == pytest.approx(1)


def test_pipelines_nest(driver: Driver) -> None:
    """A pipeline is a policy: it can sit inside another pipeline."""
    inner = Pipeline(Retry(attempts=2, backoff=Backoff.none()))
    outer = Pipeline(Fallback("fb"), inner)
    fn = fail_first(5, ConnectionError)
    assert driver.call(outer, fn) == "fb"
    assert fn.calls == 2


def test_empty_pipeline_just_calls(driver: Driver) -> None:
    """A pipeline with no policy calls the function."""
    assert driver.call(Pipeline(), lambda: 3) == 3


def test_decorator_on_sync_and_async_functions() -> None:
    """The pipeline decorates plain and coroutine functions, keeping their metadata."""
    pipeline = Pipeline(Retry(backoff=Backoff.none()))
    fn = fail_first(1, ConnectionError, returns=2)

    @pipeline
    def double(x: int) -> int:
        return x * fn()

    @pipeline
    async def triple(x: int) -> int:
        return x * 3

    assert double(4) == 8
    assert asyncio.run(triple(2)) == 6
    assert triple.__name__ == "triple"


def test_repr_describes_the_composition_outermost_first() -> None:
    """The repr reads the composition in words, outermost first."""
    text = repr(Pipeline(Retry(attempts=3), CircuitBreaker(name="wh"), Timeout(2)))
    assert text.index("up to 3 attempts") < text.index("circuit breaker 'wh'") < text.index("2s")
    assert text.endswith("around the call>")


def test_only_policies_are_accepted() -> None:
    """A non-policy argument is a configuration error naming its position."""
    with pytest.raises(ConfigurationError, match=r"policies\[1\]"):
        Pipeline(Retry(), print)  # type: ignore[arg-type]


def test_call_async_is_a_coroutine() -> None:
    """``call_async`` returns an awaitable coroutine for every policy."""

    async def answer() -> int:
        return 42

    coro = failsafe.Retry().call_async(answer)
    assert asyncio.iscoroutine(coro)
    assert asyncio.run(coro) == 42


def test_call_async_is_a_coroutine_when_every_policy_binds_to_nothing() -> None:
    """A pipeline of only switched-off chaos still gives ``call_async`` a coroutine of its own."""

    class Ready:
        """An awaitable that is not a coroutine (as a future or a Task is)."""

        def __await__(self):  # type: ignore[no-untyped-def]
            return (yield from asyncio.sleep(0, result=7).__await__())

    pipeline = Pipeline(failsafe.Chaos.fault(0.5, ConnectionError), failsafe.Chaos.result(1, 0))
    answer = pipeline.call_async(Ready)
    assert asyncio.iscoroutine(answer)
    assert asyncio.run(answer) == 7
