"""Hedging: a second attempt when the first is slow, the first acceptable outcome wins.

Every scenario runs through ``call`` (attempts on the policy's threads) and ``call_async``
(attempts as tasks), on a `FakeClock`. An attempt's latency is fake time it sleeps; an
attempt that must still be running when the call ends (a loser) also waits on a gate that
the test opens afterwards, so that no scenario depends on which thread runs first.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import pytest

import failsafe
from failsafe import (
    ConfigurationError,
    Failover,
    Hedging,
    Pipeline,
    RetryBudget,
    Timeout,
    TimeoutExceeded,
    UsageError,
)
from failsafe.events import AttemptFailed, Event, HedgeRefused, HedgeStarted
from failsafe.hedging import MAX_HEDGES, MAX_WINDOW, Percentile, abandoned
from failsafe.testing import FakeClock, RecordingListener


@dataclass
class Step:
    """What one attempt does: take fake time, maybe hang until released, then end."""

    takes: float = 0.0
    hangs: bool = False
    returns: Any = None  # None: the string "attempt <n>"
    raises: type[BaseException] | None = None  # raised with the message "attempt <n>"


class Plan:
    """Attempts that behave by their number, as a plain function or a coroutine function."""

    def __init__(self, clock: FakeClock, *steps: Step, default: Step | None = None) -> None:
        self.clock = clock
        self.steps = steps
        self.default = default or Step()
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.targets: list[object] = []
        self.ended: list[int] = []
        self.cancelled: list[int] = []
        self.abandoned: list[bool] = []
        self.gate = threading.Event()
        self.agate: asyncio.Event | None = None

    def _begin(self) -> tuple[int, Step]:
        with self.lock:
            n = len(self.started) + 1
            self.started.append(n)
            self.targets.append(failsafe.current_context().target)
        return n, self.steps[n - 1] if n <= len(self.steps) else self.default

    def _end(self, n: int, step: Step) -> Any:
        with self.lock:
            self.ended.append(n)
        if step.raises is not None:
            raise step.raises(f"attempt {n}")
        return f"attempt {n}" if step.returns is None else step.returns

    def sync(self) -> Any:
        n, step = self._begin()
        if step.takes:
            self.clock.sleep(step.takes)
        if step.hangs:
            assert self.gate.wait(10)
            self.abandoned.append(abandoned())
        return self._end(n, step)

    async def async_(self) -> Any:
        n, step = self._begin()
        try:
            if step.takes:
                await self.clock.sleep_async(step.takes)
            if step.hangs:
                if self.agate is None:
                    self.agate = asyncio.Event()
                await self.agate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        return self._end(n, step)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """The same scenario through ``call`` and ``call_async``."""
    return str(request.param)


def run(kind: str, policy: failsafe.Policy, plan: Plan) -> Any:
    """Call the plan under the policy, through the driver ``kind``."""
    if kind == "sync":
        return policy.call(plan.sync)
    return asyncio.run(policy.call_async(plan.async_))


def settle(policy: Hedging, plan: Plan) -> None:
    """Release the hanging attempts and wait (10 s at most) until the policy's threads end."""
    plan.gate.set()
    idle = threading.Event()
    for _ in range(1000):
        if policy.threads == 0:
            return
        idle.wait(0.01)
    raise AssertionError(f"{policy.threads} attempt(s) still running")


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock for one test."""
    return FakeClock()


@pytest.fixture
def events() -> RecordingListener:
    """Records the events of one test."""
    return RecordingListener()


def test_fast_first_attempt_is_not_hedged(
    kind: str, clock: FakeClock, events: RecordingListener
) -> None:
    """An attempt that ends before the delay is the call's outcome; no hedge starts."""
    plan = Plan(clock, Step(takes=0.5))
    hedging = Hedging(delay=1.0, clock=clock, listeners=[events])
    assert run(kind, hedging, plan) == "attempt 1"
    assert plan.started == [1]
    assert events.events == []
    assert clock.monotonic() == 0.5


def test_slow_first_attempt_loses_to_the_hedge(
    kind: str, clock: FakeClock, events: RecordingListener
) -> None:
    """After the delay a second attempt starts; its outcome wins; the first one loses."""
    discarded: list[Any] = []
    plan = Plan(clock, Step(takes=5, hangs=True))
    hedging = Hedging(
        delay=1.0, clock=clock, listeners=[events], on_discard=discarded.append, name="stock"
    )
    assert run(kind, hedging, plan) == "attempt 2"
    assert events.events == [HedgeStarted(policy="stock", attempt=2, delay=1.0, target=None)]
    settle(hedging, plan)
    if kind == "sync":  # ran to its end on its thread, told it lost; its value discarded
        assert plan.abandoned == [True]
        assert discarded == ["attempt 1"]
    else:  # cancelled, and awaited before the call returned
        assert plan.cancelled == [1]
        assert discarded == []
    assert plan.started == [1, 2]


def test_failure_before_the_delay_starts_the_next_attempt_at_once(
    kind: str, clock: FakeClock, events: RecordingListener
) -> None:
    """A failed attempt does not wait for the delay: the next one starts when it fails."""
    plan = Plan(clock, Step(takes=0.2, raises=ConnectionError))
    hedging = Hedging(delay=1.0, clock=clock, listeners=[events])
    assert run(kind, hedging, plan) == "attempt 2"
    assert events.kinds == ["AttemptFailed", "HedgeStarted"]
    assert events.of_type(HedgeStarted)[0].delay == pytest.approx(0.2)
    assert str(events.of_type(AttemptFailed)[0].outcome.exception) == "attempt 1"
    assert clock.monotonic() == pytest.approx(0.2)  # nothing waited for the delay


def test_no_acceptable_outcome_gives_the_first_attempts_error(kind: str, clock: FakeClock) -> None:
    """When every attempt fails, the first attempt's exception is raised, with a note."""
    plan = Plan(clock, default=Step(raises=ConnectionError))
    hedging = Hedging(delay=1.0, max_hedges=2, clock=clock)
    with pytest.raises(ConnectionError) as info:
        run(kind, hedging, plan)
    assert str(info.value) == "attempt 1"
    assert "none of 3 attempt(s) succeeded" in info.value.__notes__[0]
    assert plan.started == [1, 2, 3]  # 1 + max_hedges, not one more


def test_no_acceptable_result_returns_the_first_and_discards_the_others(
    kind: str, clock: FakeClock
) -> None:
    """Failed results: the first attempt's is returned, the others go to ``on_discard``."""
    discarded: list[Any] = []
    plan = Plan(clock)
    hedging = Hedging(
        delay=1.0,
        max_hedges=2,
        on_result=lambda r: r.startswith("attempt"),
        on_discard=discarded.append,
        clock=clock,
    )
    assert run(kind, hedging, plan) == "attempt 1"
    assert sorted(discarded) == ["attempt 2", "attempt 3"]


def test_failed_result_is_discarded_when_a_hedge_wins(kind: str, clock: FakeClock) -> None:
    """A failed result starts a hedge at once; the hedge wins, the failed result is dropped."""
    discarded: list[Any] = []
    plan = Plan(clock, Step(takes=0.1, returns="busy"))
    hedging = Hedging(
        delay=1.0, on_result=lambda r: r == "busy", on_discard=discarded.append, clock=clock
    )
    assert run(kind, hedging, plan) == "attempt 2"
    assert discarded == ["busy"]


def test_an_exception_the_policy_does_not_handle_is_final_at_once(
    kind: str, clock: FakeClock, events: RecordingListener
) -> None:
    """An exception ``on`` does not match ends the call at once, even while a hedge runs."""
    plan = Plan(clock, Step(takes=5, hangs=True), Step(raises=KeyError))
    hedging = Hedging(delay=1.0, max_hedges=3, clock=clock, listeners=[events])
    with pytest.raises(KeyError, match="attempt 2"):
        run(kind, hedging, plan)
    settle(hedging, plan)
    assert plan.started == [1, 2]  # no third attempt after a final outcome
    assert events.kinds == ["HedgeStarted"]


def test_max_hedges_bounds_the_attempts(kind: str, clock: FakeClock) -> None:
    """Slow attempts get at most ``max_hedges`` hedges, each a delay after the previous one."""
    events = RecordingListener()
    plan = Plan(
        clock,
        Step(takes=5, hangs=True),
        Step(takes=5, hangs=True),
        Step(takes=5, returns="third"),
        default=Step(returns="never"),
    )
    hedging = Hedging(delay=1.0, max_hedges=2, clock=clock, listeners=[events])
    assert run(kind, hedging, plan) == "third"
    settle(hedging, plan)
    assert plan.started == [1, 2, 3]
    assert [e.attempt for e in events.of_type(HedgeStarted)] == [2, 3]


def test_parallel_mode_starts_every_attempt_at_once(kind: str, clock: FakeClock) -> None:
    """``delay=0`` starts the first attempt and all its hedges together."""
    events = RecordingListener()
    plan = Plan(clock, Step(hangs=True), Step(hangs=True), Step(returns="third"))
    hedging = Hedging(delay=0, max_hedges=2, clock=clock, listeners=[events])
    assert run(kind, hedging, plan) == "third"
    settle(hedging, plan)
    assert [(e.attempt, e.delay) for e in events.of_type(HedgeStarted)] == [(2, 0.0), (3, 0.0)]
    assert clock.monotonic() == 0


def test_targets_go_round(kind: str, clock: FakeClock) -> None:
    """Attempt k runs against the next target, read from the call context."""
    events = RecordingListener()
    plan = Plan(clock, Step(takes=5, hangs=True), Step(takes=5, hangs=True), Step())
    hedging = Hedging(delay=1.0, max_hedges=2, targets=["a", "b"], clock=clock, listeners=[events])
    assert run(kind, hedging, plan) == "attempt 3"
    settle(hedging, plan)
    assert plan.targets == ["a", "b", "a"]
    assert [e.target for e in events.of_type(HedgeStarted)] == ["b", "a"]


def test_without_targets_attempts_keep_the_contexts_target(kind: str, clock: FakeClock) -> None:
    """Without targets every attempt sees the target of the enclosing failover."""
    plan = Plan(clock, Step(takes=5, hangs=True))
    hedging = Hedging(delay=1.0, clock=clock)
    assert run(kind, Failover(["w1"], policy=hedging), plan) == "attempt 2"
    settle(hedging, plan)
    assert plan.targets == ["w1", "w1"]


def test_spent_budget_starts_no_hedge_and_waits(
    kind: str, clock: FakeClock, events: RecordingListener
) -> None:
    """With the budget spent, the slow attempt is waited for: no hedge, one HedgeRefused."""
    budget = RetryBudget(ratio=0, min_per_second=0, clock=clock)
    plan = Plan(clock, Step(takes=5, hangs=True))  # hangs until the refusal is reported
    plan.agate = asyncio.Event()  # made now: the refusal may come before attempt 1 hangs

    def release(event: Event) -> None:
        if isinstance(event, HedgeRefused):
            plan.gate.set()
            assert plan.agate is not None
            plan.agate.set()

    hedging = Hedging(delay=1.0, budget=budget, clock=clock, listeners=[events, release])
    assert run(kind, hedging, plan) == "attempt 1"
    settle(hedging, plan)
    assert plan.started == [1]
    assert events.events == [HedgeRefused(policy="hedging", attempt=2, reason="budget")]


def test_a_failure_with_the_budget_spent_reports_the_refused_hedge(
    kind: str, clock: FakeClock, events: RecordingListener
) -> None:
    """A failed attempt with the budget spent emits HedgeRefused and gives its own error."""
    budget = RetryBudget(ratio=0, min_per_second=0, clock=clock)
    plan = Plan(clock, Step(raises=ConnectionError))
    hedging = Hedging(delay=1.0, budget=budget, clock=clock, listeners=[events], name="stock")
    with pytest.raises(ConnectionError, match="attempt 1"):
        run(kind, hedging, plan)
    assert plan.started == [1]
    assert events.kinds == ["AttemptFailed", "HedgeRefused"]
    assert events.of_type(HedgeRefused) == [
        HedgeRefused(policy="stock", attempt=2, reason="budget")
    ]


def test_each_hedge_withdraws_from_the_budget(kind: str, clock: FakeClock) -> None:
    """A hedge takes one retry from the budget; a call records one call."""
    budget = RetryBudget(ratio=0, min_per_second=0.2, window=10, clock=clock)  # 2 retries
    hedging = Hedging(delay=1.0, budget=budget, clock=clock)
    plan = Plan(clock, Step(takes=5, hangs=True))
    assert run(kind, hedging, plan) == "attempt 2"
    settle(hedging, plan)
    assert budget.available == pytest.approx(1.0)


def test_coroutine_function_under_call_is_a_usage_error(clock: FakeClock) -> None:
    """A coroutine function given to ``call`` raises UsageError at once, never hedged."""
    budget = RetryBudget(clock=clock)
    before = budget.available
    hedging = Hedging(delay=0, max_hedges=3, budget=budget, clock=clock)
    runs: list[int] = []

    async def fetch() -> int:
        runs.append(1)
        return 1

    with pytest.raises(UsageError):
        hedging.call(fetch)
    with pytest.raises(UsageError):  # a plain function returning a coroutine: the same
        hedging.call(lambda: fetch())
    settle(hedging, Plan(clock))
    assert runs == []
    assert budget.available == before  # no call counted


def test_abandoned_is_false_outside_a_hedged_attempt(clock: FakeClock) -> None:
    """``abandoned()`` is false outside a hedge, and in a winning attempt."""
    assert abandoned() is False
    hedging = Hedging(delay=1.0, clock=clock)
    assert hedging.call(abandoned) is False


def test_every_thread_busy_runs_the_call_here_unhedged(clock: FakeClock) -> None:
    """With ``max_threads`` attempts running, a call runs on the caller's thread, unhedged."""
    hedging = Hedging(delay=1.0, max_threads=2, clock=clock)
    plan = Plan(clock, Step(takes=5, hangs=True), Step(hangs=True))
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(hedging.call(plan.sync)))
    first.start()
    busy = threading.Event()
    for _ in range(1000):
        if len(plan.started) == 2:
            break
        busy.wait(0.01)
    assert hedging.threads == 2
    assert hedging.call(threading.current_thread) is threading.current_thread()
    plan.gate.set()
    first.join(10)
    assert results == ["attempt 1"] or results == ["attempt 2"]
    settle(hedging, plan)


def test_threads_share_one_policy() -> None:
    """Many threads calling one policy at once each get their own attempt's outcome."""
    hedging = Hedging(delay=1.0, max_threads=16)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for call in range(50):
                assert hedging.call(lambda i=index, c=call: (i, c)) == (index, call)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    settle(hedging, Plan(FakeClock()))


def test_tasks_share_one_policy(clock: FakeClock) -> None:
    """Many tasks hedged at once each get their own winner, and every loser is cancelled."""
    hedging = Hedging(delay=1.0, clock=clock, targets=["first", "hedge"])
    cancelled: list[int] = []

    async def fetch(index: int) -> int:
        if failsafe.current_context().target == "first" and index % 2 == 0:
            try:
                await clock.sleep_async(5)
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(index)
                raise
        return index

    async def main() -> list[int]:
        return await asyncio.gather(*(hedging.call_async(fetch, i) for i in range(40)))

    assert asyncio.run(main()) == list(range(40))
    assert sorted(cancelled) == list(range(0, 40, 2))
    assert hedging.threads == 0


def test_cancelling_the_call_cancels_every_attempt(clock: FakeClock) -> None:
    """An enclosing Timeout that cancels the call cancels its attempts too; none leaks."""
    plan = Plan(clock, default=Step(takes=0.6, hangs=True))
    pipeline = Pipeline(Timeout(1.5, clock=clock), Hedging(delay=0.5, max_hedges=2, clock=clock))
    with pytest.raises(TimeoutExceeded):
        asyncio.run(pipeline.call_async(plan.async_))
    assert sorted(plan.cancelled) == plan.started
    assert plan.started == [1, 2, 3]


def test_no_hedge_starts_past_an_enclosing_deadline(kind: str, clock: FakeClock) -> None:
    """A hedge due after an enclosing Timeout's deadline is not started."""
    events = RecordingListener()
    plan = Plan(clock, Step(takes=5))
    pipeline = Pipeline(
        Timeout(1.0, clock=clock), Hedging(delay=2.0, clock=clock, listeners=[events])
    )
    with pytest.raises(TimeoutExceeded):
        run(kind, pipeline, plan)  # type: ignore[arg-type]
    assert plan.started == [1]
    assert events.events == []


def test_the_first_attempts_latency_feeds_a_percentile(kind: str, clock: FakeClock) -> None:
    """Each call adds its first attempt's latency; the delay follows the percentile."""
    percentile = Percentile(50, window=10, min_samples=3, fallback=9.0)
    hedging = Hedging(delay=percentile, clock=clock)
    for takes in (0.2, 0.4, 0.3):
        assert hedging.delay.delay() == 9.0  # type: ignore[union-attr]
        run(kind, hedging, Plan(clock, Step(takes=takes)))
    assert percentile.samples == 3
    assert percentile.delay() == pytest.approx(0.3)


def test_a_lost_first_attempt_adds_how_long_it_had_run(kind: str, clock: FakeClock) -> None:
    """When a hedge wins, the first attempt's sample is the time it had run: above the delay."""
    percentile = Percentile(50, min_samples=1, fallback=1.0)
    hedging = Hedging(delay=percentile, clock=clock)
    plan = Plan(clock, Step(takes=5, hangs=True))
    assert run(kind, hedging, plan) == "attempt 2"
    settle(hedging, plan)
    assert percentile.samples == 1
    assert percentile.delay() >= 1.0


def test_a_failed_first_attempt_adds_no_sample(kind: str, clock: FakeClock) -> None:
    """A first attempt that failed says nothing about latency: no sample."""
    percentile = Percentile(50, min_samples=1)
    hedging = Hedging(delay=percentile, clock=clock)
    assert run(kind, hedging, Plan(clock, Step(raises=ConnectionError))) == "attempt 2"
    assert percentile.samples == 0


def test_percentile_keeps_its_window_and_floor() -> None:
    """A percentile keeps the last ``window`` latencies and never goes below ``minimum``."""
    percentile = Hedging.percentile(100, window=3, min_samples=2, fallback=0.5, minimum=0.01)
    assert percentile.delay() == 0.5
    for seconds in (9.0, 0.001, 0.002, 0.003):
        percentile.record(seconds)
    assert percentile.samples == 3  # 9.0 forgotten
    assert percentile.delay() == 0.01  # the max of the window, 0.003, raised to the floor
    percentile.record(float("nan"))
    percentile.record(-1.0)
    assert percentile.samples == 3


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"max_hedges": 0}, "max_hedges"),
        ({"max_hedges": MAX_HEDGES + 1}, "max_hedges"),
        ({"delay": -1}, "delay"),
        ({"delay": float("inf")}, "delay"),
        ({"targets": []}, "targets"),
        ({"targets": "ab"}, "targets"),
        ({"max_threads": 1}, "max_threads"),
        ({"max_threads": 5000}, "max_threads"),
        ({"budget": 0.2}, "budget"),
        ({"on": 3}, "on"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any], option: str) -> None:
    """A bad option fails at construction with ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as info:
        Hedging(**options)
    assert info.value.option == option


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"percent": 0}, "percent"),
        ({"percent": 101}, "percent"),
        ({"window": 0}, "window"),
        ({"window": MAX_WINDOW + 1}, "window"),
        ({"window": 10, "min_samples": 11}, "min_samples"),
        ({"min_samples": 0}, "min_samples"),
        ({"fallback": -0.1}, "fallback"),
    ],
)
def test_bad_percentile_options_are_refused(options: dict[str, Any], option: str) -> None:
    """A bad percentile option fails at construction, named."""
    with pytest.raises(ConfigurationError) as info:
        Percentile(**options)
    assert info.value.option == option


def test_defaults_hedge_once_at_the_95th_percentile() -> None:
    """``Hedging()`` works: one hedge, at the p95 of recent latencies, 0.1 s until known."""
    hedging = Hedging()
    assert hedging.max_hedges == 1
    assert isinstance(hedging.delay, Percentile)
    assert (hedging.delay.percent, hedging.delay.delay()) == (95, 0.1)
    assert hedging.call(lambda: "ok") == "ok"
    assert "up to 1 more attempt(s) after the p95" in repr(hedging)
    assert "all at once" in Hedging(delay=0).describe()
    assert "across 2 targets" in Hedging(targets=["a", "b"]).describe()


def test_hedging_under_fake_time_uses_the_fake_clock() -> None:
    """A policy on the default clock waits on fake time inside ``fake_time()``."""
    from failsafe.testing import fake_time

    hedging = Hedging(delay=1.0)
    with fake_time() as fake:
        start = fake.monotonic()
        plan = Plan(fake, Step(takes=5, hangs=True))
        assert hedging.call(plan.sync) == "attempt 2"
        settle(hedging, plan)
        assert fake.monotonic() - start == 5
        plan = Plan(fake, Step(takes=5, hangs=True))
        assert asyncio.run(hedging.call_async(plan.async_)) == "attempt 2"
