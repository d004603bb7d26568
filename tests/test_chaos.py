"""Chaos: faults, latency and results injected on a fraction of calls, behind a switch."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import failsafe
from failsafe import (
    Backoff,
    Chaos,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    ConsecutiveFailures,
    Fallback,
    Pipeline,
    Retry,
    Timeout,
    TimeoutExceeded,
    UsageError,
)
from failsafe._policy import _invoke
from failsafe.events import ChaosInjected
from failsafe.testing import (
    FakeClock,
    RecordingListener,
    fail_every,
    fail_first,
    with_latency,
    with_latency_async,
)
from tests.conftest import Driver


def _draws_below(seed: int, rate: float, n: int) -> int:
    """How many of the first ``n`` draws of ``random.Random(seed)`` fall below ``rate``."""
    rng = random.Random(seed)
    return sum(rng.random() < rate for _ in range(n))


def _count(driver: Driver, chaos: Chaos, n: int) -> tuple[int, int]:
    """Call through ``chaos`` ``n`` times; return (calls that ran, ConnectionErrors raised)."""
    ran = raised = 0

    def fn() -> str:
        nonlocal ran
        ran += 1
        return "ok"

    for _ in range(n):
        try:
            assert driver.call(chaos, fn) == "ok"
        except ConnectionError:
            raised += 1
    return ran, raised


# -- what is injected ---------------------------------------------------------------------
def test_a_fault_replaces_the_call(driver: Driver) -> None:
    """Switched on at rate 1, a fault is raised instead of the call, which never runs."""
    events = RecordingListener()
    chaos = Chaos.fault(1, ConnectionError("injected"), enabled=True, listeners=[events])
    ran: list[int] = []
    with pytest.raises(ConnectionError, match="injected"):
        driver.call(chaos, lambda: ran.append(1))
    assert ran == []
    assert events.events == [ChaosInjected(policy="chaos", kind="fault", detail="ConnectionError")]


def test_fault_forms_class_instance_and_factory() -> None:
    """A class raises a new instance each time, an instance itself, a factory what it returns."""
    by_class = Chaos.fault(1, KeyError, enabled=True)
    first = _raised(by_class)
    assert isinstance(first, KeyError)
    assert _raised(by_class) is not first

    instance = TimeoutError("slow")
    assert _raised(Chaos.fault(1, instance, enabled=True)) is instance

    made = iter([ConnectionRefusedError("a"), ConnectionResetError("b")])
    factory = Chaos.fault(1, lambda: next(made), enabled=True)
    assert [str(_raised(factory)), str(_raised(factory))] == ["a", "b"]


def test_a_factory_that_returns_no_exception_is_a_usage_error() -> None:
    """A fault factory that returns something other than an exception is refused loudly."""
    chaos = Chaos.fault(1, lambda: "not an exception", enabled=True)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="not an exception"):
        chaos.call(lambda: "never")


def _raised(chaos: Chaos) -> BaseException:
    try:
        chaos.call(lambda: "never")
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was injected")


def test_latency_waits_on_the_clock_then_calls(driver: Driver) -> None:
    """Injected latency sleeps (sync) or awaits (async) on the clock, then runs the call."""
    clock, events = FakeClock(), RecordingListener()
    chaos = Chaos.latency(1, 2.5, enabled=True, clock=clock, listeners=[events])
    assert driver.call(chaos, lambda: "answer") == "answer"
    assert driver.call(chaos, lambda: "again") == "again"
    assert clock.sleeps == [2.5, 2.5]
    assert clock.monotonic() == 5
    assert [(e.kind, e.detail) for e in events.of_type(ChaosInjected)] == [("latency", "2.5s")] * 2


def test_async_latency_is_cancelled_by_an_enclosing_timeout() -> None:
    """Under call_async the injected wait is an await, so a Timeout around it fires."""
    clock = FakeClock()
    pipeline = Pipeline(Timeout(1, clock=clock), Chaos.latency(1, 30, enabled=True, clock=clock))

    async def fetch() -> str:
        return "late"

    with pytest.raises(TimeoutExceeded):
        asyncio.run(pipeline.call_async(fetch))
    assert clock.monotonic() == 1


def test_a_result_replaces_the_call(driver: Driver) -> None:
    """An injected result is returned instead of calling; a callable is asked each time."""
    events = RecordingListener()
    ran: list[int] = []
    fixed = Chaos.result(1, {"status": 503}, enabled=True, listeners=[events])
    assert driver.call(fixed, lambda: ran.append(1)) == {"status": 503}
    counter = iter(range(10))
    made = Chaos.result(1, lambda: next(counter), enabled=True)
    assert [driver.call(made, lambda: ran.append(1)) for _ in range(3)] == [0, 1, 2]
    assert ran == []
    assert [(e.kind, e.detail) for e in events.of_type(ChaosInjected)] == [("result", "dict")]


# -- the rate -----------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "rate"), [(1, 0.1), (17, 0.5), (2026, 0.03)])
def test_seeded_rate_injects_exactly_the_draws_below_it(
    driver: Driver, seed: int, rate: float
) -> None:
    """With a seeded RNG, the calls injected are exactly the draws below the rate."""
    events = RecordingListener()
    chaos = Chaos.fault(
        rate, ConnectionError, enabled=True, rng=random.Random(seed), listeners=[events]
    )
    n = 400
    ran, raised = _count(driver, chaos, n)
    expected = _draws_below(seed, rate, n)
    assert raised == expected == len(events.events)
    assert ran == n - expected


def test_the_shared_rng_is_used_without_rng(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Chaos built without ``rng`` draws from the module's shared generator."""
    from failsafe import chaos as chaos_module

    monkeypatch.setattr(chaos_module, "_RNG", random.Random(5))
    chaos = Chaos.fault(0.5, ConnectionError, enabled=True)
    ran, raised = _count(Driver("sync"), chaos, 200)
    assert (ran, raised) == (200 - _draws_below(5, 0.5, 200), _draws_below(5, 0.5, 200))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    rate=st.floats(min_value=0, max_value=1) | st.sampled_from([0.0, 1.0]),
    n=st.integers(min_value=0, max_value=60),
)
def test_property_injections_are_the_draws_below_the_rate(seed: int, rate: float, n: int) -> None:
    """For any seed: rate 0 never injects, rate 1 always, any rate exactly the draws below it."""
    chaos = Chaos.result(rate, "injected", enabled=True, rng=random.Random(seed))
    answers = [chaos.call(lambda: "ran") for _ in range(n)]
    injected = answers.count("injected")
    assert injected == _draws_below(seed, rate, n)
    if rate == 0:
        assert injected == 0
    if rate == 1:
        assert injected == n


# -- the switch ---------------------------------------------------------------------------
def test_off_by_default_nothing_is_injected_nor_drawn(driver: Driver) -> None:
    """Off (the default), the function always runs, no event is emitted, the RNG is untouched."""
    events, rng = RecordingListener(), random.Random(3)
    state = rng.getstate()
    chaos = Chaos.fault(1, ConnectionError, rng=rng, listeners=[events])
    ran, raised = _count(driver, chaos, 50)
    assert (ran, raised) == (50, 0)
    assert events.events == []
    assert rng.getstate() == state


def test_no_arguments_is_a_switched_off_fault() -> None:
    """``Chaos()`` builds, says what it would do, and lets every call through."""
    chaos = Chaos()
    assert chaos.call(lambda: 42) == 42
    assert (
        chaos.describe() == "chaos 'chaos': raises ConnectionError on 0.1% of calls, switched off"
    )


def test_switched_off_for_good_binds_to_the_next_stage() -> None:
    """A constant-off chaos returns the next stage itself: no frame on the call's path."""

    async def nxt(fn: Any, args: Any, kwargs: Any) -> Any:
        return None

    off = Chaos.fault(1, ConnectionError)
    assert off._bind_sync(_invoke) is _invoke
    assert off._bind_async(nxt) is nxt
    retry = Retry()
    assert Pipeline(retry, off)._runner_sync().__code__ is Pipeline(retry)._runner_sync().__code__


def test_alone_and_off_call_async_is_still_a_coroutine() -> None:
    """``call_async`` of a lone chaos, on or off, returns a coroutine, as every policy's does."""

    async def answer() -> int:
        return 7

    for chaos in (
        Chaos(),
        Chaos.fault(0, KeyError, enabled=True),
        Chaos.result(1, 8, enabled=True),
    ):
        coro = chaos.call_async(answer)
        assert asyncio.iscoroutine(coro)
        assert asyncio.run(coro) == (8 if chaos.rate == 1 else 7)
    pending = Chaos.fault(0, KeyError, enabled=lambda: True).call_async(lambda: 7)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="call_async"):  # refused when awaited
        asyncio.run(pending)


def test_a_callable_switch_is_asked_on_each_call(driver: Driver) -> None:
    """A feature-flag switch flipped between calls turns injection on and off at once."""
    flag = {"on": False}
    events = RecordingListener()
    chaos = Chaos.result(1, "chaos", enabled=lambda: flag["on"], listeners=[events])
    answers = []
    for on in [False, True, True, False, True]:
        flag["on"] = on
        answers.append(driver.call(chaos, lambda: "real"))
    assert answers == ["real", "chaos", "chaos", "real", "chaos"]
    assert len(events.events) == 3


def test_a_switch_that_raises_counts_as_off(caplog: pytest.LogCaptureFixture) -> None:
    """A broken feature flag never fails the call: chaos is off for it, and it is logged."""

    def broken() -> bool:
        raise RuntimeError("flag service down")

    chaos = Chaos.fault(1, ConnectionError, enabled=broken)
    with caplog.at_level(logging.WARNING, logger="failsafe.chaos"):
        assert chaos.call(lambda: "ran") == "ran"
    assert "broken" in caplog.text
    assert "flag service down" in caplog.text


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("1", True),
        ("true", True),
        (" YES ", True),
        ("On", True),
        ("0", False),
        ("", False),
        ("false", False),
        ("off", False),
        ("No", False),
        (None, False),
    ],
)
def test_env_switch_values(monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool) -> None:
    """Chaos.env reads 1/true/yes/on as on and 0/false/no/off/empty/unset as off."""
    if value is None:
        monkeypatch.delenv("FAILSAFE_TEST_CHAOS", raising=False)
    else:
        monkeypatch.setenv("FAILSAFE_TEST_CHAOS", value)
    chaos = Chaos.result(1, "chaos", enabled=Chaos.env("FAILSAFE_TEST_CHAOS"))
    assert chaos.call(lambda: "real") == ("chaos" if on else "real")
    assert ("switched on" in chaos.describe()) is on


def test_env_switch_is_read_once_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable is read when the policy is built; changing it later changes nothing."""
    monkeypatch.setenv("FAILSAFE_TEST_CHAOS", "on")
    on = Chaos.result(1, "chaos", enabled=Chaos.env("FAILSAFE_TEST_CHAOS"))
    monkeypatch.setenv("FAILSAFE_TEST_CHAOS", "off")
    off = Chaos.result(1, "chaos", enabled=Chaos.env("FAILSAFE_TEST_CHAOS"))
    monkeypatch.setenv("FAILSAFE_TEST_CHAOS", "on")
    assert (on.call(lambda: "real"), off.call(lambda: "real")) == ("chaos", "real")
    assert off._bind_sync(_invoke) is _invoke  # off by the environment: off for good
    assert off.describe().endswith("switched off by $FAILSAFE_TEST_CHAOS=off")


def test_env_switch_refuses_an_unknown_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that is neither on nor off fails at construction, naming ``enabled``."""
    monkeypatch.setenv("FAILSAFE_TEST_CHAOS", "ture")
    with pytest.raises(ConfigurationError, match="FAILSAFE_TEST_CHAOS") as info:
        Chaos.env("FAILSAFE_TEST_CHAOS")
    assert info.value.option == "enabled"


# -- events, pipelines, misuse --------------------------------------------------------------
def test_global_listeners_see_injections() -> None:
    """An injection reaches listeners added with add_listener too."""
    events = RecordingListener()
    failsafe.add_listener(events)
    try:
        chaos = Chaos.latency(1, 0.1, enabled=True, clock=FakeClock(), name="warehouse")
        chaos.call(lambda: None)
    finally:
        failsafe.remove_listener(events)
    assert events.events == [ChaosInjected(policy="warehouse", kind="latency", detail="0.1s")]


def test_policies_around_chaos_react_to_an_injected_fault(driver: Driver) -> None:
    """Innermost in a pipeline, an injected fault is retried, counted by the breaker, replaced."""
    events = RecordingListener()
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=3), clock=FakeClock())
    pipeline = Pipeline(
        Fallback("fallback"),
        Retry(attempts=3, backoff=Backoff.none(), on=ConnectionError, listeners=[events]),
        breaker,
        Chaos.fault(1, ConnectionError, enabled=True, listeners=[events]),
    )
    ran: list[int] = []
    assert driver.call(pipeline, lambda: ran.append(1)) == "fallback"
    assert ran == []
    assert events.kinds.count("ChaosInjected") == 3
    assert events.kinds.count("AttemptFailed") == 3
    with pytest.raises(CircuitOpenError):
        driver.call(breaker, lambda: "up")


def test_call_refuses_a_coroutine_function_without_injecting() -> None:
    """Under call, a coroutine function raises UsageError even when chosen: never injected."""
    events = RecordingListener()
    made: list[Coroutine[Any, Any, str]] = []

    async def fetch() -> str:
        return "x"

    def spy() -> Coroutine[Any, Any, str]:
        coro = fetch()
        made.append(coro)
        return coro

    for chaos in (
        Chaos.fault(1, ConnectionError, enabled=True, listeners=[events]),
        Chaos.result(1, "x", enabled=lambda: True, listeners=[events]),
    ):
        with pytest.raises(UsageError, match="call_async"):
            chaos.call(fetch)  # type: ignore[arg-type]
        retry = Retry(on=Exception, backoff=Backoff.none(), listeners=[events])
        with pytest.raises(UsageError):
            Pipeline(retry, chaos).call(fetch)  # type: ignore[arg-type]
    with pytest.raises(UsageError):  # a plain function returning a coroutine, not injected
        Chaos.fault(0, ConnectionError, enabled=True).call(spy)
    assert events.events == []
    assert made[0].cr_frame is None  # closed


def test_decorates_plain_and_async_functions() -> None:
    """Used as a decorator, chaos injects into a def and an async def alike."""
    chaos = Chaos.result(1, "chaos", enabled=True)

    @chaos
    def plain() -> str:
        return "real"

    @chaos
    async def coro() -> str:
        return "real"

    assert plain() == "chaos"
    assert asyncio.run(coro()) == "chaos"


# -- thread and task safety -----------------------------------------------------------------
def test_many_threads_through_one_chaos_add_up() -> None:
    """Shared by threads, every call draws once: injections add up to the seed's draws."""
    events = RecordingListener()
    seed, rate, threads, per_thread = 11, 0.3, 8, 400
    chaos = Chaos.fault(
        rate, ConnectionError, enabled=True, rng=random.Random(seed), listeners=[events]
    )
    ran = [0] * threads
    raised = [0] * threads
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                chaos.call(lambda: None)
                ran[i] += 1
            except ConnectionError:
                raised[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = threads * per_thread
    assert sum(ran) + sum(raised) == total
    assert sum(raised) == len(events.events) == _draws_below(seed, rate, total)


def test_many_tasks_through_one_chaos_add_up() -> None:
    """Shared by tasks, injected latency and calls add up to the seed's draws."""
    clock, seed, rate, n = FakeClock(), 4, 0.25, 300
    chaos = Chaos.latency(rate, 1, enabled=True, clock=clock, rng=random.Random(seed))

    async def answer(i: int) -> int:
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*(chaos.call_async(answer, i) for i in range(n)))

    assert asyncio.run(main()) == list(range(n))
    assert len(clock.sleeps) == _draws_below(seed, rate, n)


# -- options ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "build"),
    [
        ("rate", lambda: Chaos.fault(-0.1, ConnectionError)),
        ("rate", lambda: Chaos.fault(1.5, ConnectionError)),
        ("rate", lambda: Chaos.fault(math.nan, ConnectionError)),
        ("rate", lambda: Chaos.latency(True, 1)),
        ("rate", lambda: Chaos(rate="10%")),
        ("seconds", lambda: Chaos.latency(0.1, -1)),
        ("seconds", lambda: Chaos.latency(0.1, math.inf)),
        ("exception", lambda: Chaos.fault(0.1, 42)),
        ("exception", lambda: Chaos.fault(0.1, int)),
        ("enabled", lambda: Chaos.fault(0.1, KeyError, enabled="true")),
        ("enabled", lambda: Chaos.fault(0.1, KeyError, enabled=None)),
        ("enabled", lambda: Chaos.env("")),
        ("rng", lambda: Chaos.fault(0.1, KeyError, rng=42)),
    ],
)
def test_bad_options_fail_at_construction(option: str, build: Callable[[], object]) -> None:
    """Each bad option raises ConfigurationError naming it, before any call."""
    with pytest.raises(ConfigurationError) as info:
        build()
    assert info.value.option == option


def test_describe_says_what_and_whether_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """describe() names the injection, the rate and the switch."""
    monkeypatch.delenv("FAILSAFE_TEST_CHAOS", raising=False)

    def flag() -> bool:
        return False

    assert Chaos.fault(0.1, ConnectionError).describe() == (
        "chaos 'chaos': raises ConnectionError on 10% of calls, switched off"
    )
    assert Chaos.latency(0.05, 2, enabled=True, name="db").describe() == (
        "chaos 'db': adds 2s of latency to 5% of calls, switched on"
    )
    assert Chaos.result(1, 503, enabled=flag).describe() == (
        "chaos 'chaos': returns 503 on 100% of calls, switched by "
        f"{flag.__qualname__}, asked on each call"
    )
    env = Chaos.fault(0.5, KeyError("k"), enabled=Chaos.env("FAILSAFE_TEST_CHAOS"))
    assert env.describe().endswith(
        "raises KeyError on 50% of calls, switched off ($FAILSAFE_TEST_CHAOS unset)"
    )
    assert env.describe() in repr(Pipeline(Retry(), env))


# -- the testing helpers share the injections -----------------------------------------------
def test_testing_helpers_validate_as_chaos_does() -> None:
    """fail_first/fail_every and with_latency refuse what Chaos refuses, naming the option."""
    clock = FakeClock()

    async def answer() -> int:
        return 1

    with pytest.raises(ConfigurationError) as info:
        fail_first(1, 42)  # type: ignore[arg-type]
    assert info.value.option == "error"
    with pytest.raises(ConfigurationError) as info:
        fail_every(2, int)  # type: ignore[arg-type]
    assert info.value.option == "error"
    with pytest.raises(ConfigurationError) as info:
        with_latency(clock, -1, lambda: 1)
    assert info.value.option == "seconds"
    with pytest.raises(ConfigurationError) as info:
        with_latency_async(clock, math.nan, answer)
    assert info.value.option == "seconds"
    assert asyncio.iscoroutinefunction(with_latency_async(clock, 1, answer))
