"""What is measured: failsafe and its peers, configured to do the same work.

Every retry retries on ``ConnectionError`` with 4 attempts in all. On the failure path the
operation raises ``ConnectionError`` twice and then returns, and every library waits zero
seconds between attempts. Each case is a pair of *wrappers* (plain and async): a wrapper takes
the operation and returns what the benchmark calls (``None`` means the library cannot do it).

Peers' logging is turned off so that no library pays for log records the others do not make:
stamina's on-retry hooks are emptied and backoff gets ``logger=None`` (failsafe has no
listeners here either).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import backoff
import circuitbreaker  # type: ignore[import-untyped]
import pybreaker
import pyresilience
import stamina
import stamina.instrumentation
import tenacity

import failsafe
from failsafe import Backoff, CircuitBreaker, Pipeline, Retry, Timeout

__all__ = ["GROUPS", "Case", "Group", "Wrap"]

Op = Callable[..., Any]
Wrap = Callable[[Op], Op]

ATTEMPTS = 4

stamina.instrumentation.set_on_retry_hooks([])

# -- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    plain: Wrap | None
    aio: Wrap | None


@dataclass(frozen=True)
class Group:
    key: str
    title: str
    failing: bool  # the operation fails twice with ConnectionError, then returns
    cases: tuple[Case, ...]  # the first one is failsafe's: the ratios' denominator


def both(wrap: Wrap) -> tuple[Wrap, Wrap]:
    return wrap, wrap


def identity(op: Op) -> Op:
    return op


def asyncio_timeout_alone(op: Op) -> Op:
    async def run(x: int) -> Any:
        async with asyncio.timeout(1.0):
            return await op(x)

    return run


def hand_written_loop(op: Op) -> Op:
    def run(x: int) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return op(x)
            except ConnectionError:
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    return run


def hand_written_loop_async(op: Op) -> Op:
    async def run(x: int) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await op(x)
            except ConnectionError:
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    return run


# -- tenacity -------------------------------------------------------------------------------


def _tenacity_options(zero_wait: bool) -> dict[str, Any]:
    wait = tenacity.wait_none() if zero_wait else tenacity.wait_random_exponential(0.05, max=1)
    return {
        "stop": tenacity.stop_after_attempt(ATTEMPTS),
        "retry": tenacity.retry_if_exception_type(ConnectionError),
        "wait": wait,
        "reraise": True,
    }


def tenacity_decorator(zero_wait: bool) -> Wrap:
    def wrap(op: Op) -> Op:
        wrapped: Op = tenacity.retry(**_tenacity_options(zero_wait))(op)
        return wrapped

    return wrap


def tenacity_retrying(zero_wait: bool) -> Wrap:
    def wrap(op: Op) -> Op:
        return functools.partial(tenacity.Retrying(**_tenacity_options(zero_wait)), op)

    return wrap


def tenacity_async_retrying(zero_wait: bool) -> Wrap:
    def wrap(op: Op) -> Op:
        return functools.partial(tenacity.AsyncRetrying(**_tenacity_options(zero_wait)), op)

    return wrap


# -- stamina, backoff -----------------------------------------------------------------------


def stamina_retry(zero_wait: bool) -> Wrap:
    waits: dict[str, float] = (
        {"wait_initial": 0.0, "wait_max": 0.0, "wait_jitter": 0.0} if zero_wait else {}
    )

    def wrap(op: Op) -> Op:
        return stamina.retry(on=ConnectionError, attempts=ATTEMPTS, timeout=None, **waits)(op)

    return wrap


def backoff_retry(zero_wait: bool) -> Wrap:
    def wrap(op: Op) -> Op:
        if zero_wait:
            deco = backoff.on_exception(
                backoff.constant,
                ConnectionError,
                max_tries=ATTEMPTS,
                jitter=None,
                logger=None,
                interval=0,
            )
        else:
            deco = backoff.on_exception(
                backoff.expo, ConnectionError, max_tries=ATTEMPTS, logger=None
            )
        return deco(op)

    return wrap


# -- pyresilience ---------------------------------------------------------------------------


def pyresilience_policy(zero_wait: bool, breaker: bool = False, timeout: bool = False) -> Wrap:
    def wrap(op: Op) -> Op:
        if zero_wait:
            retry = pyresilience.RetryConfig(
                max_attempts=ATTEMPTS, delay=0.0, jitter=False, retry_on=(ConnectionError,)
            )
        else:
            retry = pyresilience.RetryConfig(
                max_attempts=ATTEMPTS, delay=0.05, max_delay=1.0, retry_on=(ConnectionError,)
            )
        deco = pyresilience.resilient(
            retry=retry,
            circuit_breaker=pyresilience.CircuitBreakerConfig() if breaker else None,
            timeout=pyresilience.TimeoutConfig(seconds=1.0) if timeout else None,
        )
        return deco(op)

    return wrap


# -- circuit breakers under tenacity --------------------------------------------------------


def tenacity_pybreaker(op: Op) -> Op:
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    return tenacity_decorator(False)(breaker(op))


_names = itertools.count()


def tenacity_circuitbreaker(op: Op) -> Op:
    breaker = circuitbreaker.CircuitBreaker(
        failure_threshold=5, recovery_timeout=30, name=f"bench-{next(_names)}"
    )
    return tenacity_decorator(False)(breaker(op))


# -- failsafe -------------------------------------------------------------------------------


def failsafe_policy(make: Callable[[], failsafe.Policy]) -> Wrap:
    def wrap(op: Op) -> Op:
        return make()(op)

    return wrap


def _retry() -> failsafe.Policy:
    return Retry()


def _retry_breaker() -> failsafe.Policy:
    return Pipeline(Retry(), CircuitBreaker())


def _retry_breaker_timeout() -> failsafe.Policy:
    return Pipeline(Retry(), CircuitBreaker(), Timeout(1.0))


def _timeout() -> failsafe.Policy:
    return Timeout(1.0)


def _retry_zero_wait() -> failsafe.Policy:
    return Retry(backoff=Backoff.none(), on=ConnectionError)


# -- the groups -----------------------------------------------------------------------------

GROUPS: tuple[Group, ...] = (
    Group(
        "retry",
        "Success path: retry alone",
        False,
        (
            Case("failsafe", "failsafe Retry()", *both(failsafe_policy(_retry))),
            Case("bare", "bare call (no policy)", *both(identity)),
            Case("tenacity", "tenacity @retry", *both(tenacity_decorator(False))),
            Case(
                "tenacity-obj",
                "tenacity Retrying()(fn)",
                tenacity_retrying(False),
                tenacity_async_retrying(False),
            ),
            Case("stamina", "stamina @retry", *both(stamina_retry(False))),
            Case("backoff", "backoff @on_exception(expo)", *both(backoff_retry(False))),
            Case(
                "pyresilience", "pyresilience @resilient(retry)", *both(pyresilience_policy(False))
            ),
        ),
    ),
    Group(
        "breaker",
        "Success path: retry + circuit breaker",
        False,
        (
            Case(
                "failsafe",
                "failsafe Pipeline(Retry(), CircuitBreaker())",
                *both(failsafe_policy(_retry_breaker)),
            ),
            Case(
                "pyresilience",
                "pyresilience retry + circuit_breaker",
                *both(pyresilience_policy(False, breaker=True)),
            ),
            Case("pybreaker", "tenacity + pybreaker", tenacity_pybreaker, None),
            Case("circuitbreaker", "tenacity + circuitbreaker", *both(tenacity_circuitbreaker)),
        ),
    ),
    Group(
        "timeout",
        "Success path: retry + circuit breaker + timeout",
        False,
        (
            Case(
                "failsafe",
                "failsafe Pipeline(Retry(), CircuitBreaker(), Timeout(1.0))",
                *both(failsafe_policy(_retry_breaker_timeout)),
            ),
            Case(
                "failsafe-timeout", "failsafe Timeout(1.0) alone", *both(failsafe_policy(_timeout))
            ),
            Case("asyncio", "asyncio.timeout(1) alone", None, asyncio_timeout_alone),
            Case(
                "pyresilience",
                "pyresilience retry + circuit_breaker + timeout",
                *both(pyresilience_policy(False, breaker=True, timeout=True)),
            ),
        ),
    ),
    Group(
        "failure",
        "Failure path: 2 ConnectionErrors then success, zero delay",
        True,
        (
            Case(
                "failsafe",
                "failsafe Retry(backoff=Backoff.none())",
                *both(failsafe_policy(_retry_zero_wait)),
            ),
            Case(
                "loop", "hand-written try/except loop", hand_written_loop, hand_written_loop_async
            ),
            Case("tenacity", "tenacity @retry(wait=wait_none())", *both(tenacity_decorator(True))),
            Case(
                "tenacity-obj",
                "tenacity Retrying(wait=wait_none())(fn)",
                tenacity_retrying(True),
                tenacity_async_retrying(True),
            ),
            Case("stamina", "stamina @retry(wait_* = 0)", *both(stamina_retry(True))),
            Case(
                "backoff", "backoff @on_exception(constant, interval=0)", *both(backoff_retry(True))
            ),
            Case(
                "pyresilience",
                "pyresilience @resilient(retry, delay=0)",
                *both(pyresilience_policy(True)),
            ),
        ),
    ),
)


# -- the operations -------------------------------------------------------------------------


class Counter:
    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0


def succeed(x: int) -> int:
    return x


async def succeed_async(x: int) -> int:
    return x


def flaky() -> tuple[Callable[[int], int], Counter]:
    """An operation that raises ConnectionError on calls 1 and 2 of every 3."""
    counter = Counter()

    def op(x: int) -> int:
        counter.calls += 1
        if counter.calls % 3:
            raise ConnectionError("flaky")
        return x

    return op, counter


def flaky_async() -> tuple[Callable[[int], Awaitable[int]], Counter]:
    counter = Counter()

    async def op(x: int) -> int:
        counter.calls += 1
        if counter.calls % 3:
            raise ConnectionError("flaky")
        return x

    return op, counter
