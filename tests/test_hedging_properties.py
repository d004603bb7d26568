"""Hedging's promises, for any mix of fast, slow, failing and final attempts (Hypothesis).

- it never returns a rejected (unacceptable) outcome while an acceptable one is among the
  attempts that finished: a rejected outcome comes back only once every attempt started
  has ended, none acceptable, and it is the first attempt's;
- it never starts more than ``1 + max_hedges`` attempts;
- a shared budget bounds the hedges of all calls together;
- a percentile delay is the nearest-rank percentile of the last ``window`` latencies.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from failsafe import Hedging, RetryBudget
from failsafe.events import HedgeStarted
from failsafe.hedging import Percentile
from failsafe.testing import FakeClock, RecordingListener

KINDS = ("ok", "transient", "final", "bad")  # bad: a result that on_result rejects
ACCEPTABLE = {"ok", "final"}

step = st.tuples(st.sampled_from([0.0, 0.5, 2.0, 5.0]), st.sampled_from(KINDS))


class Attempts:
    """Attempts that take fake time, then end as their step says; each records its end."""

    def __init__(self, clock: FakeClock, steps: list[tuple[float, str]]) -> None:
        self.clock = clock
        self.steps = steps
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.ended: dict[int, str] = {}

    def _begin(self) -> tuple[int, float, str]:
        with self.lock:
            n = len(self.started) + 1
            self.started.append(n)
        takes, kind = self.steps[(n - 1) % len(self.steps)]
        return n, takes, kind

    def _end(self, n: int, kind: str) -> str:
        with self.lock:
            self.ended[n] = kind
        if kind == "transient":
            raise ConnectionError(f"attempt {n}")
        if kind == "final":
            raise KeyError(f"attempt {n}")
        return f"{kind} {n}"

    def sync(self) -> str:
        n, takes, kind = self._begin()
        if takes:
            self.clock.sleep(takes)
        return self._end(n, kind)

    async def async_(self) -> str:
        n, takes, kind = self._begin()
        if takes:
            await self.clock.sleep_async(takes)
        return self._end(n, kind)


def call(driver: str, hedging: Hedging, attempts: Attempts) -> tuple[str, str, int]:
    """Run one call; return (kind of the outcome, the attempt number it names, and a snapshot).

    The snapshot is taken the moment the call returns: how many attempts had ended.
    """
    try:
        if driver == "sync":
            value: Any = hedging.call(attempts.sync)
        else:
            value = asyncio.run(hedging.call_async(attempts.async_))
        kind, number = str(value).split()
    except ConnectionError as exc:
        kind, number = "transient", str(exc).split()[1]
    except KeyError as exc:
        kind, number = "final", str(exc.args[0]).split()[1]
    with attempts.lock:
        ended = len(attempts.ended)
    return kind, number, ended


def settle(hedging: Hedging) -> None:
    """Wait (10 s at most) until the policy's threads are all idle."""
    pause = threading.Event()
    for _ in range(1000):
        if hedging.threads == 0:
            return
        pause.wait(0.01)
    raise AssertionError("hedged attempts still running")


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=4),
    delay=st.sampled_from([0.0, 1.0, 3.0]),
    max_hedges=st.integers(1, 3),
    driver=st.sampled_from(["sync", "async"]),
)
def test_a_rejected_outcome_only_when_no_finished_attempt_is_acceptable(
    steps: list[tuple[float, str]], delay: float, max_hedges: int, driver: str
) -> None:
    """A rejected outcome means: every attempt started has ended, none acceptable."""
    clock = FakeClock()
    attempts = Attempts(clock, steps)
    hedging = Hedging(
        delay=delay,
        max_hedges=max_hedges,
        on_result=lambda r: str(r).startswith("bad"),
        clock=clock,
    )
    kind, number, ended_then = call(driver, hedging, attempts)
    settle(hedging)
    assert len(attempts.started) <= 1 + max_hedges
    assert attempts.ended[int(number)] == kind  # the outcome is an attempt's own
    if kind not in ACCEPTABLE:
        assert ended_then == len(attempts.started)  # nothing was left running
        assert not ACCEPTABLE & set(attempts.ended.values())
        assert number == "1"  # the first attempt's outcome, as Polly


@settings(max_examples=60, deadline=None)
@given(
    calls=st.integers(1, 30),
    ratio=st.sampled_from([0.1, 0.25, 0.5]),
    max_hedges=st.integers(1, 3),
    driver=st.sampled_from(["sync", "async"]),
)
def test_a_shared_budget_bounds_the_hedges(
    calls: int, ratio: float, max_hedges: int, driver: str
) -> None:
    """Over many calls that all want every hedge, hedges stay within ratio x calls."""
    clock = FakeClock()
    budget = RetryBudget(ratio=ratio, min_per_second=0, window=60, clock=clock)
    events = RecordingListener()
    hedging = Hedging(
        delay=1.0, max_hedges=max_hedges, budget=budget, clock=clock, listeners=[events]
    )
    for made in range(1, calls + 1):
        attempts = Attempts(clock, [(0.0, "transient")])
        assert call(driver, hedging, attempts)[0] == "transient"
        assert len(attempts.started) <= 1 + max_hedges
        # at every point, the hedges so far are within the budget of the calls so far
        assert len(events.of_type(HedgeStarted)) <= ratio * made + 1e-9
    settle(hedging)
    assert len(events.of_type(HedgeStarted)) == math.floor(ratio * calls + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    latencies=st.lists(st.floats(0, 10, allow_nan=False), max_size=60),
    percent=st.floats(1, 100),
    window=st.integers(1, 30),
    needed=st.integers(1, 30),
)
def test_percentile_is_the_nearest_rank_of_the_window(
    latencies: list[float], percent: float, window: int, needed: int
) -> None:
    """The delay is the nearest-rank percentile of the last ``window`` latencies."""
    needed = min(needed, window)
    percentile = Percentile(percent, window=window, min_samples=needed, fallback=7.0, minimum=0)
    for latency in latencies:
        percentile.record(latency)
    kept = sorted(latencies[-window:]) if latencies else []
    assert percentile.samples == len(kept) <= window
    if len(kept) < needed:
        assert percentile.delay() == 7.0
    else:
        rank = max(1, math.ceil(percent / 100 * len(kept)))
        assert percentile.delay() == kept[rank - 1]
