"""The HTTP benchmark: failsafe's transports against plain httpx and httpx-retries, for real.

Everything runs against one uvicorn process on loopback (`bench.server`), in three parts:

1. Sequential keep-alive GETs, one client each. The clients take turns in rounds
   (A B C D, A B C D, ...) so that a drift of the machine hits them all alike; a client's
   req/s is the median of its rounds, and its ratio the median of its per-round ratios to
   plain httpx (the same round's). Each request is also timed alone: the p50 of all of them
   is the figure least moved by the bursts of other processes.
2. Concurrent GETs: one AsyncClient shared by 10, 50 or 200 tasks, each sending its
   requests one after another; rounds as in 1. Every inner transport gets the same pool
   limits (50 connections), since httpx's pool is slow past its default (encode/httpx#3215).
   Then the same without a network: the inner transport is an ``httpx.MockTransport``, so
   what is left is the client's and the transport's own CPU per request, which tells
   failsafe's share of a gap from httpx's connection pool's.
3. Failover: a primary that refuses connections and a secondary (the server). The latency
   of every request is recorded (rounds interleaved as above) and the p50 and p99 of all of
   a client's requests reported.

The collector runs (as in a program) but is emptied before each timed measure. A client is
checked once before it is timed: the answer, which endpoint answered, how many attempts.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from statistics import median
from time import perf_counter_ns
from typing import Any, TypeVar

import httpx
import httpx_retries

from bench.app import BODY
from bench.server import RefusingPort, Server
from failsafe import Backoff
from failsafe.circuit_breaker import CircuitBreaker, CircuitState, KeyedCircuitBreaker
from failsafe.http import AsyncResilientTransport, ResilientTransport

__all__ = [
    "CONCURRENCY",
    "HttpResults",
    "HttpSettings",
    "Latency",
    "Throughput",
    "percentile",
    "run_http",
]

CONCURRENCY = (10, 50, 200)
LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=50)
SERVICE = "http://backend/"  # the URL the failover clients ask for: their endpoints aim it

T = TypeVar("T")


class BenchError(Exception):
    """A client did not do the work it claims to do (a misconfigured transport)."""


@dataclass(frozen=True)
class HttpSettings:
    # Many short rounds rather than a few long ones: the clients' turns in a round are then
    # close together in time, and a burst of load from another process spoils a few rounds
    # (which the median drops) instead of skewing a long one.
    rounds: int = 50  # sequential: rounds, and GETs per client and round
    requests: int = 50
    async_rounds: int = 8  # concurrent: rounds, and GETs per client and round (all tasks)
    async_requests: int = 600
    own_requests: int = 4_000  # concurrent without a network: GETs per client and round
    latency_rounds: int = 20  # failover: rounds, and GETs per client and round
    latency_requests: int = 50
    warmup: int = 200  # untimed GETs per client before its first round


QUICK = HttpSettings(
    rounds=10,
    requests=50,
    async_rounds=2,
    async_requests=400,
    own_requests=1_000,
    latency_rounds=5,
    latency_requests=40,
    warmup=50,
)


def percentile(samples: list[int], p: float) -> float:
    """Nearest-rank percentile of sorted ``samples``."""
    rank = max(1, -(-len(samples) * p // 100))
    return float(samples[int(rank) - 1])


@dataclass(frozen=True)
class Throughput:
    key: str
    label: str
    rates: list[float]  # requests per second, one per round
    ratios: list[float]  # rate / plain httpx's rate in the same round
    samples: list[int] = field(default_factory=list)  # ns per request, sorted (sequential)

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def ratio(self) -> float:
        return median(self.ratios)

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)


@dataclass(frozen=True)
class Latency:
    key: str
    label: str
    attempts: int  # network attempts per request (refused connections included)
    samples: list[int]  # ns per request, sorted

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


@dataclass
class HttpResults:
    sequential: list[Throughput] = field(default_factory=list)
    concurrent: dict[int, list[Throughput]] = field(default_factory=dict)
    # the same clients over httpx.MockTransport: the CPU a request costs without a network
    own_cost: dict[int, list[Throughput]] = field(default_factory=dict)
    failover: list[Latency] = field(default_factory=list)


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    make: Callable[..., Any]  # () -> client
    check: Callable[[httpx.Response], None]


def _progress(enabled: bool, text: str) -> None:
    if enabled:
        print(f"  http: {text}", file=sys.stderr, flush=True)


def _check_body(where: str, response: httpx.Response) -> None:
    if response.status_code != 200 or response.content != BODY:
        raise BenchError(f"{where}: got {response.status_code} {response.content!r}")


def _expect(where: str, response: httpx.Response, endpoint: str | None, attempts: int) -> None:
    _check_body(where, response)
    got = (
        response.extensions.get("failsafe.endpoint"),
        response.extensions.get("failsafe.attempts"),
    )
    if endpoint is not None and got != (endpoint, attempts):
        raise BenchError(
            f"{where}: answered by (endpoint, attempts) {got}, not {endpoint, attempts}"
        )


def _expect_retries(where: str, response: httpx.Response) -> None:
    _check_body(where, response)
    if not isinstance(response.extensions.get("retry"), httpx_retries.Retry):
        raise BenchError(f"{where}: the response did not go through httpx-retries")


def _ratios(rates: dict[str, list[float]], ref: str) -> dict[str, list[float]]:
    return {k: [r / p for r, p in zip(v, rates[ref], strict=True)] for k, v in rates.items()}


# -- 1. sequential --------------------------------------------------------------------------


def _sequential_variants(url: str) -> list[Variant]:
    return [
        Variant(
            "plain", "httpx.Client()", httpx.Client, lambda r: _check_body("httpx.Client()", r)
        ),
        Variant(
            "failsafe",
            "failsafe ResilientTransport()",
            lambda: httpx.Client(transport=ResilientTransport()),
            lambda r: _expect("ResilientTransport()", r, url, 1),
        ),
        Variant(
            "failsafe-endpoints",
            "failsafe ResilientTransport(endpoints=[server])",
            lambda: httpx.Client(transport=ResilientTransport(endpoints=[url])),
            lambda r: _expect("ResilientTransport(endpoints=...)", r, url, 1),
        ),
        Variant(
            "httpx-retries",
            "httpx-retries RetryTransport()",
            lambda: httpx.Client(transport=httpx_retries.RetryTransport()),
            lambda r: _expect_retries("RetryTransport()", r),
        ),
    ]


def _time_each(client: httpx.Client, url: str, n: int, out: list[int]) -> int:
    """Send ``n`` GETs one after another, append the ns each took to ``out``; return the sum."""
    get = client.get
    gc.collect()
    total = 0
    for _ in repeat(None, n):
        start = perf_counter_ns()
        response = get(url)
        elapsed = perf_counter_ns() - start
        out.append(elapsed)
        total += elapsed
        if response.status_code != 200:
            raise BenchError(f"GET {url} failed")
    return total


def _sequential(url: str, settings: HttpSettings, progress: bool) -> list[Throughput]:
    variants = _sequential_variants(url)
    clients = {v.key: v.make() for v in variants}
    try:
        for v in variants:
            v.check(clients[v.key].get(url))
            _time_each(clients[v.key], url, settings.warmup, [])
        rates: dict[str, list[float]] = {v.key: [] for v in variants}
        samples: dict[str, list[int]] = {v.key: [] for v in variants}
        _progress(progress, f"sequential, {settings.rounds} rounds x {settings.requests} GETs")
        for round_ in range(settings.rounds):
            for v in _rotated(variants, round_):
                elapsed = _time_each(clients[v.key], url, settings.requests, samples[v.key])
                rates[v.key].append(settings.requests * 1e9 / elapsed)
    finally:
        for client in clients.values():
            client.close()
    ratios = _ratios(rates, "plain")
    return [
        Throughput(v.key, v.label, rates[v.key], ratios[v.key], sorted(samples[v.key]))
        for v in variants
    ]


def _rotated(items: list[T], round_: int) -> list[T]:
    """The clients' order in a round, rotated each round: no client always goes first or
    last (a fixed order gave one position a steady few per cent, more than the differences
    measured)."""
    shift = round_ % len(items)
    return items[shift:] + items[:shift]


# -- 2. concurrent --------------------------------------------------------------------------


def _async_variants(url: str) -> list[Variant]:
    return [
        Variant(
            "plain",
            "httpx.AsyncClient()",
            lambda: httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(limits=LIMITS)),
            lambda r: _check_body("httpx.AsyncClient()", r),
        ),
        Variant(
            "failsafe",
            "failsafe AsyncResilientTransport()",
            lambda: httpx.AsyncClient(
                transport=AsyncResilientTransport(httpx.AsyncHTTPTransport(limits=LIMITS))
            ),
            lambda r: _expect("AsyncResilientTransport()", r, url, 1),
        ),
        Variant(
            "httpx-retries",
            "httpx-retries RetryTransport() (async)",
            lambda: httpx.AsyncClient(
                transport=httpx_retries.RetryTransport(httpx.AsyncHTTPTransport(limits=LIMITS))
            ),
            lambda r: _expect_retries("RetryTransport() (async)", r),
        ),
    ]


async def _time_tasks(client: httpx.AsyncClient, url: str, tasks: int, each: int) -> int:
    get = client.get

    async def worker() -> None:
        for _ in repeat(None, each):
            if (await get(url)).status_code != 200:
                raise BenchError(f"GET {url} failed")

    gc.collect()
    start = perf_counter_ns()
    async with asyncio.TaskGroup() as group:
        for _ in range(tasks):
            group.create_task(worker())
    return perf_counter_ns() - start


def _mock_variants(url: str) -> list[Variant]:
    """The concurrent clients with no network: the inner transport answers from memory."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BODY, headers={"content-type": "application/json"})

    return [
        Variant(
            "plain",
            "httpx.AsyncClient()",
            lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)),
            lambda r: _check_body("httpx.AsyncClient() (mock)", r),
        ),
        Variant(
            "failsafe",
            "failsafe AsyncResilientTransport()",
            lambda: httpx.AsyncClient(
                transport=AsyncResilientTransport(httpx.MockTransport(answer))
            ),
            lambda r: _expect("AsyncResilientTransport() (mock)", r, url, 1),
        ),
        Variant(
            "httpx-retries",
            "httpx-retries RetryTransport() (async)",
            lambda: httpx.AsyncClient(
                transport=httpx_retries.RetryTransport(httpx.MockTransport(answer))
            ),
            lambda r: _expect_retries("RetryTransport() (async, mock)", r),
        ),
    ]


async def _concurrent(
    url: str,
    settings: HttpSettings,
    progress: bool,
    variants: list[Variant] | None = None,
    requests: int | None = None,
) -> dict[int, list[Throughput]]:
    variants = _async_variants(url) if variants is None else variants
    total = settings.async_requests if requests is None else requests
    clients = {v.key: v.make() for v in variants}
    out: dict[int, list[Throughput]] = {}
    try:
        for v in variants:
            v.check(await clients[v.key].get(url))
        for tasks in CONCURRENCY:
            each = max(1, total // tasks)
            for v in variants:  # warm-up: open the connections
                await _time_tasks(clients[v.key], url, tasks, max(1, settings.warmup // tasks))
            rates: dict[str, list[float]] = {v.key: [] for v in variants}
            _progress(
                progress,
                f"{tasks} tasks, {settings.async_rounds} rounds x {tasks} x {each} GETs",
            )
            for round_ in range(settings.async_rounds):
                for v in _rotated(variants, round_):
                    elapsed = await _time_tasks(clients[v.key], url, tasks, each)
                    rates[v.key].append(tasks * each * 1e9 / elapsed)
            ratios = _ratios(rates, "plain")
            out[tasks] = [Throughput(v.key, v.label, rates[v.key], ratios[v.key]) for v in variants]
    finally:
        for client in clients.values():
            await client.aclose()
    return out


# -- 3. failover ----------------------------------------------------------------------------


def _failover_transport(primary: str, secondary: str, **options: Any) -> ResilientTransport:
    return ResilientTransport(endpoints=[primary, secondary], backoff=Backoff.none(), **options)


def _open_circuit(primary: str, secondary: str) -> tuple[ResilientTransport, CircuitBreaker]:
    transport = _failover_transport(
        primary, secondary, breakers=KeyedCircuitBreaker(reset_timeout=3600)
    )
    assert transport.breakers is not None
    breaker = transport.breakers.get(primary)
    breaker.open()
    return transport, breaker


def _failover(secondary: str, settings: HttpSettings, progress: bool) -> list[Latency]:
    with RefusingPort() as primary:
        opened, breaker = _open_circuit(primary, secondary)
        cases = [
            ("direct", "direct to the secondary: httpx.Client()", 1, secondary, None),
            (
                "closed-4",
                "failsafe, primary CLOSED (breakers=False), attempts=4",
                5,
                SERVICE,
                lambda: httpx.Client(
                    transport=_failover_transport(primary, secondary, breakers=False)
                ),
            ),
            (
                "closed-1",
                "failsafe, primary CLOSED (breakers=False), attempts=1",
                2,
                SERVICE,
                lambda: httpx.Client(
                    transport=_failover_transport(primary, secondary, breakers=False, attempts=1)
                ),
            ),
            (
                "open",
                "failsafe, primary's circuit OPEN",
                1,
                SERVICE,
                lambda: httpx.Client(transport=opened),
            ),
        ]
        clients = {key: make() if make else httpx.Client() for key, _, _, _, make in cases}
        try:
            for key, label, attempts, url, make in cases:
                response = clients[key].get(url)
                _expect(label, response, secondary if make else None, attempts)
                _time_each(clients[key], url, settings.warmup, [])
            samples: dict[str, list[int]] = {key: [] for key, *_ in cases}
            _progress(
                progress,
                f"failover, {settings.latency_rounds} rounds x {settings.latency_requests} GETs",
            )
            for round_ in range(settings.latency_rounds):
                for key, _, _, url, _ in _rotated(cases, round_):
                    _time_each(clients[key], url, settings.latency_requests, samples[key])
            if breaker.state is not CircuitState.OPEN:
                raise BenchError("the primary's circuit closed during the measure")
        finally:
            for client in clients.values():
                client.close()
    return [
        Latency(key, label, attempts, sorted(samples[key])) for key, label, attempts, _, _ in cases
    ]


# -- all ------------------------------------------------------------------------------------


def run_http(settings: HttpSettings, progress: bool = True) -> HttpResults:
    results = HttpResults()
    with Server() as server:
        _progress(progress, f"server at {server.url}")
        results.sequential = _sequential(server.url, settings, progress)
        results.concurrent = asyncio.run(_concurrent(server.url, settings, progress))
        _progress(progress, "the same clients over httpx.MockTransport (no network)")
        results.own_cost = asyncio.run(
            _concurrent(
                server.url,
                settings,
                progress,
                variants=_mock_variants(server.url),
                requests=settings.own_requests,
            )
        )
        results.failover = _failover(server.url, settings, progress)
    return results
