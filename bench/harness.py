"""Timing: nanoseconds per call of a plain or async callable, best of several repeats.

Each repeat times a loop of ``n`` calls with `time.perf_counter_ns`; ``n`` is scaled once so
that a repeat lasts about ``repeat_ns``. The loop's own cost is not subtracted (the bare-call
rows show it). The garbage collector is collected before and disabled during each repeat, as
`timeit` does. Async loops give the event loop one turn every 256 calls, outside the timed
part.

The runner measures the whole suite several times (rounds), so that a case's repeats are
spread over the run: a burst of load from another process then spoils one round of a case,
not all of them. The reported figure is the *best* (lowest) repeat of all rounds, the one
least disturbed by the rest of the machine, which is what an overhead comparison wants.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from time import perf_counter_ns
from typing import Any

__all__ = ["ARG", "AsyncCall", "Settings", "SyncCall", "Timing", "time_async", "time_sync"]

ARG = 7
"""The one positional argument every benchmarked call receives (and must return)."""

SyncCall = Callable[[int], Any]
AsyncCall = Callable[[int], Awaitable[Any]]

_CALIBRATE_NS = 10_000_000  # grow n until one loop takes this long, then scale to repeat_ns
_ASYNC_CHUNK = 256


@dataclass(frozen=True)
class Settings:
    rounds: int = 3  # the whole suite is measured this many times, one case after another
    repeats: int = 3  # timed loops per case and round
    repeat_ns: int = 50_000_000  # the length of one timed loop


@dataclass(frozen=True)
class Timing:
    ns_per_call: float
    calls: int  # every call the harness made (warm-up and calibration included)


@contextmanager
def _gc_paused() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _loop_sync(call: SyncCall, n: int) -> int:
    arg = ARG
    start = perf_counter_ns()
    for _ in repeat(None, n):
        call(arg)
    return perf_counter_ns() - start


async def _loop_async(call: AsyncCall, n: int) -> int:
    # Yield to the event loop between chunks (outside the timed part), as a real program
    # does: otherwise cancelled timer handles (asyncio.timeout's) pile up in the loop's heap.
    arg = ARG
    elapsed = 0
    while n > 0:
        chunk = min(n, _ASYNC_CHUNK)
        n -= chunk
        start = perf_counter_ns()
        for _ in repeat(None, chunk):
            await call(arg)
        elapsed += perf_counter_ns() - start
        await asyncio.sleep(0)
    return elapsed


def _next_n(n: int, elapsed: int, target: int) -> int:
    return max(1, round(n * target / max(elapsed, 1)))


def time_sync(call: SyncCall, settings: Settings) -> Timing:
    """Warm up and calibrate on ``call``, then return the best of ``settings.repeats``."""
    calls, n = 0, 1
    while True:  # warm-up and calibration: n = 1, 2, 4, ... until a loop takes ~10 ms
        elapsed = _loop_sync(call, n)
        calls += n
        if elapsed >= _CALIBRATE_NS:
            break
        n *= 2
    n = _next_n(n, elapsed, settings.repeat_ns)
    best = None
    for _ in range(settings.repeats):
        with _gc_paused():
            elapsed = _loop_sync(call, n)
        calls += n
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return Timing(best / n, calls)


async def time_async(call: AsyncCall, settings: Settings) -> Timing:
    """As `time_sync`, awaiting each call in turn (run it in one event loop per case)."""
    calls, n = 0, 1
    while True:
        elapsed = await _loop_async(call, n)
        calls += n
        if elapsed >= _CALIBRATE_NS:
            break
        n *= 2
    n = _next_n(n, elapsed, settings.repeat_ns)
    best = None
    for _ in range(settings.repeats):
        with _gc_paused():
            elapsed = await _loop_async(call, n)
        calls += n
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return Timing(best / n, calls)
