"""``python -m bench.keyed_bench [--quick]``: KeyedCircuitBreaker with many keys (issue 15).

Two measures, each with its target:

1. **Call cost against the number of keys held.** A successful call through a
   `KeyedCircuitBreaker` (its key function returns the next key of a prepared cycle, so
   choosing a key costs the same in every row) with 1 key, then with 1,000 and 100,000 keys
   held, each called in a random order (every call a different key, the cache-hostile case),
   in turn (the order they were added), and one key called again and again among 100,000
   held. Timed by `bench.harness` (the best loop of several; GC off while timing). Target:
   a call with 100,000 keys held costs <= 1.5x a call with one key. For reference, the same
   rows for a bare ``dict`` look-up of the key (no breaker): what the hardware charges for
   reaching one of 100,000 entries at random, which no map can avoid.
2. **Memory per key and under a stream of new keys**, by `tracemalloc` (the key strings,
   built per call, included): bytes per key held at 100,000 keys whose calls all succeeded,
   whose calls each failed once (a breaker object each), and twice (a breaker, and the
   runner its second call was bound with); then the memory held after
   10,000, 100,000 and 1,000,000 distinct keys through the defaults (``max_keys=10_000``).
   Target: bounded: held after 1,000,000 <= 1.1x held after 100,000 (the map's hash tables
   settle, after the first keys are dropped, at up to twice their size at 10,000 keys).

A key moves in the LRU order on its first call in each grain (a minute by default); the
timed loops rarely cross a minute boundary, so a row shows the cost of that move apart:
one pass over 100,000 keys after a `FakeClock` moved a minute.

``run(quick)`` returns a header line, then Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.harness import Settings, time_async, time_sync
from failsafe import KeyedCircuitBreaker
from failsafe.testing import FakeClock

TARGET = 1.5  # a call with 100,000 keys held costs at most this many times one with 1 key
MEMORY_TARGET = 1.1  # held after the whole stream of keys, over held after a tenth of it
BIG = 100_000


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _keys(n: int) -> list[str]:
    return [f"https://host-{i}.example:443" for i in range(n)]


def _source(keys: list[str], how: str) -> Callable[[], str]:
    """A key function (a C iterator's ``__next__``) whose first ``len(keys)`` answers are
    every key once, and whose later ones come in the order ``how``."""
    if how == "random":
        shuffled = list(keys)
        random.Random(15).shuffle(shuffled)
        return itertools.cycle(shuffled).__next__
    if how == "one":
        return itertools.chain(keys, itertools.repeat(keys[len(keys) // 2])).__next__
    return itertools.cycle(keys).__next__


def _keyed(keys: list[str], how: str) -> KeyedCircuitBreaker:
    """A keyed breaker holding ``keys``, whose calls then take keys in the order ``how``."""
    keyed = KeyedCircuitBreaker(key=_source(keys, how), max_keys=len(keys))
    for _ in keys:
        keyed.call(int)
    assert len(keyed.breakers) == len(keys)
    return keyed


def _ok(arg: int) -> int:
    return arg


async def _aok(arg: int) -> int:
    return arg


CASES = [  # (label, keys held, order)
    ("1 key", 1, "turn"),
    ("1,000 keys, random order", 1_000, "random"),
    ("100,000 keys, random order", BIG, "random"),
    ("100,000 keys, in turn", BIG, "turn"),
    ("1 key called among 100,000 held", BIG, "one"),
]


def _time_calls(settings: Settings) -> dict[str, dict[str, float]]:
    """ns per call for each case: keyed sync, keyed async, and a bare dict look-up."""
    results: dict[str, dict[str, float]] = {label: {} for label, _, _ in CASES}
    for _ in range(settings.rounds):
        one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)
        for label, n, how in CASES:
            keys = _keys(n)
            keyed = _keyed(keys, how)
            call, acall = keyed.call, keyed.call_async
            best = results[label]

            def sync(arg: int, call: Any = call) -> Any:
                return call(_ok, arg)

            def asyn(arg: int, acall: Any = acall) -> Any:
                return acall(_aok, arg)

            table = dict.fromkeys(keys, 0)
            next_key = _source(keys, how)
            for _ in keys:
                next_key()

            def look_up(arg: int, get: Any = table.__getitem__, nxt: Any = next_key) -> Any:
                return get(nxt())

            timings = {
                "sync": time_sync(sync, one_round).ns_per_call,
                "async": asyncio.run(time_async(asyn, one_round)).ns_per_call,
                "dict": time_sync(look_up, one_round).ns_per_call,
            }
            for kind, ns in timings.items():
                best[kind] = min(best.get(kind, ns), ns)
            del keyed, table
            gc.collect()
    return results


def _promotion_ns() -> float:
    """ns per call of the first call of each of 100,000 keys in a new grain (an LRU move)."""
    keys = _keys(BIG)
    clock = FakeClock()
    keyed = KeyedCircuitBreaker(key=_source(keys, "turn"), max_keys=BIG, clock=clock)
    for _ in keys:
        keyed.call(int)
    base = min(_pass(keyed, len(keys)) for _ in range(3))  # the first passes warm up
    moved = []
    for _ in range(2):
        clock.advance(60.0)
        moved.append(_pass(keyed, len(keys)))
    return min(moved) - base


def _pass(keyed: KeyedCircuitBreaker, n: int) -> float:
    call = keyed.call
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(n):
            call(_ok, 7)
        return (time.perf_counter_ns() - start) / n
    finally:
        gc.enable()


def _held(
    n: int, *, fail: bool, max_keys: int | None, marks: tuple[int, ...] = (), calls: int = 1
) -> list[int]:
    """Bytes held after ``calls`` calls of each of ``n`` distinct keys (at each mark too)."""
    counter = itertools.count()
    keyed = KeyedCircuitBreaker(
        key=lambda: f"https://host-{next(counter) // calls}.example:443", max_keys=max_keys
    )

    def down() -> None:
        raise ConnectionError

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held: list[int] = []
        for i in range(1, n + 1):
            for _ in range(calls):
                with contextlib.suppress(ConnectionError):
                    keyed.call(down if fail else int)
            if i in marks:
                gc.collect()
                held.append(tracemalloc.get_traced_memory()[0] - base)
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0] - base)
        return held
    finally:
        tracemalloc.stop()


def run(quick: bool, markdown: bool = True) -> list[str]:
    """Run both measures; return a header line and Markdown tables."""
    settings = Settings(rounds=1, repeats=3, repeat_ns=25_000_000) if quick else Settings()
    stream = 200_000 if quick else 1_000_000
    started = time.perf_counter()
    calls = _time_calls(settings)
    moved = _promotion_ns()
    per_key_ok = _held(BIG, fail=False, max_keys=None)[-1] / BIG
    per_key_failed = _held(BIG, fail=True, max_keys=None)[-1] / BIG
    per_key_twice = _held(BIG, fail=True, max_keys=None, calls=2)[-1] / BIG
    first, tenth, last = _held(stream, fail=False, max_keys=10_000, marks=(10_000, stream // 10))
    elapsed = time.perf_counter() - started

    one = calls["1 key"]
    lines = [
        "### KeyedCircuitBreaker with many keys",
        "",
        f"Python {platform.python_version()}; ns per successful call, the best of"
        f" {settings.rounds} round(s) x {settings.repeats} timed loops of"
        f" ~{settings.repeat_ns // 1_000_000} ms per case (loop and key choice included);"
        f" async calls awaited one after another. Ran in {elapsed:.0f} s.",
        "",
        "| keys held, order of the calls | sync ns | x 1 key | async ns | x 1 key |"
        " dict look-up ns | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, n, _ in CASES:
        row = calls[label]
        ratio, aratio = row["sync"] / one["sync"], row["async"] / one["async"]
        verdict = f"<= {TARGET}x {_verdict(max(ratio, aratio) <= TARGET)}" if n == BIG else ""
        lines.append(
            f"| {label} | {row['sync']:,.0f} | {ratio:.2f} | {row['async']:,.0f} |"
            f" {aratio:.2f} | {row['dict']:,.0f} | {verdict} |"
        )
    lines += [
        f"| first call of each of 100,000 keys in a new minute (its LRU move), extra |"
        f" {moved:,.0f} | | | | | |",
        "",
        "| memory | held | target |",
        "| --- | --- | --- |",
        f"| per key, 100,000 keys whose calls succeeded | {per_key_ok:,.0f} B | |",
        f"| per key, 100,000 keys that each failed once (a breaker each) |"
        f" {per_key_failed:,.0f} B | |",
        f"| per key, 100,000 keys that each failed twice (a breaker and its runner each) |"
        f" {per_key_twice:,.0f} B | |",
        f"| after the first 10,000 distinct keys (defaults: max_keys=10,000) |"
        f" {first / 1e6:,.2f} MB | |",
        f"| after {stream // 10:,} distinct keys | {tenth / 1e6:,.2f} MB | |",
        f"| after {stream:,} distinct keys | {last / 1e6:,.2f} MB |"
        f" <= {MEMORY_TARGET}x the line above {_verdict(last <= MEMORY_TARGET * tenth)} |",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keyed_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round, 200,000-key stream")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
