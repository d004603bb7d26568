"""``python -m bench.config_bench [--quick]``: what a pipeline from configuration costs (issue 18).

A pipeline loaded with `failsafe.config` is a `ConfiguredPipeline`: a stable object whose
options a reload can swap while the program runs. Measured:

- ns per successful call (plain and async) of ``Pipeline(Retry(), CircuitBreaker(),
  Timeout(2))`` built in code, and of the same pipeline loaded from a TOML file; the ratio
  of the two. Target: the configured pipeline costs at most 1.05x the one built in code.
- the time of one reload of a 10-pipeline file in which one pipeline changed (read, parse,
  check, build, swap), the best of several.

Timed by `bench.harness` (the best loop of several; GC off while timing), the cases
interleaved round by round.

``run(quick)`` returns a header line, then a Markdown table and one line per target.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.harness import ARG, Settings, time_async, time_sync
from failsafe import CircuitBreaker, Pipeline, Policy, Retry, Timeout
from failsafe.config import load

RATIO_TARGET = 1.05  # a configured pipeline costs at most this times the one built in code

PIPELINE_TOML = """
[pipelines.warehouse]
retry = {}
circuit_breaker = {}
timeout = {seconds = 2.0}
"""


def _ok(arg: int) -> int:
    return arg


async def _aok(arg: int) -> int:
    return arg


def _ten_pipelines(changed: int) -> str:
    """A file of 10 pipelines; ``changed`` sets the first pipeline's timeout."""
    parts = []
    for n in range(10):
        seconds = 2.0 + changed if n == 0 else 2.0
        parts.append(
            f"""
[pipelines.service{n}]
fallback = {{value = "unknown"}}
retry = {{attempts = 4, backoff = {{kind = "exponential", initial = 0.05, maximum = 1.0}}}}
circuit_breaker = {{threshold = 5, reset_timeout = 30}}
bulkhead = {{max_concurrent = 20, max_queued = 10}}
timeout = {{seconds = {seconds}}}
"""
        )
    return "".join(parts)


def _cases(folder: Path) -> list[tuple[str, Callable[[], Policy]]]:
    path = folder / "pipeline.toml"
    path.write_text(PIPELINE_TOML)
    return [
        (
            "Pipeline(Retry(), CircuitBreaker(), Timeout(2.0)) built in code",
            lambda: Pipeline(Retry(), CircuitBreaker(), Timeout(2.0), name="warehouse"),
        ),
        (
            "the same pipeline from a TOML file (config.load(...)['warehouse'])",
            lambda: load(path, environ={})["warehouse"],
        ),
    ]


def _measure(settings: Settings, folder: Path) -> dict[str, dict[str, float]]:
    """ns per call for each case, sync and async: the best over ``settings.rounds`` rounds."""
    cases = _cases(folder)
    best: dict[str, dict[str, float]] = {label: {} for label, _ in cases}
    one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)
    for _ in range(settings.rounds):
        for label, build in cases:
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


def _reload_ms(folder: Path, times: int) -> float:
    """The best time of one reload of a 10-pipeline file in which one pipeline changed."""
    path = folder / "ten.toml"
    path.write_text(_ten_pipelines(0))
    config = load(path, environ={})
    best = float("inf")
    for n in range(1, times + 1):
        path.write_text(_ten_pipelines(n))
        started = time.perf_counter()
        changed = config.reload()
        best = min(best, time.perf_counter() - started)
        if changed != ("service0",):
            raise RuntimeError(f"the reload changed {changed}, not service0 alone")
    return best * 1000


def run(quick: bool) -> list[str]:
    """Time the cases; return a header line, a Markdown table and the targets' verdicts."""
    settings = (
        Settings(rounds=2, repeats=3, repeat_ns=20_000_000)
        if quick
        else Settings(rounds=5, repeats=5, repeat_ns=50_000_000)
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        best = _measure(settings, folder)
        reload_ms = _reload_ms(folder, 10 if quick else 50)
    elapsed = time.perf_counter() - started
    (code, _), (configured, _) = best.items()
    lines = [
        f"### Pipelines from configuration: the cost per call (Python"
        f" {platform.python_version()}, failsafe-kit {version('failsafe-kit')}; ns per"
        f" successful call, the best of {settings.rounds} rounds x {settings.repeats} timed"
        f" loops of ~{settings.repeat_ns // 1_000_000} ms per case, cases interleaved; async"
        f" calls awaited one after another; ran in {elapsed:.0f} s)",
        "",
        "| pipeline | sync ns | async ns |",
        "| --- | --- | --- |",
    ]
    for label, row in best.items():
        lines.append(f"| {label} | {row['sync']:,.0f} | {row['async']:,.0f} |")
    ratios = {kind: best[configured][kind] / best[code][kind] for kind in ("sync", "async")}
    ok = max(ratios.values()) <= RATIO_TARGET
    lines += [
        "",
        f"- {'PASS' if ok else 'FAIL'}: a configured pipeline costs at most"
        f" {RATIO_TARGET:.2f}x the same pipeline built in code: {ratios['sync']:.3f}x sync,"
        f" {ratios['async']:.3f}x async",
        f"- one reload of a 10-pipeline file (one pipeline changed): {reload_ms:.2f} ms"
        " (read, parse, check, build, swap; no target)",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.config_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of short loops (~5 s)")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
