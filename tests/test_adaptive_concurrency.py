"""AdaptiveConcurrency: a concurrency limit that grows while latency holds and sheds when full."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from bench.adaptive_bench import FakeTimeLoop, Scenario, compare, run_on_fake_time
from hypothesis import given, settings
from hypothesis import strategies as st

from failsafe import (
    AdaptiveConcurrency,
    ConcurrencyLimited,
    ConfigurationError,
    Pipeline,
    PolicyRejected,
    Retry,
    UsageError,
)
from failsafe.adaptive_concurrency import AIMD, MIN_WINDOW, Gradient
from failsafe.events import ConcurrencyLimitChanged, ConcurrencyLimitRejected
from failsafe.testing import FakeClock, RecordingListener
from tests.conftest import Driver


def burst(
    driver: Driver,
    policy: AdaptiveConcurrency,
    clock: FakeClock,
    depth: int,
    latency: float | Callable[[int], float],
    error: BaseException | None = None,
    result: object = "ok",
) -> list[object]:
    """Try ``depth`` calls at once, each taking ``latency``; return what each level got.

    The calls nest (each one makes the next from inside), no time passes while they start,
    and the innermost that was let through moves the clock: every call admitted is in
    flight together, and each one's latency is ``latency`` (or ``latency(admitted)``, for
    a dependency that slows down with concurrency). A level that is shed records the
    `ConcurrencyLimited` (the levels below it are never tried); ``error`` makes every level
    that ran fail with it.
    """
    got: list[object] = [None] * depth

    def after(level: int, innermost: bool) -> object:
        if innermost:
            clock.advance(latency(level + 1) if callable(latency) else latency)
        if error is not None:
            raise error
        return result

    if not driver.is_async:

        def level_sync(level: int) -> object:
            innermost = True
            if level + 1 < depth:
                try:
                    got[level + 1] = policy.call(level_sync, level + 1)
                    innermost = False
                except ConcurrencyLimited as exc:
                    got[level + 1] = exc
                except ConnectionError as exc:
                    got[level + 1] = exc
                    innermost = False
            return after(level, innermost)

        try:
            got[0] = policy.call(level_sync, 0)
        except (ConcurrencyLimited, ConnectionError) as exc:
            got[0] = exc
        return got

    async def level_async(level: int) -> object:
        innermost = True
        if level + 1 < depth:
            try:
                got[level + 1] = await policy.call_async(level_async, level + 1)
                innermost = False
            except ConcurrencyLimited as exc:
                got[level + 1] = exc
            except ConnectionError as exc:
                got[level + 1] = exc
                innermost = False
        return after(level, innermost)

    async def main() -> None:
        try:
            got[0] = await policy.call_async(level_async, 0)
        except (ConcurrencyLimited, ConnectionError) as exc:
            got[0] = exc

    asyncio.run(main())
    return got


def queueing(base: float, workers: int) -> Callable[[int], float]:
    """The latency of ``n`` calls at once at ``workers`` workers: past them, calls queue.

    Each call waits its turn, so latency grows in proportion to ``n / workers``.
    """
    return lambda n: base * max(1.0, n / workers)


# -- construction ----------------------------------------------------------------------


def test_works_with_no_arguments(driver: Driver) -> None:
    """The defaults build a gradient limiter that lets a call through and counts it back."""
    limiter = AdaptiveConcurrency()
    assert isinstance(limiter.algorithm, Gradient)
    assert (limiter.min_limit, limiter.initial_limit, limiter.max_limit) == (1, 20, 1000)
    assert driver.call(limiter, lambda: "served") == "served"
    assert (limiter.limit, limiter.in_flight) == (20, 0)
    assert "adaptive concurrency 'adaptive-concurrency': limit 20" in repr(limiter)


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: AdaptiveConcurrency(min_limit=0), "min_limit"),
        (lambda: AdaptiveConcurrency(min_limit=10, max_limit=5, initial_limit=5), "max_limit"),
        (lambda: AdaptiveConcurrency(initial_limit=0), "initial_limit"),
        (lambda: AdaptiveConcurrency(min_limit=5, initial_limit=2), "initial_limit"),
        (lambda: AdaptiveConcurrency(max_limit=10), "initial_limit"),
        (lambda: AdaptiveConcurrency(algorithm="aimd"), "algorithm"),  # type: ignore[arg-type]
        (lambda: AdaptiveConcurrency(max_limit=True), "max_limit"),
        (lambda: AIMD(backoff=1.0), "backoff"),
        (lambda: AIMD(increase=0), "increase"),
        (lambda: AIMD(target_latency=0), "target_latency"),
        (lambda: Gradient(tolerance=0.5), "tolerance"),
        (lambda: Gradient(smoothing=0), "smoothing"),
        (lambda: Gradient(queue=-1), "queue"),
        (lambda: Gradient(baseline_window=0), "baseline_window"),
        (lambda: Gradient(probe_every=0), "probe_every"),
        (lambda: Gradient(backoff=0.4), "backoff"),
    ],
)
def test_bad_options_fail_at_construction_naming_the_option(
    build: Callable[[], object], option: str
) -> None:
    """A bad option fails when the policy is built, and the error names it."""
    with pytest.raises(ConfigurationError) as info:
        build()
    assert info.value.option == option


# -- shedding --------------------------------------------------------------------------


def test_a_full_limit_sheds_at_once_without_calling(driver: Driver) -> None:
    """The call beyond the limit raises ConcurrencyLimited with the numbers, and never runs."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(
        initial_limit=3, min_limit=1, max_limit=3, clock=clock, listeners=[events], name="search"
    )
    got = burst(driver, limiter, clock, depth=4, latency=0.01)
    assert got[:3] == ["ok", "ok", "ok"]
    shed = got[3]
    assert isinstance(shed, ConcurrencyLimited)
    assert isinstance(shed, PolicyRejected)
    assert (shed.limiter, shed.limit, shed.in_flight) == ("search", 3, 3)
    assert "'search' is full: 3 running, limit 3" in str(shed)
    rejected = events.of_type(ConcurrencyLimitRejected)
    assert [(e.policy, e.limit, e.in_flight) for e in rejected] == [("search", 3, 3)]
    assert limiter.in_flight == 0


def test_a_shed_call_is_not_retried_by_default() -> None:
    """Under a Retry, a shed attempt ends the call: shedding is not a transient error."""
    limiter = AdaptiveConcurrency(initial_limit=1, min_limit=1, max_limit=1)
    pipeline = Pipeline(Retry(attempts=3), limiter)
    calls: list[str] = []

    def inner() -> None:
        calls.append("inner")

    def outer() -> None:
        with pytest.raises(ConcurrencyLimited):
            pipeline.call(inner)

    pipeline.call(outer)
    assert calls == []
    assert limiter.in_flight == 0


# -- growth and shrinking --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [Gradient(), AIMD()], ids=["gradient", "aimd"])
def test_the_limit_grows_while_latency_holds(driver: Driver, algorithm: AIMD | Gradient) -> None:
    """Full bursts whose latency does not change raise the limit, window after window."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(algorithm=algorithm, clock=clock, listeners=[events])
    for _ in range(30):
        burst(driver, limiter, clock, depth=limiter.limit, latency=0.02)
    assert limiter.limit > 20
    changes = events.of_type(ConcurrencyLimitChanged)
    assert changes
    assert {e.reason for e in changes} == {"growth"}
    assert all(e.limit > e.previous for e in changes)
    assert limiter.in_flight == 0


def test_an_unused_limit_does_not_grow(driver: Driver) -> None:
    """Calls one at a time never use the limit, so it stays where it is (no free growth)."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(algorithm=AIMD(), clock=clock)
    for _ in range(100):
        burst(driver, limiter, clock, depth=1, latency=0.02)
    assert limiter.limit == 20


def test_the_gradient_shrinks_when_latency_rises(driver: Driver) -> None:
    """Once latency doubles at the same concurrency, the gradient brings the limit down."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(clock=clock, listeners=[events])
    for _ in range(10):
        burst(driver, limiter, clock, depth=limiter.limit, latency=0.02)
    grown = limiter.limit
    events.clear()
    for _ in range(10):
        burst(driver, limiter, clock, depth=limiter.limit, latency=0.08)
    assert limiter.limit < grown
    assert {e.reason for e in events.of_type(ConcurrencyLimitChanged)} == {"latency"}


def test_the_gradient_holds_near_what_a_queueing_dependency_serves(driver: Driver) -> None:
    """Against 10 workers, the limit holds near 10 plus the queue allowance, without drift."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(initial_limit=10, clock=clock)
    limits = []
    for _ in range(200):
        depth = limiter.limit
        burst(driver, limiter, clock, depth=depth, latency=queueing(0.05, 10))
        limits.append(limiter.limit)
    assert max(limits) <= 20  # unlimited growth would give 10 + 0.8 per window: 170
    assert min(limits[10:]) >= 12  # and it does not shed what the workers can serve


def test_a_dependency_that_became_slower_is_learnt(driver: Driver) -> None:
    """A dependency three times slower at any concurrency is learnt: the limit stays near 10."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(initial_limit=10, clock=clock)
    for _ in range(50):
        burst(driver, limiter, clock, depth=limiter.limit, latency=queueing(0.05, 10))
    for _ in range(300):
        burst(driver, limiter, clock, depth=limiter.limit, latency=queueing(0.15, 10))
    assert 12 <= limiter.limit <= 20


def test_a_probe_admits_half_the_limit_for_one_window(driver: Driver) -> None:
    """After probe_every full windows, one window admits at most half the limit, then all."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(
        algorithm=Gradient(probe_every=3, queue=0), initial_limit=20, max_limit=20, clock=clock
    )
    for _ in range(3):  # three full windows at a steady latency: the limit stays at 20
        assert all(g == "ok" for g in burst(driver, limiter, clock, 20, latency=0.01))
    probe = burst(driver, limiter, clock, depth=20, latency=0.01)
    assert probe[:10] == ["ok"] * 10
    shed = probe[10]
    assert isinstance(shed, ConcurrencyLimited)
    assert (shed.limit, shed.in_flight) == (10, 10)
    assert limiter.limit == 20  # the probe caps admissions; it does not move the limit
    assert all(g == "ok" for g in burst(driver, limiter, clock, 20, latency=0.01))


def test_probes_find_the_knee_when_started_in_overload(driver: Driver) -> None:
    """Started at 40 against 10 queueing workers, the probes bring the limit down near 10."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(initial_limit=40, clock=clock, listeners=[events])
    for _ in range(50):  # no probe yet: the first latency seen is taken as the baseline
        burst(driver, limiter, clock, depth=limiter.limit, latency=queueing(0.05, 10))
    assert limiter.limit >= 40
    shed_during_probe = []
    for _ in range(250):
        got = burst(driver, limiter, clock, depth=limiter.limit, latency=queueing(0.05, 10))
        shed_during_probe.append(sum(isinstance(g, ConcurrencyLimited) for g in got))
    assert 12 <= limiter.limit <= 20
    assert any(shed_during_probe)  # the probes capped some bursts
    assert "latency" in {e.reason for e in events.of_type(ConcurrencyLimitChanged)}


def test_aimd_shrinks_on_latency_above_its_target(driver: Driver) -> None:
    """AIMD with a target cuts the limit by its backoff when a window is slower than it."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(
        algorithm=AIMD(target_latency=0.05), clock=clock, listeners=[events]
    )
    burst(driver, limiter, clock, depth=20, latency=0.1)
    assert limiter.limit == 18
    assert [(e.previous, e.limit, e.reason) for e in events.of_type(ConcurrencyLimitChanged)] == [
        (20, 18, "latency")
    ]


@pytest.mark.parametrize("algorithm", [Gradient(), AIMD()], ids=["gradient", "aimd"])
def test_failures_shrink_the_limit(driver: Driver, algorithm: AIMD | Gradient) -> None:
    """Windows of transient failures cut the limit by the backoff, down to min_limit."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(algorithm=algorithm, min_limit=2, clock=clock, listeners=[events])
    burst(driver, limiter, clock, depth=20, latency=0.01, error=ConnectionError("refused"))
    assert limiter.limit == 18
    for _ in range(40):
        burst(driver, limiter, clock, depth=MIN_WINDOW, latency=0.01, error=ConnectionError())
    assert limiter.limit == 2
    changes = events.of_type(ConcurrencyLimitChanged)
    assert {e.reason for e in changes} == {"failure"}
    assert all(b.previous == a.limit for a, b in itertools.pairwise(changes))


def test_a_result_can_be_a_failure(driver: Driver) -> None:
    """A returned value that on_result matches (an HTTP 503) counts as a failure."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(on_result=lambda status: status == 503, clock=clock)
    got = burst(driver, limiter, clock, depth=20, latency=0.01, result=503)
    assert got == [503] * 20  # returned to the caller unchanged
    assert limiter.limit == 18


@pytest.mark.parametrize(
    "error",
    [ValueError("not found"), UsageError("misuse")],
    ids=["own error", "usage error"],
)
def test_other_exceptions_are_neither_failures_nor_samples(
    driver: Driver, error: Exception
) -> None:
    """An exception that on does not match frees the slot and teaches the limit nothing."""
    clock = FakeClock()
    # at 2, a success with 1 in flight would grow it (AIMD) and a failure would cut it
    limiter = AdaptiveConcurrency(algorithm=AIMD(), initial_limit=2, clock=clock)

    def fails() -> None:
        raise error

    for _ in range(5 * MIN_WINDOW):
        with pytest.raises(type(error)):
            driver.call(limiter, fails)
    assert (limiter.limit, limiter.in_flight) == (2, 0)
    driver.call(limiter, lambda: None)  # the same limiter does learn from a success
    for _ in range(MIN_WINDOW):
        driver.call(limiter, lambda: None)
    assert limiter.limit == 3


def test_a_coroutine_given_to_call_is_a_usage_error_and_no_sample() -> None:
    """A coroutine function under ``call`` raises UsageError; the limit learns nothing."""
    limiter = AdaptiveConcurrency(algorithm=AIMD(), initial_limit=2, clock=FakeClock())

    async def fetch() -> str:
        return "never awaited"

    for _ in range(5 * MIN_WINDOW):
        with pytest.raises(UsageError):
            limiter.call(fetch)
    assert (limiter.limit, limiter.in_flight) == (2, 0)


def test_a_cancelled_call_gives_back_its_slot_and_is_no_sample() -> None:
    """A task cancelled while in flight frees its slot; the limit does not move."""
    limiter = AdaptiveConcurrency(algorithm=AIMD(), initial_limit=2, clock=FakeClock())

    async def main() -> None:
        for _ in range(5 * MIN_WINDOW):
            gate = asyncio.Event()
            task = asyncio.create_task(limiter.call_async(gate.wait))
            await asyncio.sleep(0)
            assert limiter.in_flight == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert (limiter.limit, limiter.in_flight) == (2, 0)


def test_events_fire_only_when_the_whole_limit_moves(driver: Driver) -> None:
    """ConcurrencyLimitChanged comes only when the integer limit changes, chained in order."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(clock=clock, listeners=[events], name="inventory")
    for latency in [0.02] * 20 + [0.06] * 20:
        burst(driver, limiter, clock, depth=limiter.limit, latency=latency)
    changes = events.of_type(ConcurrencyLimitChanged)
    assert len(changes) >= 2
    assert all(e.previous != e.limit and e.policy == "inventory" for e in changes)
    assert changes[0].previous == 20
    assert all(b.previous == a.limit for a, b in itertools.pairwise(changes))
    assert changes[-1].limit == limiter.limit


def test_latency_is_measured_on_the_clock_monotonic() -> None:
    """A step of the wall clock during calls changes nothing: latency is monotonic time."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(
        algorithm=AIMD(target_latency=1.0), initial_limit=MIN_WINDOW, clock=clock
    )

    def call() -> None:
        clock.step_wall(3600)  # an NTP correction: an hour, mid-call
        clock.advance(0.01)

    for _ in range(MIN_WINDOW):
        limiter.call(call)
    assert limiter.limit == MIN_WINDOW  # one in flight of 10: no growth, and no "slow" cut


# -- bounds and safety -----------------------------------------------------------------

_STEPS = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=40),  # calls at once
        st.floats(min_value=0, max_value=10, allow_nan=False),  # their latency
        st.sampled_from(["ok", "fail", "ignored"]),
    ),
    max_size=60,
)
_ALGORITHMS = st.one_of(
    st.builds(
        Gradient,
        tolerance=st.floats(1, 3),
        smoothing=st.floats(0.01, 1),
        queue=st.integers(0, 20),
    ),
    st.builds(
        AIMD,
        increase=st.integers(1, 10),
        backoff=st.floats(0.5, 0.99),
        target_latency=st.none() | st.floats(0.001, 5),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    algorithm=_ALGORITHMS,
    bounds=st.tuples(st.integers(1, 30), st.integers(0, 30), st.integers(0, 30)),
    steps=_STEPS,
)
def test_any_samples_keep_the_limit_within_its_bounds(
    algorithm: AIMD | Gradient, bounds: tuple[int, int, int], steps: list[Any]
) -> None:
    """Any samples keep min_limit <= limit <= max_limit; no call is admitted past the limit."""
    low, initial_above, max_above = bounds
    high = low + max_above
    clock = FakeClock()
    limiter = AdaptiveConcurrency(
        algorithm=algorithm,
        min_limit=low,
        max_limit=high,
        initial_limit=min(high, low + initial_above),
        clock=clock,
    )
    verdicts = {"ok": 0, "fail": 1, "ignored": 2}
    for calls, latency, verdict in steps:
        started = []
        for _ in range(calls):
            before = limiter.limit
            try:
                started.append(limiter._admit())
            except ConcurrencyLimited as exc:
                shed = exc
            else:
                assert limiter.in_flight <= before
                continue
            assert shed.in_flight >= shed.limit
            assert shed.limit <= before
        clock.advance(latency)
        for start in started:
            limiter._finish(start, verdicts[verdict])
            assert low <= limiter.limit <= high
        assert limiter.in_flight == 0


@settings(max_examples=40, deadline=None)
@given(
    latencies=st.lists(st.floats(0.001, 0.5), min_size=1, max_size=40),
    arrivals=st.lists(st.floats(0, 0.05), min_size=1, max_size=300),
)
def test_tasks_never_find_more_in_flight_than_the_limit(
    latencies: list[float], arrivals: list[float]
) -> None:
    """Tasks arriving at any times, on fake time: each call starts with in_flight <= limit."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(initial_limit=5, min_limit=1, max_limit=8, clock=clock)
    seen: list[tuple[int, int]] = []

    async def work(latency: float) -> None:
        seen.append((limiter.in_flight, limiter.limit))
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_later(latency, done.set_result, None)
        await done

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks = []
        at = 0.0
        for i, gap in enumerate(arrivals):
            at += gap
            finished = loop.create_future()
            loop.call_at(at, finished.set_result, None)
            await finished
            task = loop.create_task(limiter.call_async(work, latencies[i % len(latencies)]))
            tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)

    run_on_fake_time(clock, main)
    assert seen
    assert all(in_flight <= limit for in_flight, limit in seen)
    assert limiter.in_flight == 0


def test_threads_share_one_limiter_safely() -> None:
    """Many threads at once: never more calls running than max_limit, and counts return to 0."""
    clock, events = FakeClock(), RecordingListener()
    limiter = AdaptiveConcurrency(
        algorithm=AIMD(target_latency=0.5),
        initial_limit=4,
        min_limit=1,
        max_limit=6,
        clock=clock,
        listeners=[events],
    )
    running = 0
    most = 0
    lock = threading.Lock()
    outcomes = {"ran": 0, "shed": 0}

    def work(i: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        clock.advance(0.001 * (i % 7))
        with lock:
            running -= 1
        if i % 11 == 0:
            raise ConnectionError("refused")

    def worker(offset: int) -> None:
        for i in range(300):
            try:
                limiter.call(work, offset + i)
            except ConcurrencyLimited:
                kind = "shed"
            except ConnectionError:
                kind = "ran"
            else:
                kind = "ran"
            with lock:
                outcomes[kind] += 1

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert outcomes["ran"] + outcomes["shed"] == 8 * 300
    assert most <= 6
    assert limiter.in_flight == 0
    assert 1 <= limiter.limit <= 6
    assert len(events.of_type(ConcurrencyLimitRejected)) == outcomes["shed"]
    assert all(e.in_flight >= e.limit for e in events.of_type(ConcurrencyLimitRejected))


def test_many_tasks_share_one_limiter_safely() -> None:
    """Many tasks at once on fake time: in flight never passes the limit, counts return to 0."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(initial_limit=10, max_limit=50, clock=clock)
    seen: list[tuple[int, int]] = []
    shed = 0

    async def work(i: int) -> str:
        seen.append((limiter.in_flight, limiter.limit))
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_later(0.01 * (1 + i % 5), done.set_result, "ok")
        result: str = await done
        return result

    async def one(i: int) -> None:
        nonlocal shed
        try:
            await limiter.call_async(work, i)
        except ConcurrencyLimited:
            shed += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for wave in range(50):
            batch = [loop.create_task(one(wave * 100 + i)) for i in range(30)]
            await asyncio.gather(*batch)

    run_on_fake_time(clock, main)
    assert len(seen) + shed == 50 * 30
    assert all(in_flight <= limit for in_flight, limit in seen)
    assert limiter.in_flight == 0


# -- the simulated overload (bench/adaptive_bench.py, short) ---------------------------


def test_adaptive_limit_beats_a_fixed_limit_set_too_high_in_an_overload() -> None:
    """At 2x overload, the adaptive limit beats a Bulkhead 20x too wide on goodput and p99."""
    results = compare(Scenario(duration=10.0))
    adaptive, fixed, unlimited, _aimd = results.values()
    assert adaptive.goodput >= 2 * fixed.goodput
    assert adaptive.p99 <= 0.5 * fixed.p99
    assert adaptive.goodput >= 0.8 * Scenario().capacity  # most of what the workers can do
    assert unlimited.p99 > fixed.p99  # no limit at all is worse still
    assert 1 <= adaptive.limit_min <= adaptive.limit_max <= 1000


def test_the_fake_time_loop_never_waits() -> None:
    """The simulation's loop moves its FakeClock to each timer instead of waiting for it."""
    clock = FakeClock()
    loop = FakeTimeLoop(clock)
    try:
        fired: list[float] = []
        loop.call_later(3600, lambda: fired.append(loop.time()))
        loop.call_later(7200, loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert fired == [3600.0]
    assert clock.monotonic() == 7200.0
