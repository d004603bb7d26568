"""``python -m bench.chaos_bench [--quick]``: what a switched-off Chaos policy costs (issue 17).

A chaos policy is meant to stay in production code, switched off, until a rehearsal
switches it on; so it must cost (next to) nothing while off. Measured: ns per successful
call of a plain (and an async) function through

- ``Pipeline(Retry())``, the baseline;
- ``Pipeline(Retry(), Chaos.fault(0.1, ConnectionError))``, switched off for good
  (``enabled=False``, the default; an environment variable that says off is the same);
- the same with a callable switch (a feature flag) that answers ``False``;
- the same switched on at rate 0 (it draws a random number per call and injects nothing),
  for reference.

Timed by `bench.harness` (the best loop of several; GC off while timing), the cases
interleaved round by round. Target: a Chaos policy switched off for good costs at most 50 ns
per call over the same pipeline without it, sync and async.

``run(quick)`` returns a header line, then a Markdown table and one line per target.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from bench.harness import ARG, Settings, time_async, time_sync
from failsafe import Chaos, Pipeline, Policy, Retry

TARGET_NS = 50.0  # a switched-off Chaos costs at most this much per call


def _ok(arg: int) -> int:
    return arg


async def _aok(arg: int) -> int:
    return arg


def _flag() -> bool:
    return False


CASES: list[tuple[str, Callable[[], Policy]]] = [
    ("Pipeline(Retry())", lambda: Pipeline(Retry())),
    (
        "Pipeline(Retry(), Chaos.fault(0.1, ConnectionError)), switched off (enabled=False)",
        lambda: Pipeline(Retry(), Chaos.fault(0.1, ConnectionError)),
    ),
    (
        "the same, with a callable switch answering False (a feature flag)",
        lambda: Pipeline(Retry(), Chaos.fault(0.1, ConnectionError, enabled=_flag)),
    ),
    (
        "the same, switched on at rate 0 (one draw per call, nothing injected)",
        lambda: Pipeline(Retry(), Chaos.fault(0, ConnectionError, enabled=True)),
    ),
]
BASE, OFF, FLAG, DRAW = (label for label, _ in CASES)


def _measure(settings: Settings) -> dict[str, dict[str, float]]:
    """ns per call for each case, sync and async: the best over ``settings.rounds`` rounds."""
    best: dict[str, dict[str, float]] = {label: {} for label, _ in CASES}
    one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)
    for _ in range(settings.rounds):
        for label, build in CASES:
            policy = build()
            call, acall = policy.call, policy.call_async

            def sync(arg: int, call: Any = call) -> Any:
                return call(_ok, arg)

            def asyn(arg: int, acall: Any = acall) -> Any:
                return acall(_aok, arg)

            if sync(ARG) != ARG or asyncio.run(asyn(ARG)) != ARG:
                raise RuntimeError(f"{label}: the call did not return its argument")
            timings = {
                "sync": time_sync(sync, one_round).ns_per_call,
                "async": asyncio.run(time_async(asyn, one_round)).ns_per_call,
            }
            for kind, ns in timings.items():
                best[label][kind] = min(best[label].get(kind, ns), ns)
    return best


def run(quick: bool) -> list[str]:
    """Time the cases; return a header line, a Markdown table and the target's verdict."""
    settings = (
        Settings(rounds=2, repeats=3, repeat_ns=20_000_000)
        if quick
        else Settings(rounds=5, repeats=5, repeat_ns=50_000_000)
    )
    started = time.perf_counter()
    best = _measure(settings)
    elapsed = time.perf_counter() - started
    base = best[BASE]
    lines = [
        f"### Chaos switched off: the cost per call (Python {platform.python_version()},"
        f" failsafe-kit {version('failsafe-kit')}; ns per successful call, the best of"
        f" {settings.rounds} rounds x {settings.repeats} timed loops of"
        f" ~{settings.repeat_ns // 1_000_000} ms per case, cases interleaved; async calls"
        f" awaited one after another; ran in {elapsed:.0f} s)",
        "",
        "| pipeline | sync ns | extra sync ns | async ns | extra async ns |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, _ in CASES:
        row = best[label]
        extra = (
            ("", "")
            if label == BASE
            else (f"{row['sync'] - base['sync']:+,.0f}", f"{row['async'] - base['async']:+,.0f}")
        )
        lines.append(
            f"| {label} | {row['sync']:,.0f} | {extra[0]} | {row['async']:,.0f} | {extra[1]} |"
        )
    off_sync = best[OFF]["sync"] - base["sync"]
    off_async = best[OFF]["async"] - base["async"]
    ok = max(off_sync, off_async) <= TARGET_NS
    lines += [
        "",
        f"- {'PASS' if ok else 'FAIL'}: a Chaos policy switched off costs at most"
        f" {TARGET_NS:.0f} ns per call: {off_sync:+.1f} ns sync, {off_async:+.1f} ns async"
        f" (switched off for good, it binds to the next stage itself); with a callable"
        f" switch, {best[FLAG]['sync'] - base['sync']:+.0f} ns sync,"
        f" {best[FLAG]['async'] - base['async']:+.0f} ns async (no target)",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of short loops (~10 s)")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
