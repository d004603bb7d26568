"""Run the cases: build each wrapper, check it once, then time it."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

from bench.cases import (
    GROUPS,
    Counter,
    Group,
    Op,
    Wrap,
    flaky,
    flaky_async,
    succeed,
    succeed_async,
)
from bench.harness import ARG, Settings, time_async, time_sync

__all__ = ["BenchError", "Result", "Results", "run_all", "sleep_zero_ns"]

CALLS_PER_CALL = 3  # on the failure path: two failures, then the success


class BenchError(Exception):
    """A case did not do the work it claims to do (a misconfigured library)."""


@dataclass(frozen=True)
class Result:
    plain: float | None  # ns per call, None when the library cannot run that kind
    aio: float | None


Results = dict[str, dict[str, Result]]  # group key -> case key -> result


def _check(where: str, got: object, counter: Counter | None, calls: int) -> None:
    if got != ARG:
        raise BenchError(f"{where}: returned {got!r}, expected {ARG!r}")
    if counter is not None and counter.calls != CALLS_PER_CALL * calls:
        raise BenchError(
            f"{where}: the operation ran {counter.calls} times for {calls} call(s), "
            f"expected {CALLS_PER_CALL} per call"
        )


def _measure_plain(where: str, group: Group, wrap: Wrap, settings: Settings) -> float:
    counter: Counter | None = None
    op: Op = succeed
    if group.failing:
        op, counter = flaky()
    call = wrap(op)
    _check(where, call(ARG), counter, 1)
    timing = time_sync(call, settings)
    _check(where, ARG, counter, 1 + timing.calls)
    return timing.ns_per_call


async def _measure_async(where: str, group: Group, wrap: Wrap, settings: Settings) -> float:
    counter: Counter | None = None
    op: Op = succeed_async
    if group.failing:
        op, counter = flaky_async()
    call = wrap(op)  # built inside the loop, in case a library binds to it
    _check(where, await call(ARG), counter, 1)
    timing = await time_async(call, settings)
    _check(where, ARG, counter, 1 + timing.calls)
    return timing.ns_per_call


def _best(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def run_all(settings: Settings, progress: bool = True) -> Results:
    results: Results = {}
    for round_ in range(1, settings.rounds + 1):
        for group in GROUPS:
            by_case = results.setdefault(group.key, {})
            for case in group.cases:
                where = f"{group.key}/{case.key}"
                if progress:
                    print(
                        f"  round {round_}/{settings.rounds}: {where}", file=sys.stderr, flush=True
                    )
                plain = aio = None
                if case.plain is not None:
                    plain = _measure_plain(f"{where} (plain)", group, case.plain, settings)
                if case.aio is not None:
                    coro = _measure_async(f"{where} (async)", group, case.aio, settings)
                    aio = asyncio.run(coro)
                old = by_case.get(case.key, Result(None, None))
                by_case[case.key] = Result(_best(old.plain, plain), _best(old.aio, aio))
    return results


def sleep_zero_ns(settings: Settings) -> float:
    """What one ``time.sleep(0)`` costs here (some peers call it even at zero delay)."""
    return time_sync(lambda _: time.sleep(0), settings).ns_per_call
