"""Pipelines of random policies, in random orders, never alter what the caller gets.

The user's own exception type (none of the policies handles it) must reach the caller as
the very object the function raised, and a successful result must come back unchanged,
through both ``policy.call`` and ``policy.call_async``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import failsafe
from failsafe import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    ConsecutiveFailures,
    Failover,
    Fallback,
    Pipeline,
    Policy,
    Retry,
    Timeout,
)
from failsafe.testing import FakeClock

SETTINGS = settings(max_examples=100, deadline=None)


class UserError(Exception):
    """The caller's own exception type; no policy in these pipelines handles it."""


class OtherError(Exception):
    """A different exception type, which some policies do handle."""


PolicyFactory = Callable[[FakeClock], Policy]


@st.composite
def retry_factory(draw: st.DrawFn, retries_user_errors: bool) -> PolicyFactory:
    attempts = draw(st.integers(1, 4))
    on: Any
    if retries_user_errors:
        on = draw(st.sampled_from([UserError, (UserError, OtherError), failsafe.exception()]))
    else:
        on = draw(st.sampled_from([ConnectionError, OtherError, failsafe.predicates.TRANSIENT]))
    return lambda clock: Retry(attempts=attempts, backoff=Backoff.none(), on=on, clock=clock)


@st.composite
def breaker_factory(draw: st.DrawFn, may_trip: bool) -> PolicyFactory:
    threshold = draw(st.integers(1, 2)) if may_trip else 1_000_000
    return lambda clock: CircuitBreaker(
        trip=ConsecutiveFailures(threshold=threshold), reset_timeout=30, clock=clock
    )


@st.composite
def timeout_factory(draw: st.DrawFn) -> PolicyFactory:
    seconds = draw(st.sampled_from([5.0, 60.0, 3600.0]))
    return lambda clock: Timeout(seconds, clock=clock)


@st.composite
def bulkhead_factory(draw: st.DrawFn) -> PolicyFactory:
    max_concurrent = draw(st.integers(1, 3))
    max_queued = draw(st.integers(0, 2))
    return lambda clock: Bulkhead(max_concurrent=max_concurrent, max_queued=max_queued)


@st.composite
def fallback_factory(draw: st.DrawFn) -> PolicyFactory:
    on: Any = draw(st.sampled_from([OtherError, KeyError, (OtherError, LookupError)]))
    use_handler = draw(st.booleans())
    if use_handler:
        return lambda clock: Fallback(handler=lambda outcome: "fallback", on=on)
    return lambda clock: Fallback("fallback", on=on)


@st.composite
def failover_factory(draw: st.DrawFn) -> PolicyFactory:
    targets = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=3))
    on = draw(st.sampled_from([None, OtherError, (ConnectionError, OtherError)]))
    inner_retry = draw(st.booleans())

    def build(clock: FakeClock) -> Policy:
        inner = Retry(attempts=2, backoff=Backoff.none(), on=OtherError, clock=clock)
        options: dict[str, Any] = {"policy": inner} if inner_retry else {}
        if on is not None:
            options["on"] = on
        return Failover(targets, **options)

    return build


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[list[str], list[PolicyFactory]]:
    """A random subset of the policies, in a random order (outermost first)."""
    kinds = draw(
        st.lists(
            st.sampled_from(["retry", "breaker", "timeout", "bulkhead", "fallback", "failover"]),
            unique=True,
        )
    )
    kinds = draw(st.permutations(kinds))
    # a Retry that retries UserError calls the function again; a breaker that may trip
    # would then reject the retry and the caller would get CircuitOpenError instead
    retries_user_errors = "retry" in kinds and draw(st.booleans())
    may_trip = not retries_user_errors and draw(st.booleans())
    strategies: dict[str, st.SearchStrategy[PolicyFactory]] = {
        "retry": retry_factory(retries_user_errors),
        "breaker": breaker_factory(may_trip),
        "timeout": timeout_factory(),
        "bulkhead": bulkhead_factory(),
        "fallback": fallback_factory(),
        "failover": failover_factory(),
    }
    factories = [draw(strategies[kind]) for kind in kinds]
    nested = draw(st.booleans()) and len(factories) > 1
    if nested:  # pipelines nest: wrap the inner half in its own pipeline
        cut = draw(st.integers(1, len(factories) - 1))
        outer, inner = factories[:cut], factories[cut:]
        factories = [*outer, lambda clock: Pipeline(*(f(clock) for f in inner))]
        kinds = [*kinds[:cut], f"pipeline{kinds[cut:]}"]
    return kinds, factories


def build(factories: list[PolicyFactory]) -> Pipeline:
    """Fresh policies (with a fresh clock) for each call, so no state leaks between calls."""
    clock = FakeClock()
    return Pipeline(*(f(clock) for f in factories))


args_strategy = st.lists(st.integers() | st.text(max_size=3) | st.none(), max_size=3)
kwargs_strategy = st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(), max_size=2)


@SETTINGS
@given(spec=pipelines(), args=args_strategy, kwargs=kwargs_strategy)
def test_user_exception_reaches_the_caller_as_the_same_object(
    spec: tuple[list[str], list[PolicyFactory]], args: list[Any], kwargs: dict[str, int]
) -> None:
    """The exception the function raised is the one the caller catches, sync and async."""
    _, factories = spec
    error = UserError("mine")
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fn(*a: Any, **k: Any) -> Any:
        seen.append((a, k))
        raise error

    async def afn(*a: Any, **k: Any) -> Any:
        seen.append((a, k))
        raise error

    with pytest.raises(UserError) as sync_info:
        build(factories).call(fn, *args, **kwargs)
    assert sync_info.value is error

    async def run_async() -> None:
        await build(factories).call_async(afn, *args, **kwargs)

    with pytest.raises(UserError) as async_info:
        asyncio.run(run_async())
    assert async_info.value is error
    assert seen
    assert all(s == (tuple(args), kwargs) for s in seen)


@SETTINGS
@given(spec=pipelines(), args=args_strategy, kwargs=kwargs_strategy)
def test_successful_result_is_returned_unchanged(
    spec: tuple[list[str], list[PolicyFactory]], args: list[Any], kwargs: dict[str, int]
) -> None:
    """A function that returns is called once with its arguments and its value comes back as is."""
    _, factories = spec
    value = object()
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fn(*a: Any, **k: Any) -> Any:
        seen.append((a, k))
        return value

    async def afn(*a: Any, **k: Any) -> Any:
        seen.append((a, k))
        return value

    assert build(factories).call(fn, *args, **kwargs) is value
    assert asyncio.run(build(factories).call_async(afn, *args, **kwargs)) is value
    assert seen == [(tuple(args), kwargs)] * 2


@SETTINGS
@given(spec=pipelines(), calls=st.integers(2, 4))
def test_shared_pipeline_keeps_returning_results_unchanged(
    spec: tuple[list[str], list[PolicyFactory]], calls: int
) -> None:
    """One pipeline reused for several successful sync and async calls returns each value as is."""
    _, factories = spec
    pipeline = build(factories)
    for i in range(calls):
        value = [i]

        def fn(v: list[int] = value) -> list[int]:
            return v

        assert pipeline.call(fn) is value

        async def afn(v: list[int] = value) -> list[int]:
            return v

        assert asyncio.run(pipeline.call_async(afn)) is value


@SETTINGS
@given(spec=pipelines())
def test_user_exception_keeps_its_traceback_and_gains_only_notes(
    spec: tuple[list[str], list[PolicyFactory]],
) -> None:
    """The user's exception keeps its args, its cause and its raising frame."""
    _, factories = spec
    cause = ValueError("root")

    def fn() -> None:
        raise UserError("mine", 7) from cause

    with pytest.raises(UserError) as info:
        build(factories).call(fn)
    caught = info.value
    assert caught.args == ("mine", 7)
    assert caught.__cause__ is cause
    frames = []
    tb = caught.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "fn"
    assert all(n.startswith("failsafe:") for n in getattr(caught, "__notes__", []))
