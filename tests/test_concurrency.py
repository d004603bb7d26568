"""One CircuitBreaker, Bulkhead or RetryBudget shared by many threads (and tasks) stays consistent.

Threads are coordinated with barriers, events and conditions; the waits carry a timeout only
as a safety net against a hang, never as the mechanism. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

from failsafe import (
    Backoff,
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConsecutiveFailures,
    Retry,
    RetryBudget,
)
from failsafe.events import CircuitOpened
from failsafe.testing import FakeClock, RecordingListener

THREADS = 8
SAFETY = 10.0  # seconds; only reached if something hangs


class Boom(Exception):
    """A failure the breakers count."""


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` on ``n`` threads; re-raise the first exception any of them raised."""
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAFETY)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


class Gauge:
    """Counts calls running at once, under a lock, and remembers the highest count."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.now = 0
        self.peak = 0
        self.total = 0

    def enter(self) -> None:
        with self.cond:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
            self.cond.notify_all()

    def leave(self) -> None:
        with self.cond:
            self.now -= 1
            self.cond.notify_all()


def wait_for(cond: threading.Condition, predicate: Callable[[], bool], what: str) -> None:
    with cond:
        assert cond.wait_for(predicate, SAFETY), f"timed out waiting for {what}"


# -- CircuitBreaker ---------------------------------------------------------------------------


def test_breaker_counts_every_failure_from_eight_threads() -> None:
    """Failures recorded concurrently by 8 threads all reach the consecutive-failure counter."""
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=10**6), clock=FakeClock())
    per_thread = 300
    start = threading.Barrier(THREADS)

    def fail() -> None:
        raise Boom

    def hammer(i: int) -> None:
        start.wait(SAFETY)
        for _ in range(per_thread):
            with pytest.raises(Boom):
                breaker.call(fail)

    run_threads(THREADS, hammer)
    assert breaker.failure_count == THREADS * per_thread
    assert breaker.state is CircuitState.CLOSED


def test_breaker_opens_exactly_once_under_concurrent_failures() -> None:
    """8 threads failing at once trip the breaker once, then every call is rejected unrun."""
    events = RecordingListener()
    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=25), reset_timeout=60, clock=clock, listeners=(events,)
    )
    ran = Gauge()
    rejected: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def fail() -> None:
        ran.enter()
        ran.leave()
        raise Boom

    def hammer(i: int) -> None:
        start.wait(SAFETY)
        for _ in range(50):
            try:
                breaker.call(fail)
            except Boom:
                pass
            except CircuitOpenError as exc:
                with lock:
                    rejected.append(exc.retry_after)

    run_threads(THREADS, hammer)
    assert breaker.state is CircuitState.OPEN
    assert len(events.of_type(CircuitOpened)) == 1
    assert ran.total >= 25
    assert ran.total + len(rejected) == THREADS * 50
    assert rejected
    assert all(r == 60 for r in rejected)  # the fake clock never moved


def _half_open_round(
    breaker: CircuitBreaker, clock: FakeClock, failing: Callable[[int], bool]
) -> list[bool]:
    """Open, wait out the timeout, and let 8 threads call at once with every probe held.

    Returns whether each admitted probe failed (``failing(k)`` for the k-th probe to run).
    """
    max_calls = breaker.half_open_max_calls
    breaker.open()
    clock.advance(breaker.reset_timeout)
    gauge = Gauge()
    release = threading.Event()
    rejected: list[CircuitOpenError] = []
    outcomes: list[bool] = []

    def probe() -> str:
        gauge.enter()
        with gauge.cond:
            fails = failing(gauge.total - 1)
            outcomes.append(fails)
        try:
            assert release.wait(SAFETY), "never released"
        finally:
            gauge.leave()
        if fails:
            raise Boom
        return "ok"

    def caller(i: int) -> None:
        try:
            breaker.call(probe)
        except CircuitOpenError as exc:
            with gauge.cond:
                rejected.append(exc)
                gauge.cond.notify_all()
        except Boom:
            pass

    runner = threading.Thread(target=run_threads, args=(THREADS, caller), daemon=True)
    runner.start()
    try:
        # every thread has either entered its probe (and is held there) or been rejected
        wait_for(
            gauge.cond,
            lambda: gauge.now + len(rejected) == THREADS,
            "all threads to be admitted or rejected",
        )
        assert gauge.now == max_calls
        assert len(rejected) == THREADS - max_calls
        assert all(e.retry_after == 0 for e in rejected)
        assert breaker.state is CircuitState.HALF_OPEN
    finally:
        release.set()
        runner.join(SAFETY)
    assert not runner.is_alive()
    assert gauge.peak == max_calls
    return outcomes


def _bit_of(number: int) -> Callable[[int], bool]:
    """``k -> whether bit k of number is set``."""
    return lambda k: bool(number >> k & 1)


def _state(breaker: CircuitBreaker) -> CircuitState:
    """Read the state afresh (so that type checkers do not narrow it across calls)."""
    return breaker.state


@pytest.mark.parametrize(("max_calls", "success_threshold"), [(1, 1), (3, 3), (3, 1), (5, 2)])
def test_half_open_breaker_admits_at_most_max_probes_at_once(
    max_calls: int, success_threshold: int
) -> None:
    """8 threads calling a half-open breaker run exactly half_open_max_calls probes at once."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        reset_timeout=5,
        half_open_max_calls=max_calls,
        success_threshold=success_threshold,
        clock=clock,
    )
    for round_no in range(12):
        # probe k fails when bit k of round_no is set: every mix of outcomes over the rounds
        outcomes = _half_open_round(breaker, clock, _bit_of(round_no))
        # whatever order the probes finished in, their outcomes decide the state
        successes = outcomes.count(False)
        if not any(outcomes):
            closes = successes >= success_threshold
            assert breaker.state is (CircuitState.CLOSED if closes else CircuitState.HALF_OPEN)
        elif successes < success_threshold:
            assert breaker.state is CircuitState.OPEN  # a failure re-opened it first
        else:
            # enough successes close it unless a failure came first and re-opened it
            assert breaker.state in (CircuitState.OPEN, CircuitState.CLOSED)


def test_stale_probe_finishing_in_a_later_half_open_period_is_not_counted() -> None:
    """A probe thread still running when its half-open period ended cannot close the next one."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        reset_timeout=5, half_open_max_calls=2, success_threshold=1, clock=clock
    )
    breaker.open()
    clock.advance(5)
    entered = threading.Semaphore(0)
    release_slow = threading.Event()
    results: list[Any] = []

    def slow_probe() -> str:
        entered.release()
        assert release_slow.wait(SAFETY)
        return "late success"

    slow = threading.Thread(target=lambda: results.append(breaker.call(slow_probe)))
    slow.start()
    assert entered.acquire(timeout=SAFETY)

    # a second probe fails: the circuit re-opens while the slow probe is still running
    def fail() -> None:
        raise Boom

    with pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.state is CircuitState.OPEN
    clock.advance(5)
    # a new half-open period: one probe is held in flight
    release_new = threading.Event()

    def new_probe() -> str:
        entered.release()
        assert release_new.wait(SAFETY)
        raise Boom

    def call_new_probe() -> None:
        with pytest.raises(Boom):
            breaker.call(new_probe)

    new = threading.Thread(target=call_new_probe)
    new.start()
    assert entered.acquire(timeout=SAFETY)
    release_slow.set()  # the stale probe of the first period now succeeds
    slow.join(SAFETY)
    assert results == ["late success"]
    try:
        assert _state(breaker) is CircuitState.HALF_OPEN, "a stale probe closed the circuit"
    finally:
        release_new.set()
        new.join(SAFETY)
    assert breaker.state is CircuitState.OPEN


# -- Bulkhead ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_queued", [0, 1, 2, 4])
def test_bulkhead_runs_at_most_three_and_queues_at_most_max_queued(max_queued: int) -> None:
    """With 3 slots held, of 8 threads exactly 3 run, max_queued wait, the rest are rejected."""
    bulkhead = Bulkhead(max_concurrent=3, max_queued=max_queued)
    gauge = Gauge()
    gate = threading.Event()
    rejected: list[BulkheadFull] = []
    results: list[str] = []

    def work() -> str:
        gauge.enter()
        try:
            assert gate.wait(SAFETY), "never released"
        finally:
            gauge.leave()
        return "done"

    def caller(i: int) -> None:
        try:
            value = bulkhead.call(work)
        except BulkheadFull as exc:
            with gauge.cond:
                rejected.append(exc)
                gauge.cond.notify_all()
        else:
            with gauge.cond:
                results.append(value)

    runner = threading.Thread(target=run_threads, args=(THREADS, caller), daemon=True)
    runner.start()
    expected_rejected = THREADS - 3 - max_queued
    wait_for(
        gauge.cond,
        lambda: gauge.now == 3 and len(rejected) == expected_rejected,
        "3 running and the rest queued or rejected",
    )
    # the queue cannot drain while the gate is shut, so this is a stable snapshot
    assert bulkhead.active == 3
    assert bulkhead.queued == max_queued
    assert all(e.max_concurrent == 3 and e.max_queued == max_queued for e in rejected)
    gate.set()
    runner.join(SAFETY)
    assert not runner.is_alive()
    assert gauge.peak == 3
    assert len(results) == 3 + max_queued == gauge.total
    assert len(results) + len(rejected) == THREADS
    assert bulkhead.active == 0
    assert bulkhead.queued == 0


def test_bulkhead_hammered_by_eight_threads_keeps_its_limit_and_its_books() -> None:
    """Under 8 threads x 200 calls: never more than 3 run, ran + rejected = calls, ends at 0."""
    bulkhead = Bulkhead(max_concurrent=3, max_queued=2)
    gauge = Gauge()
    rejected = [0] * THREADS
    start = threading.Barrier(THREADS)
    per_thread = 200

    def work(i: int) -> int:
        gauge.enter()
        try:
            total = 0
            for k in range(50):  # a little work, so that calls overlap
                total += k * i
            return total
        finally:
            gauge.leave()

    def caller(i: int) -> None:
        start.wait(SAFETY)
        for _ in range(per_thread):
            try:
                assert bulkhead.call(work, i) == sum(range(50)) * i
            except BulkheadFull:
                rejected[i] += 1

    run_threads(THREADS, caller)
    assert gauge.peak <= 3
    assert gauge.total + sum(rejected) == THREADS * per_thread
    assert gauge.now == 0
    assert bulkhead.active == 0
    assert bulkhead.queued == 0


def test_bulkhead_shared_by_threads_and_asyncio_tasks_at_once() -> None:
    """Threads and tasks sharing one bulkhead never run more than its limit together."""
    limit = 3
    bulkhead = Bulkhead(max_concurrent=limit, max_queued=100)
    gauge = Gauge()
    n_threads, per_thread, n_tasks = 4, 40, 40
    thread_results: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads + 1)

    def thread_work(i: int) -> int:
        gauge.enter()
        try:
            return sum(range(200)) + i
        finally:
            gauge.leave()

    def thread_caller(i: int) -> None:
        start.wait(SAFETY)
        for _ in range(per_thread):
            value = bulkhead.call(thread_work, i)
            with lock:
                thread_results.append(value - sum(range(200)))

    async def task_work(i: int) -> int:
        gauge.enter()
        try:
            for _ in range(3):
                await asyncio.sleep(0)  # let other tasks (and their wakeups) run
            return i
        finally:
            gauge.leave()

    async def main() -> list[int]:
        tasks = [asyncio.create_task(bulkhead.call_async(task_work, i)) for i in range(n_tasks)]
        await asyncio.sleep(0)
        # tasks took the free slots synchronously; the rest queued in arrival order
        assert bulkhead.active == limit
        assert bulkhead.queued == n_tasks - limit
        start.wait(SAFETY)  # now release the threads into the same bulkhead
        return await asyncio.wait_for(asyncio.gather(*tasks), SAFETY)

    runner = threading.Thread(target=run_threads, args=(n_threads, thread_caller), daemon=True)
    runner.start()
    task_results = asyncio.run(main())
    runner.join(SAFETY)
    assert not runner.is_alive()
    assert task_results == list(range(n_tasks))
    assert sorted(thread_results) == sorted(i for i in range(n_threads) for _ in range(per_thread))
    assert gauge.peak <= limit
    assert gauge.total == n_tasks + n_threads * per_thread
    assert bulkhead.active == 0
    assert bulkhead.queued == 0


# -- RetryBudget ------------------------------------------------------------------------------


def test_retry_budget_shared_by_eight_threads_grants_exactly_its_formula() -> None:
    """With time frozen, 8 threads get exactly floor(min*window + ratio*calls) retries."""
    budget = RetryBudget(ratio=0.25, min_per_second=0.5, window=10, clock=FakeClock(start=100))
    per_thread_calls = 25
    recorded = threading.Barrier(THREADS)
    granted = [0] * THREADS

    def worker(i: int) -> None:
        for _ in range(per_thread_calls):
            budget.record_call()
        recorded.wait(SAFETY)  # every call is counted before anyone withdraws
        while budget.try_withdraw():
            granted[i] += 1

    run_threads(THREADS, worker)
    allowance = 0.5 * 10 + 0.25 * THREADS * per_thread_calls  # 5 + 50
    assert sum(granted) == math.floor(allowance)
    assert budget.available < 1


def test_retry_budget_caps_retries_of_eight_threads_using_retry() -> None:
    """8 threads retrying a dead dependency through one budget make exactly its allowance."""
    clock = FakeClock(start=50)
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window=10, clock=clock)
    retry = Retry(attempts=10**6, backoff=Backoff.none(), on=Boom, budget=budget, clock=clock)
    attempts = [0] * THREADS
    calls_per_thread = 20
    start = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        def dead() -> None:
            attempts[i] += 1
            raise Boom

        start.wait(SAFETY)
        for _ in range(calls_per_thread):
            with pytest.raises(Boom):
                retry.call(dead)

    run_threads(THREADS, worker)
    calls = THREADS * calls_per_thread
    retries = sum(attempts) - calls
    allowance = 1.0 * 10 + 0.2 * calls  # 10 + 32
    assert 0 <= retries <= allowance
    # every call ends by failing to withdraw, so after the last one the budget is spent
    assert retries == math.floor(allowance + 1e-9)
    assert budget.available < 1
    assert clock.sleeps == []


def test_retry_budget_interleaved_calls_and_withdrawals_never_overdraw() -> None:
    """Interleaving record_call and try_withdraw on 8 threads never grants more than allowed."""
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10, clock=FakeClock(start=7))
    granted = [0] * THREADS
    recorded = [0] * THREADS
    start = threading.Barrier(THREADS)
    lock = threading.Lock()
    overdrawn: list[tuple[int, int]] = []

    def worker(i: int) -> None:
        start.wait(SAFETY)
        for k in range(400):
            if (k + i) % 3:
                with lock:
                    budget.record_call()
                    recorded[i] += 1
            elif budget.try_withdraw():
                with lock:
                    granted[i] += 1
                    # grants so far never exceed half of the calls recorded so far
                    if sum(granted) > 0.5 * sum(recorded):
                        overdrawn.append((sum(granted), sum(recorded)))

    run_threads(THREADS, worker)
    assert overdrawn == []
    assert sum(granted) <= 0.5 * sum(recorded)
    assert budget.available == pytest.approx(0.5 * sum(recorded) - sum(granted))
