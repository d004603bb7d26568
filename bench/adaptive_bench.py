"""``python -m bench.adaptive_bench [--quick]``: adaptive concurrency in an overload (issue 17).

A dependency with ``C`` workers serves requests first come, first served: each takes
``base`` seconds of work (+-20%, from a seeded random source) once a worker is free, so its
latency is the time queued plus the work. Callers arrive on a fixed schedule at twice what
it can serve, each with a deadline: an answer after the deadline is not goodput (the caller
has given up, but the dependency did the work all the same, as a real one does).

The same schedule runs through:

- ``AdaptiveConcurrency()``, the defaults (the gradient algorithm);
- ``Bulkhead(max_concurrent=20 * C)``: a fixed limit set too high, as one set by guesswork;
- no limit at all;
- for reference, ``AdaptiveConcurrency(algorithm=AIMD(target_latency=2 * base))``, the
  loss-based algorithm given a latency target.

Everything runs on fake time, deterministically: asyncio tasks on an event loop whose clock
is a `failsafe.testing.FakeClock` (the loop advances it to the next timer instead of
waiting), and the policies are the real ones, called through ``call_async``. Goodput is the
calls answered within their deadline per second of the schedule; p99 is over the calls that
were let through (shed calls have no latency). Targets (issue 17): the adaptive limit's
goodput is at least 2x the fixed limit's, and its p99 at most 0.5x.

``run(quick)`` returns a header line, then Markdown lines.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import platform
import random
import selectors
import sys
from collections.abc import Callable, Coroutine, Mapping
from importlib.metadata import version
from typing import Any

import attrs

from failsafe import AdaptiveConcurrency, Bulkhead, Policy, PolicyRejected
from failsafe.adaptive_concurrency import AIMD
from failsafe.testing import FakeClock

GOODPUT_TARGET = 2.0  # adaptive goodput / fixed goodput, at least
P99_TARGET = 0.5  # adaptive p99 / fixed p99, at most


class _FakeTimeSelector(selectors.BaseSelector):
    """A selector that, when nothing is ready, moves the fake clock to the next timer.

    The loop asks to wait ``timeout`` seconds (until its next timer is due): the clock
    advances by that much at once. Real file descriptors (the loop's self-pipe) are still
    polled, without waiting.
    """

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("the simulation stalled: no timer is scheduled and nothing is ready")
        self._clock.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on a `FakeClock`: ``loop.time()`` is the clock's, and the loop
    never waits (each wait for a timer advances the clock to it)."""

    def __init__(self, clock: FakeClock) -> None:
        self._fake_clock = clock
        super().__init__(_FakeTimeSelector(clock))

    def time(self) -> float:
        return self._fake_clock.monotonic()


def run_on_fake_time(clock: FakeClock, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` to its end on a `FakeTimeLoop` over ``clock``."""
    loop = FakeTimeLoop(clock)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class Dependency:
    """``workers`` workers, first come first served; each request takes ``base`` +-20%."""

    def __init__(self, workers: int, base: float, rng: random.Random) -> None:
        self._free = [0.0] * workers  # when each worker is next free (a heap)
        self._base = base
        self._rng = rng
        self.in_flight = 0  # requests queued or being served
        self.peak = 0

    async def request(self) -> str:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, heapq.heappop(self._free))  # the earliest free worker
        done = start + self._base * (0.8 + 0.4 * self._rng.random())
        heapq.heappush(self._free, done)
        answered = loop.create_future()
        loop.call_at(done, answered.set_result, "ok")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            result: str = await answered
        finally:
            self.in_flight -= 1
        return result


@attrs.frozen(kw_only=True)
class Scenario:
    """An overload: ``load`` times what ``workers`` workers of ``base`` seconds can serve."""

    workers: int = 10
    base: float = 0.05
    load: float = 2.0
    deadline: float = 0.25
    duration: float = 60.0
    seed: int = 17

    @property
    def capacity(self) -> float:
        """Calls per second the dependency serves."""
        return self.workers / self.base


@attrs.frozen(kw_only=True)
class Outcome:
    """What one policy made of a scenario."""

    offered: int
    admitted: int
    good: int
    p50: float
    p99: float
    goodput: float
    limit_min: int
    limit_max: int
    limit_end: int
    peak_in_flight: int


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def simulate(scenario: Scenario, build: Callable[[FakeClock], Policy | None]) -> Outcome:
    """Run ``scenario`` with the policy ``build(clock)`` makes (``None``: no limit)."""
    clock = FakeClock()
    policy = build(clock)
    dependency = Dependency(scenario.workers, scenario.base, random.Random(scenario.seed))
    latencies: list[float] = []
    good = 0
    limits: list[int] = []
    rate = scenario.load * scenario.capacity
    offered = int(scenario.duration * rate)

    async def caller() -> None:
        nonlocal good
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if policy is None:
                await dependency.request()
            else:
                await policy.call_async(dependency.request)
        except PolicyRejected:  # ConcurrencyLimited, BulkheadFull: shed, never ran
            return
        latency = loop.time() - started
        latencies.append(latency)
        if latency <= scenario.deadline:
            good += 1

    def sample_limit() -> None:
        if isinstance(policy, AdaptiveConcurrency):
            limits.append(policy.limit)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        def arrive() -> None:
            task = loop.create_task(caller())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        start = loop.time()
        for i in range(offered):
            loop.call_at(start + i / rate, arrive)
        for second in range(int(scenario.duration) + 1):
            loop.call_at(start + second, sample_limit)
        finished = loop.create_future()
        loop.call_at(start + scenario.duration, finished.set_result, None)
        await finished
        while tasks:  # the calls still in flight at the end of the schedule
            await asyncio.gather(*list(tasks))

    run_on_fake_time(clock, main)
    ordered = sorted(latencies)
    limit_end = policy.limit if isinstance(policy, AdaptiveConcurrency) else 0
    return Outcome(
        offered=offered,
        admitted=len(latencies),
        good=good,
        p50=_percentile(ordered, 0.50),
        p99=_percentile(ordered, 0.99),
        goodput=good / scenario.duration,
        limit_min=min(limits, default=0),
        limit_max=max(limits, default=0),
        limit_end=limit_end,
        peak_in_flight=dependency.peak,
    )


def cases(scenario: Scenario) -> dict[str, Callable[[FakeClock], Policy | None]]:
    """The policies compared, by the label the table shows."""
    c = scenario.workers
    return {
        "AdaptiveConcurrency()": lambda clock: AdaptiveConcurrency(clock=clock),
        f"Bulkhead(max_concurrent={20 * c})": lambda clock: Bulkhead(
            max_concurrent=20 * c, clock=clock
        ),
        "no limit": lambda clock: None,
        f"AdaptiveConcurrency(AIMD(target_latency={2 * scenario.base:g}))": lambda clock: (
            AdaptiveConcurrency(algorithm=AIMD(target_latency=2 * scenario.base), clock=clock)
        ),
    }


def compare(scenario: Scenario) -> dict[str, Outcome]:
    """Every case of `cases` on the same scenario."""
    return {label: simulate(scenario, build) for label, build in cases(scenario).items()}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def run(quick: bool) -> list[str]:
    scenario = Scenario(duration=20.0 if quick else 60.0)
    results = compare(scenario)
    header = (
        f"Adaptive concurrency under overload (fake time, asyncio on a FakeClock loop): "
        f"{scenario.workers} workers x {scenario.base * 1000:g} ms (+-20%) = "
        f"{scenario.capacity:g} calls/s, offered {scenario.load:g}x = "
        f"{scenario.load * scenario.capacity:g} calls/s for {scenario.duration:g} s, "
        f"deadline {scenario.deadline * 1000:g} ms; failsafe-kit {version('failsafe-kit')}, "
        f"Python {platform.python_version()}"
    )
    lines = [
        header,
        "| policy | admitted | goodput (calls/s within deadline) | p50 | p99 (admitted) "
        "| limit (min..max each second, end) | peak at the dependency |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for label, out in results.items():
        limit = (
            f"{out.limit_min}..{out.limit_max}, {out.limit_end}"
            if label.startswith("AdaptiveConcurrency")
            else "-"
        )
        lines.append(
            f"| `{label}` | {out.admitted:,} of {out.offered:,} | {out.goodput:,.1f} "
            f"| {_ms(out.p50)} | {_ms(out.p99)} | {limit} | {out.peak_in_flight:,} |"
        )
    adaptive, fixed = list(results.values())[:2]
    ratio = adaptive.goodput / fixed.goodput if fixed.goodput else float("inf")
    p99_ratio = adaptive.p99 / fixed.p99
    verdict = "PASS" if ratio >= GOODPUT_TARGET else "FAIL"
    lines.append("")
    lines.append(
        f"- {verdict}: goodput {adaptive.goodput:,.1f} vs {fixed.goodput:,.1f} calls/s = "
        f"{ratio:,.1f}x the fixed limit's (target >= {GOODPUT_TARGET:g}x)"
    )
    verdict = "PASS" if p99_ratio <= P99_TARGET else "FAIL"
    lines.append(
        f"- {verdict}: p99 {_ms(adaptive.p99)} vs {_ms(fixed.p99)} = {p99_ratio:.2f}x the "
        f"fixed limit's (target <= {P99_TARGET:g}x)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adaptive_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 20 s schedule instead of 60 s")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
