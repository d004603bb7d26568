"""Properties of `failsafe.backoff.Backoff`, and of the options every policy validates."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import failsafe
from failsafe.backoff import Backoff

SETTINGS = settings(max_examples=100, deadline=None)
LIGHT = settings(max_examples=50, deadline=None)  # for the properties implied by the others

KINDS = ("constant", "linear", "exponential")
JITTERS = ("none", "full", "equal", "decorrelated")
HUGE_ATTEMPTS = (10_000, 10**9)

seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
multipliers = st.floats(min_value=1, max_value=100, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=10_000) | st.sampled_from(HUGE_ATTEMPTS)
rngs = st.integers(min_value=0, max_value=2**32 - 1).map(random.Random)


@st.composite
def backoffs(
    draw: st.DrawFn, kinds: tuple[str, ...] = KINDS, jitters: tuple[str, ...] = JITTERS
) -> Backoff:
    initial = draw(seconds)  # subnormal delays included
    maximum = initial + draw(seconds)
    return Backoff(
        kind=draw(st.sampled_from(kinds)),
        initial=initial,
        step=draw(seconds),
        multiplier=draw(multipliers),
        maximum=maximum,
        jitter=draw(st.sampled_from(jitters)),
    )


def _exact_exponential(initial: float, multiplier: float, maximum: float, n: int) -> float:
    """``min(initial * multiplier ** (n - 1), maximum)``, computed without overflowing."""
    try:
        grown = initial * multiplier ** (n - 1)
    except OverflowError:
        return maximum
    return min(grown, maximum)


# -- bounds -----------------------------------------------------------------------------------


@SETTINGS
@given(backoff=backoffs(), attempt=attempts, previous=seconds, rng=rngs)
def test_every_delay_is_within_zero_and_maximum(
    backoff: Backoff, attempt: int, previous: float, rng: random.Random
) -> None:
    """Every delay, of every kind and jitter, lies in [0, maximum] and is finite."""
    d = backoff.delay(attempt, previous, rng)
    assert math.isfinite(d)
    assert 0 <= d <= backoff.maximum


@LIGHT
@given(backoff=backoffs(), attempt=attempts)
def test_base_delay_is_within_zero_and_maximum(backoff: Backoff, attempt: int) -> None:
    """The delay before jitter lies in [0, maximum] and is finite."""
    d = backoff.base_delay(attempt)
    assert math.isfinite(d)
    assert 0 <= d <= backoff.maximum


@SETTINGS
@given(backoff=backoffs(jitters=("decorrelated",)), attempt=attempts, previous=seconds, rng=rngs)
def test_decorrelated_jitter_never_goes_below_initial(
    backoff: Backoff, attempt: int, previous: float, rng: random.Random
) -> None:
    """Decorrelated jitter stays in [initial, maximum] whatever the previous delay."""
    d = backoff.delay(attempt, previous, rng)
    assert backoff.initial <= d <= backoff.maximum


@SETTINGS
@given(backoff=backoffs(jitters=("equal",)), attempt=attempts, previous=seconds, rng=rngs)
def test_equal_jitter_keeps_at_least_half_the_base(
    backoff: Backoff, attempt: int, previous: float, rng: random.Random
) -> None:
    """Equal jitter stays in [base / 2, base]."""
    base = backoff.base_delay(attempt)
    d = backoff.delay(attempt, previous, rng)
    assert base / 2 <= d <= base


@LIGHT
@given(backoff=backoffs(jitters=("full",)), attempt=attempts, previous=seconds, rng=rngs)
def test_full_jitter_never_exceeds_the_base(
    backoff: Backoff, attempt: int, previous: float, rng: random.Random
) -> None:
    """Full jitter stays in [0, base]."""
    d = backoff.delay(attempt, previous, rng)
    assert 0 <= d <= backoff.base_delay(attempt)


@LIGHT
@given(backoff=backoffs(jitters=("none",)), attempt=attempts, previous=seconds, rng=rngs)
def test_no_jitter_gives_the_base_delay(
    backoff: Backoff, attempt: int, previous: float, rng: random.Random
) -> None:
    """Without jitter the delay is exactly the base delay and ignores ``previous``."""
    assert backoff.delay(attempt, previous, rng) == backoff.base_delay(attempt)


# -- shape ------------------------------------------------------------------------------------


@SETTINGS
@given(
    backoff=backoffs(jitters=("none",)),
    first=st.integers(min_value=-3, max_value=3_000),
    gap=st.integers(min_value=0, max_value=3_000),
)
def test_base_delays_are_monotone_in_the_attempt(backoff: Backoff, first: int, gap: int) -> None:
    """Without jitter a later attempt never waits less than an earlier one."""
    assert backoff.base_delay(first) <= backoff.base_delay(first + gap)


@LIGHT
@given(backoff=backoffs(jitters=("none",)))
def test_base_delays_are_monotone_over_a_run(backoff: Backoff) -> None:
    """Over attempts 1..60 the undithered delays form a non-decreasing sequence."""
    delays = [backoff.base_delay(n) for n in range(1, 61)]
    assert delays == sorted(delays)


@SETTINGS
@given(delay=seconds, attempt=attempts, previous=seconds, rng=rngs)
def test_constant_gives_the_constant(
    delay: float, attempt: int, previous: float, rng: random.Random
) -> None:
    """``Backoff.constant(d)`` waits exactly ``d`` before every retry."""
    backoff = Backoff.constant(delay)
    assert backoff.base_delay(attempt) == delay
    assert backoff.delay(attempt, previous, rng) == delay


@SETTINGS
@given(
    initial=st.floats(min_value=1e-6, max_value=100),
    multiplier=multipliers,
    extra=seconds,
    attempt=attempts,
)
@example(initial=0.1, multiplier=3.0, extra=0.8, attempt=3)
@example(initial=0.05, multiplier=2.0, extra=0.95, attempt=10**9)
def test_exponential_without_jitter_is_the_capped_power(
    initial: float, multiplier: float, extra: float, attempt: int
) -> None:
    """Exponential backoff without jitter is ``min(initial * multiplier**(n-1), maximum)``."""
    maximum = initial + extra
    backoff = Backoff.exponential(initial, multiplier=multiplier, maximum=maximum, jitter="none")
    expected = _exact_exponential(initial, multiplier, maximum, attempt)
    assert backoff.base_delay(attempt) == expected


@SETTINGS
@given(initial=seconds, step=seconds, extra=seconds, attempt=attempts)
def test_linear_without_jitter_is_the_capped_line(
    initial: float, step: float, extra: float, attempt: int
) -> None:
    """Linear backoff without jitter is ``min(initial + step * (n - 1), maximum)``."""
    maximum = initial + extra
    backoff = Backoff.linear(initial, step, maximum=maximum)
    assert backoff.base_delay(attempt) == min(initial + step * (attempt - 1), maximum)


# -- huge attempt numbers ---------------------------------------------------------------------


@SETTINGS
@given(backoff=backoffs(), attempt=st.sampled_from(HUGE_ATTEMPTS), previous=seconds, rng=rngs)
def test_huge_attempt_numbers_never_overflow(
    backoff: Backoff, attempt: int, previous: float, rng: random.Random
) -> None:
    """Attempts 10,000 and 10**9 give a finite delay in [0, maximum], never an exception."""
    d = backoff.delay(attempt, previous, rng)
    assert 0 <= d <= backoff.maximum


@SETTINGS
@given(
    # the whole range of positive floats, subnormal ones included
    initial=st.floats(min_value=0, max_value=1e6, exclude_min=True),
    multiplier=st.floats(min_value=1, max_value=100, exclude_min=True),
    extra=seconds,
    attempt=st.sampled_from(HUGE_ATTEMPTS),
)
@example(initial=5e-324, multiplier=2.0, extra=1.0, attempt=10_000)
def test_exponential_reaches_the_cap_at_huge_attempts(
    initial: float, multiplier: float, extra: float, attempt: int
) -> None:
    """A growing exponential backoff is at its cap by attempt 10,000, without overflowing."""
    maximum = initial + extra
    backoff = Backoff.exponential(initial, multiplier=multiplier, maximum=maximum, jitter="none")
    assert backoff.base_delay(attempt) == _exact_exponential(initial, multiplier, maximum, attempt)


def test_tiny_initial_delay_does_not_overflow_at_attempt_10000() -> None:
    """A subnormal initial delay (``maximum / initial`` overflows to inf) still caps cleanly."""
    backoff = Backoff.exponential(1e-310, multiplier=2.0, maximum=1.0, jitter="none")
    assert backoff.base_delay(10_000) == 1.0


@pytest.mark.parametrize("jitter", JITTERS)
@pytest.mark.parametrize("kind", KINDS)
def test_default_sized_backoffs_cap_at_huge_attempts(kind: str, jitter: str) -> None:
    """With ordinary options, every kind and jitter stays finite and capped at 10**9."""
    backoff = Backoff(
        kind=kind,
        initial=0.05,
        step=0.5,
        multiplier=2.0,
        maximum=3.0,
        jitter=jitter,  # type: ignore[arg-type]
    )
    rng = random.Random(7)
    for attempt in HUGE_ATTEMPTS:
        assert 0 <= backoff.delay(attempt, 3.0, rng) <= 3.0
        if kind != "constant":
            assert backoff.base_delay(attempt) == 3.0


# -- bad options ------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

BAD_OPTIONS: list[tuple[str, Callable[[], Any]]] = [
    ("kind", lambda: Backoff(kind="quadratic")),
    ("jitter", lambda: Backoff(jitter="some")),  # type: ignore[arg-type]
    ("initial", lambda: Backoff(initial=-0.1)),
    ("initial", lambda: Backoff(initial=NAN)),
    ("initial", lambda: Backoff(initial=None)),  # type: ignore[arg-type]
    ("step", lambda: Backoff(kind="linear", step=-1)),
    ("maximum", lambda: Backoff(initial=2.0, maximum=1.0)),
    ("maximum", lambda: Backoff.exponential(0.5, maximum=0.1)),
    ("maximum", lambda: Backoff(maximum=INF)),
    ("multiplier", lambda: Backoff(multiplier=0.5)),
    ("multiplier", lambda: Backoff(multiplier=INF)),
    ("multiplier", lambda: Backoff(multiplier="2")),  # type: ignore[arg-type]
    ("multiplier", lambda: Backoff(multiplier=None)),  # type: ignore[arg-type]
    ("initial", lambda: Backoff.constant(-1)),
    ("attempts", lambda: failsafe.Retry(attempts=0)),
    ("attempts", lambda: failsafe.Retry(attempts=-1)),
    ("attempts", lambda: failsafe.Retry(attempts=True)),
    ("attempts", lambda: failsafe.Retry(attempts=2.5)),  # type: ignore[arg-type]
    ("deadline", lambda: failsafe.Retry(deadline=0)),
    ("deadline", lambda: failsafe.Retry(deadline=-1)),
    ("deadline", lambda: failsafe.Retry(deadline=NAN)),
    ("backoff", lambda: failsafe.Retry(backoff=0.5)),  # type: ignore[arg-type]
    ("on", lambda: failsafe.Retry(on=42)),  # type: ignore[arg-type]
    ("on", lambda: failsafe.Retry(on=(ValueError, int))),  # type: ignore[arg-type]
    ("seconds", lambda: failsafe.Timeout(-1)),
    ("seconds", lambda: failsafe.Timeout(0)),
    ("seconds", lambda: failsafe.Timeout(NAN)),
    ("seconds", lambda: failsafe.Timeout(INF)),
    ("seconds", lambda: failsafe.Timeout(True)),
    ("max_concurrent", lambda: failsafe.Bulkhead(max_concurrent=0)),
    ("max_queued", lambda: failsafe.Bulkhead(max_queued=-1)),
    ("max_wait", lambda: failsafe.Bulkhead(max_wait=-1)),
    ("max_wait", lambda: failsafe.Bulkhead(max_wait=NAN)),
    ("max_wait", lambda: failsafe.Bulkhead(max_wait=INF)),
    ("reset_timeout", lambda: failsafe.CircuitBreaker(reset_timeout=0)),
    ("reset_timeout", lambda: failsafe.CircuitBreaker(reset_timeout=-5)),
    ("half_open_max_calls", lambda: failsafe.CircuitBreaker(half_open_max_calls=0)),
    ("success_threshold", lambda: failsafe.CircuitBreaker(success_threshold=0)),
    ("trip", lambda: failsafe.CircuitBreaker(trip=3)),  # type: ignore[arg-type]
    ("storage", lambda: failsafe.CircuitBreaker(storage={})),  # type: ignore[arg-type]
    ("threshold", lambda: failsafe.ConsecutiveFailures(threshold=0)),
    ("threshold", lambda: failsafe.FailureRate(threshold=0)),
    ("threshold", lambda: failsafe.FailureRate(threshold=1.5)),
    ("window", lambda: failsafe.FailureRate(window=0)),
    ("minimum_calls", lambda: failsafe.FailureRate(minimum_calls=0)),
    ("buckets", lambda: failsafe.FailureRate(buckets=0)),
    ("ratio", lambda: failsafe.RetryBudget(ratio=1.5)),
    ("ratio", lambda: failsafe.RetryBudget(ratio=-0.1)),
    ("min_per_second", lambda: failsafe.RetryBudget(min_per_second=-1)),
    ("window", lambda: failsafe.RetryBudget(window=0)),
    ("targets", lambda: failsafe.Failover([])),
    ("targets", lambda: failsafe.Failover("http://a")),
    ("policy", lambda: failsafe.Failover(["a"], policy=print)),  # type: ignore[arg-type]
    ("value", lambda: failsafe.Fallback()),
    ("value", lambda: failsafe.Fallback(1, handler=lambda o: 2)),
    ("policies[1]", lambda: failsafe.Pipeline(failsafe.Retry(), print)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("option", "build"), BAD_OPTIONS, ids=[f"{i}-{o}" for i, (o, _) in enumerate(BAD_OPTIONS)]
)
def test_bad_option_raises_configuration_error_naming_it(
    option: str, build: Callable[[], Any]
) -> None:
    """A bad option fails at construction with ConfigurationError naming that option."""
    with pytest.raises(failsafe.ConfigurationError) as info:
        build()
    assert info.value.option == option
    assert str(info.value).startswith(f"{option}: ")
    assert isinstance(info.value, ValueError)
