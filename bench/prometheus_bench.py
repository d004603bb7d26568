"""``python -m bench.prometheus_bench [--quick]``: what recording a retry in Prometheus costs.

failsafe's ``PrometheusListener`` against stamina's Prometheus instrumentation
(``stamina.instrumentation.PrometheusOnRetryHook``), recording the same thing: a call that
failed once and is retried. For such a call failsafe's ``Retry`` emits two events
(``AttemptFailed``, ``RetryScheduled``) and the listener records two counters and a
histogram, each labelled with the policy; stamina's retry loop builds a ``RetryDetails`` and
calls its hook, which records one counter, ``stamina_retries_total``, labelled with the
callable, the retry's number and the error's type. Timed, per retried call:

1. **the recorder alone** (the verdict): failsafe's listener given the two events;
   stamina's hook given its details (what ``before_sleep`` runs per hook: the call, then a
   check whether it returned a context manager).
2. **the recorder and what its library builds for it**: failsafe's ``_emit`` of the two
   events (built, then delivered, as ``Retry`` does; none are built without a listener);
   stamina's ``RetryDetails`` built, then its hook (stamina builds the details on every
   retry, hook or not).
3. **whole calls**, for context: a function failing every other call, through
   ``Retry(attempts=2, backoff=Backoff.none())`` without and with the listener, and through
   ``stamina.retry(on=ConnectionError, attempts=2, wait_*=0)`` without and with the hook.
   stamina's retry goes through tenacity, which calls ``time.sleep(0)``: its calls are far
   slower and noisier than its hook, so that difference is shown, not judged.

Timed by `bench.harness` (the best loop of several; GC off while timing), the cases
interleaved round by round. Target: failsafe's listener costs at most as much per retried
call as stamina's Prometheus hook (a ratio <= 1.0x).

``run(quick)`` returns a header line, then a Markdown table and the target's verdict.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib.metadata import version
from typing import Any

import stamina
import stamina.instrumentation
from prometheus_client import CollectorRegistry
from stamina.instrumentation import RetryDetails

from bench.harness import ARG, Settings, time_sync
from failsafe import Backoff, Outcome, Retry
from failsafe.events import AttemptFailed, RetryScheduled, _emit
from failsafe.prometheus import PrometheusListener

TARGET_RATIO = 1.0  # failsafe's listener over stamina's hook, per failed-then-retried call

_OUTCOME = Outcome(exception=ConnectionError("down"))
_CAUSE = ConnectionError("down")


def _flaky() -> Callable[[int], int]:
    """A function failing every other call: each retried call fails once, then succeeds."""
    state = [False]

    def op(arg: int) -> int:
        state[0] = not state[0]
        if state[0]:
            raise ConnectionError("down")
        return arg

    return op


# -- 1. the recorder alone -----------------------------------------------------------------
def _listener_alone() -> Callable[[int], Any]:
    listener = PrometheusListener(registry=CollectorRegistry())
    failed = AttemptFailed(policy="retry", attempt=1, outcome=_OUTCOME)
    scheduled = RetryScheduled(policy="retry", attempt=1, delay=0.0, outcome=_OUTCOME)

    def record(arg: int) -> int:
        listener(failed)
        listener(scheduled)
        return arg

    return record


def _details() -> RetryDetails:
    return RetryDetails(
        name="bench.op",
        retry_num=1,
        wait_for=0.0,
        waited_so_far=0.0,
        caused_by=_CAUSE,
        args=(ARG,),
        kwargs={},
    )


def _stamina_hooks() -> tuple[Callable[[RetryDetails], object], ...]:
    return (stamina.instrumentation.PrometheusOnRetryHook.hook_factory(),)


def _hook_alone() -> Callable[[int], Any]:
    hooks, details = _stamina_hooks(), _details()

    def record(arg: int) -> int:
        for hook in hooks:  # stamina/_core.py, before_sleep
            maybe_cm = hook(details)
            if isinstance(maybe_cm, AbstractContextManager):
                raise RuntimeError("stamina's Prometheus hook returned a context manager")
        return arg

    return record


# -- 2. with what each library builds for its recorder -------------------------------------
def _listener_with_events() -> Callable[[int], Any]:
    listeners = (PrometheusListener(registry=CollectorRegistry()),)

    def record(arg: int) -> int:  # failsafe/retry.py, _after_failure
        _emit(listeners, AttemptFailed, policy="retry", attempt=1, outcome=_OUTCOME)
        _emit(listeners, RetryScheduled, policy="retry", attempt=1, delay=0.0, outcome=_OUTCOME)
        return arg

    return record


def _hook_with_details() -> Callable[[int], Any]:
    hooks = _stamina_hooks()

    def record(arg: int) -> int:
        details = RetryDetails(  # stamina/_core.py, before_sleep
            name="bench.op",
            retry_num=1,
            wait_for=0.0,
            waited_so_far=0.0,
            caused_by=_CAUSE,
            args=(arg,),
            kwargs={},
        )
        for hook in hooks:
            maybe_cm = hook(details)
            if isinstance(maybe_cm, AbstractContextManager):
                raise RuntimeError("stamina's Prometheus hook returned a context manager")
        return arg

    return record


# -- 3. whole calls ------------------------------------------------------------------------
def _failsafe(listening: bool) -> Callable[[int], Any]:
    listeners = [PrometheusListener(registry=CollectorRegistry())] if listening else []
    call = Retry(attempts=2, backoff=Backoff.none(), listeners=listeners).call
    op = _flaky()

    def run(arg: int) -> Any:
        return call(op, arg)

    return run


def _stamina(listening: bool) -> Callable[[int], Any]:
    op = stamina.retry(
        on=ConnectionError,
        attempts=2,
        timeout=None,
        wait_initial=0.0,
        wait_max=0.0,
        wait_jitter=0.0,
    )(_flaky())

    def run(arg: int) -> Any:
        return op(arg)

    # stamina's hooks are global: each case sets its own before it is timed
    run.hooks = [stamina.instrumentation.PrometheusOnRetryHook] if listening else []  # type: ignore[attr-defined]
    return run


CASES: list[tuple[str, Callable[[], Callable[[int], Any]]]] = [
    ("1. failsafe PrometheusListener, given the 2 events", _listener_alone),
    ("1. stamina PrometheusOnRetryHook, given its RetryDetails", _hook_alone),
    ("2. failsafe: the 2 events built, delivered and recorded", _listener_with_events),
    ("2. stamina: RetryDetails built, then the hook", _hook_with_details),
    ("3. failsafe Retry, no listener", lambda: _failsafe(False)),
    ("3. failsafe Retry + PrometheusListener", lambda: _failsafe(True)),
    ("3. stamina @retry, no hook", lambda: _stamina(False)),
    ("3. stamina @retry + PrometheusOnRetryHook", lambda: _stamina(True)),
]
FS_ALONE, ST_ALONE, FS_BUILT, ST_BUILT, FS_BARE, FS_PROM, ST_BARE, ST_PROM = (
    label for label, _ in CASES
)


def _measure(settings: Settings) -> dict[str, float]:
    """ns per retried call for each case: the best over ``settings.rounds`` rounds."""
    best: dict[str, float] = {}
    one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)
    try:
        for _ in range(settings.rounds):
            for label, build in CASES:
                call = build()
                stamina.instrumentation.set_on_retry_hooks(getattr(call, "hooks", []))
                if call(ARG) != ARG:
                    raise RuntimeError(f"{label}: the call did not return its argument")
                ns = time_sync(call, one_round).ns_per_call
                best[label] = min(best.get(label, ns), ns)
    finally:
        stamina.instrumentation.set_on_retry_hooks(None)
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
    ratio = best[FS_ALONE] / best[ST_ALONE]
    built = best[FS_BUILT] / best[ST_BUILT]
    switched_on = best[FS_BUILT] / best[ST_ALONE]
    return [
        f"### Recording a retry in Prometheus (Python {platform.python_version()},"
        f" failsafe-kit {version('failsafe-kit')}, stamina {version('stamina')},"
        f" prometheus-client {version('prometheus-client')}; ns per call that fails once and"
        f" is retried, the best of {settings.rounds} rounds x {settings.repeats} timed loops"
        f" of ~{settings.repeat_ns // 1_000_000} ms per case, cases interleaved;"
        f" ran in {elapsed:.0f} s)",
        "",
        "| case | ns per retried call |",
        "| --- | --- |",
        *(f"| {label} | {best[label]:,.0f} |" for label, _ in CASES),
        "",
        f"- {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}: failsafe's PrometheusListener"
        f" records a retried call (two counters and a histogram) in {best[FS_ALONE]:,.0f} ns,"
        f" stamina's Prometheus hook (one counter) in {best[ST_ALONE]:,.0f} ns: {ratio:.2f}x,"
        f" target <= {TARGET_RATIO:.1f}x",
        f"- with what each library builds for its recorder (failsafe's two events, stamina's"
        f" RetryDetails): {best[FS_BUILT]:,.0f} ns against {best[ST_BUILT]:,.0f} ns,"
        f" {built:.2f}x (no target)",
        f"- what switching it on adds to a failsafe retry (events are built only when someone"
        f" listens) against stamina's hook alone: {switched_on:.2f}x (no target);"
        f" whole failsafe calls {best[FS_PROM] - best[FS_BARE]:+,.0f} ns",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prometheus_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of short loops (~5 s)")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
