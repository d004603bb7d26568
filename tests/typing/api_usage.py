"""Type-checked, never run: how the public API reads to a type checker (mypy --strict)."""

from __future__ import annotations

from typing import assert_type

import failsafe
import failsafe.testing
from failsafe import Backoff, CircuitBreaker, Pipeline, Retry, Timeout

pipeline = Pipeline(Retry(attempts=3, backoff=Backoff.constant(0.1)), CircuitBreaker(), Timeout(1))


def fetch(sku: str, *, quantity: int = 1) -> dict[str, int]:
    return {sku: quantity}


async def fetch_async(sku: str) -> list[str]:
    return [sku]


assert_type(pipeline.call(fetch, "a", quantity=2), dict[str, int])


async def use_async() -> None:
    assert_type(await pipeline.call_async(fetch_async, "a"), list[str])


@pipeline
def decorated(sku: str) -> int:
    return len(sku)


@pipeline
async def decorated_async(sku: str) -> int:
    return len(sku)


assert_type(decorated("x"), int)


async def use_decorated_async() -> None:
    assert_type(await decorated_async("x"), int)


assert_type(failsafe.current_context().remaining(), float | None)


def listeners_type_check() -> None:
    events = failsafe.testing.RecordingListener()
    Retry(listeners=[events])
    CircuitBreaker(listeners=[events])
    failsafe.Bulkhead(listeners=[events])
    Timeout(2, listeners=[events])
    failsafe.Fallback(0, listeners=[events])
    failsafe.Failover(["a"], listeners=[events])


def short_spellings_and_test_switch() -> None:
    breaker = CircuitBreaker(threshold=5, reset_timeout=60)
    assert_type(breaker.storage_available, bool)
    with failsafe.testing.fake_time() as clock:
        assert_type(clock, failsafe.testing.FakeClock)
    error: TypeError = failsafe.UsageError("call it: @Retry()")
    assert isinstance(error, failsafe.FailsafeError)
