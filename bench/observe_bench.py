"""``python -m bench.observe_bench [--quick]``: what OpenTelemetry instrumentation costs.

Three measurements, each as ns per call and as a ratio (instrumented / not instrumented):

(a) the success path of ``Pipeline(Retry(), CircuitBreaker(), Timeout(1))``, sync and
    async, without instrumentation and with ``failsafe.opentelemetry.instrument()`` (the
    metrics listener, span events, gauges and tracing all on), the call made inside a
    recording span. Target: at most 1.10x (a successful call emits no event, so the
    listeners never run);
(b) a call that fails once and succeeds on its retry (no backoff), inside a recording span:
    failsafe's ``Retry`` with span events (``instrument(metrics=False, gauges=False)``:
    two events per retry, ``failsafe.attempt.failed`` and ``failsafe.retry.scheduled``)
    against stamina's ``retry`` with an on-retry hook (``stamina.instrumentation``) that
    adds one span event with the same attributes: stamina has no OpenTelemetry hook of its
    own, and this hook is the fair peer of failsafe's listener. Each library's ratio is
    over itself without instrumentation;
(c) one GET through ``httpx.AsyncClient(transport=AsyncResilientTransport(MockTransport))``
    with tracing installed (a CLIENT span per attempt and a ``traceparent`` header) against
    the same without tracing.

The tracer provider is the SDK's with no span processor (spans are recorded and dropped),
the meter provider the SDK's with no reader: the cost measured is failsafe's and the SDK's
recording, not an exporter's. Timed by `bench.harness` (the best loop of several; GC off
while timing), the cases interleaved round by round.

``run(quick)`` returns a header line, Markdown tables and one line per target.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

import httpx
import stamina
import stamina.instrumentation
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from bench.harness import ARG, Settings, time_async, time_sync
from failsafe import Backoff, CircuitBreaker, Pipeline, Retry, Timeout
from failsafe.http import AsyncResilientTransport
from failsafe.opentelemetry import instrument

TARGET_RATIO = 1.10  # (a): instrument() costs at most 10% on the success path

_TRACER_PROVIDER = TracerProvider()  # no processor: spans are recorded, then dropped
_METER_PROVIDER = MeterProvider()  # no reader
_TRACER = _TRACER_PROVIDER.get_tracer("bench")


@contextmanager
def _instrumented(on: bool, **options: Any) -> Iterator[None]:
    """failsafe instrumented (or not) on the SDK providers, inside a recording span.

    The SDK keeps at most 128 events per span, dropping older ones: a long-lived span
    costs the same per event as a fresh one.
    """
    with _TRACER.start_as_current_span("caller", record_exception=False) as span:
        assert span.is_recording()
        if not on:
            yield
            return
        with instrument(
            tracer_provider=_TRACER_PROVIDER, meter_provider=_METER_PROVIDER, **options
        ):
            yield


def _ok(arg: int) -> int:
    return arg


async def _aok(arg: int) -> int:
    return arg


class _FailsEveryOther:
    """Raises ConnectionError on odd calls and returns its argument on even ones."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, arg: int) -> int:
        self.calls += 1
        if self.calls % 2:
            raise ConnectionError("first attempt")
        return arg


def _stamina_span_event(details: stamina.instrumentation.RetryDetails) -> None:
    """stamina's on-retry hook doing what failsafe's span-event listener does."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            "retry.scheduled",
            {
                "failsafe.policy": details.name,
                "failsafe.attempt": details.retry_num,
                "failsafe.retry.delay": details.wait_for,
                "error.type": type(details.caused_by).__qualname__,
            },
        )


def _success_path(settings: Settings) -> dict[str, dict[str, float]]:
    """(a): ns per successful call, sync and async, without and with instrument()."""
    best: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)
    for _ in range(settings.rounds):
        for case, on in (("off", False), ("on", True)):
            policy = Pipeline(Retry(), CircuitBreaker(), Timeout(1))
            call, acall = policy.call, policy.call_async

            def sync(arg: int, call: Any = call) -> Any:
                return call(_ok, arg)

            def asyn(arg: int, acall: Any = acall) -> Any:
                return acall(_aok, arg)

            with _instrumented(on):
                if sync(ARG) != ARG or asyncio.run(asyn(ARG)) != ARG:
                    raise RuntimeError("the call did not return its argument")
                timings = {
                    "sync": time_sync(sync, one_round).ns_per_call,
                    "async": asyncio.run(time_async(asyn, one_round)).ns_per_call,
                }
            for kind, ns in timings.items():
                best[case][kind] = min(best[case].get(kind, ns), ns)
    return best


def _retry_cases() -> list[tuple[str, Callable[[], Callable[[int], Any]]]]:
    def failsafe_retry() -> Callable[[int], Any]:
        retry, fn = Retry(attempts=2, backoff=Backoff.none()), _FailsEveryOther()
        return lambda arg: retry.call(fn, arg)

    def stamina_retry() -> Callable[[int], Any]:
        return stamina.retry(
            on=ConnectionError,
            attempts=2,
            timeout=None,
            wait_initial=0,
            wait_max=0,
            wait_jitter=0,
        )(_FailsEveryOther())

    return [("failsafe", failsafe_retry), ("stamina", stamina_retry)]


def _retried(settings: Settings) -> dict[str, dict[str, float]]:
    """(b): ns per call failing once then succeeding, each library without and with events."""
    best: dict[str, dict[str, float]] = {"failsafe": {}, "stamina": {}}
    one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)
    hooks = stamina.instrumentation.get_on_retry_hooks()
    try:
        for _ in range(settings.rounds):
            for library, build in _retry_cases():
                for case, on in (("off", False), ("on", True)):
                    stamina.instrumentation.set_on_retry_hooks(
                        [_stamina_span_event] if on and library == "stamina" else []
                    )
                    call = build()
                    with _instrumented(on and library == "failsafe", metrics=False, gauges=False):
                        if call(ARG) != ARG:
                            raise RuntimeError(f"{library}: the call did not return")
                        ns = time_sync(call, one_round).ns_per_call
                    best[library][case] = min(best[library].get(case, ns), ns)
    finally:
        stamina.instrumentation.set_on_retry_hooks(hooks)
    return best


def _http(settings: Settings) -> dict[str, float]:
    """(c): ns per GET through AsyncResilientTransport on MockTransport, traced or not."""
    best: dict[str, float] = {}
    one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"ok")

    for _ in range(settings.rounds):
        for case, on in (("off", False), ("on", True)):

            async def measure() -> float:
                transport = AsyncResilientTransport(httpx.MockTransport(answer))
                async with httpx.AsyncClient(transport=transport) as client:

                    async def get(arg: int) -> int:
                        response = await client.get("http://service.test/items")
                        return arg if response.status_code == 200 else -1

                    if await get(ARG) != ARG:
                        raise RuntimeError("the request failed")
                    return (await time_async(get, one_round)).ns_per_call

            with _instrumented(on, metrics=False, gauges=False):
                ns = asyncio.run(measure())
            best[case] = min(best.get(case, ns), ns)
    return best


def run(quick: bool) -> list[str]:
    """Time the cases; return a header line, Markdown tables and the target's verdict."""
    settings = (
        Settings(rounds=2, repeats=3, repeat_ns=20_000_000)
        if quick
        else Settings(rounds=5, repeats=5, repeat_ns=50_000_000)
    )
    started = time.perf_counter()
    success = _success_path(settings)
    retried = _retried(settings)
    http = _http(settings)
    elapsed = time.perf_counter() - started
    ratio = {kind: success["on"][kind] / success["off"][kind] for kind in ("sync", "async")}
    f_ratio = retried["failsafe"]["on"] / retried["failsafe"]["off"]
    s_ratio = retried["stamina"]["on"] / retried["stamina"]["off"]
    h_ratio = http["on"] / http["off"]
    lines = [
        f"### OpenTelemetry instrumentation: the cost per call (Python"
        f" {platform.python_version()}, failsafe-kit {version('failsafe-kit')},"
        f" opentelemetry-sdk {version('opentelemetry-sdk')}, stamina {version('stamina')};"
        f" the best of {settings.rounds} rounds x {settings.repeats} timed loops of"
        f" ~{settings.repeat_ns // 1_000_000} ms per case; ran in {elapsed:.0f} s)",
        "",
        "| case | without ns | instrumented ns | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for kind in ("sync", "async"):
        lines.append(
            f"| (a) Pipeline(Retry(), CircuitBreaker(), Timeout(1)) success, {kind},"
            f" instrument() | {success['off'][kind]:,.0f} | {success['on'][kind]:,.0f}"
            f" | {ratio[kind]:.2f}x |"
        )
    lines += [
        f"| (b) failsafe Retry, fails once then succeeds, span events |"
        f" {retried['failsafe']['off']:,.0f} | {retried['failsafe']['on']:,.0f} |"
        f" {f_ratio:.2f}x |",
        f"| (b) stamina retry, fails once then succeeds, on-retry hook adding a span event |"
        f" {retried['stamina']['off']:,.0f} | {retried['stamina']['on']:,.0f} |"
        f" {s_ratio:.2f}x |",
        f"| (c) GET through AsyncResilientTransport (MockTransport), tracing |"
        f" {http['off']:,.0f} | {http['on']:,.0f} | {h_ratio:.2f}x |",
        "",
    ]
    ok = max(ratio.values()) <= TARGET_RATIO
    lines += [
        f"- {'PASS' if ok else 'FAIL'}: instrument() costs at most {TARGET_RATIO:.2f}x on the"
        f" success path: {ratio['sync']:.3f}x sync, {ratio['async']:.3f}x async",
        f"- (b) failsafe with span events, over stamina with its hook:"
        f" {retried['failsafe']['on'] / retried['stamina']['on']:.2f}x the time per call;"
        f" the instrumentation's own share: failsafe {f_ratio:.2f}x (two events per retry),"
        f" stamina {s_ratio:.2f}x (one event per retry) (no target)",
        f"- (c) a traced HTTP request costs {h_ratio:.2f}x an untraced one"
        f" (+{http['on'] - http['off']:,.0f} ns: a client span and a traceparent header)"
        f" (no target)",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.observe_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of short loops (~15 s)")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
