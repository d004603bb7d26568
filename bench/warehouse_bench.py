"""``python -m bench.warehouse_bench [--quick]``: examples/warehouse_flow under load.

Add-product latency (p50, p99) and throughput through the Order service, with
``CONCURRENCY`` clients (asyncio tasks, each with its own ``httpx.AsyncClient``), on the
real processes of ``examples/warehouse_flow`` (Order service, two Warehouse instances on one
SQLite stock file, Products service, Error-handling service):

1. **both Warehouse instances up**: instance 1 serves every add;
2. **Warehouse 1 down** (``kill -9``), once its circuit is open in the Order service: every
   add goes straight to instance 2, with no attempt on instance 1.

Target: p99 with Warehouse 1 down at most 1.5 times p99 with both up (an open circuit must
make a dead instance cost nothing). The stock is seeded large enough that every add is a
decrement (200), never a 202.

``run(quick)`` returns the lines to print (a header, a Markdown table, the target).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from examples.warehouse_flow.db import StockDB, open_database
from examples.warehouse_flow.domain import STOCK
from examples.warehouse_flow.runner import Supervisor
from examples.warehouse_flow.settings import Settings

__all__ = ["CONCURRENCY", "TARGET_RATIO", "main", "run"]

CONCURRENCY = 50
"""Concurrent clients adding products."""
TARGET_RATIO = 1.5
"""The most p99 with Warehouse 1 down may be, as a multiple of p99 with both up."""
PRODUCTS = ("p-lamp", "p-chair", "p-desk")


@dataclass
class Phase:
    """One measured case: every add's latency and status."""

    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def pct(self, q: float) -> float:
        """The ``q`` quantile of the latencies, in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def row(self) -> str:
        """The phase's Markdown table row."""
        rate = len(self.latencies) / self.seconds if self.seconds else 0.0
        served = ", ".join(f"{k} {v}" for k, v in sorted(self.served_by.items()))
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"| {self.name} | {len(self.latencies)} | {self.pct(0.5):.1f} | {self.pct(0.99):.1f}"
            f" | {statistics.fmean(self.latencies) * 1000:.1f} | {rate:,.0f} | {statuses}"
            f" | {served} |"
        )


async def _load(settings: Settings, phase: Phase, requests: int, record: bool) -> None:
    url = f"{settings.url('order')}/orders/o-bench/products"
    names = {settings.url("warehouse-1"): "W1", settings.url("warehouse-2"): "W2"}
    tls = ssl.create_default_context()  # one for all clients (each would load the CA bundle)
    left = iter(range(requests))

    async def client(number: int) -> None:
        async with httpx.AsyncClient(timeout=60.0, verify=tls) as http:
            for n in left:
                body = {"clientId": f"c-{number}", "productId": PRODUCTS[n % len(PRODUCTS)]}
                started = time.perf_counter()
                response = await http.post(
                    url, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                )
                took = time.perf_counter() - started
                if record:
                    phase.latencies.append(took)
                    phase.statuses[response.status_code] += 1
                    endpoint = response.headers.get("X-Warehouse-Endpoint", "")
                    phase.served_by[names.get(endpoint, "none")] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(CONCURRENCY)))
    if record:
        phase.seconds = time.perf_counter() - started


def _measure(settings: Settings, name: str, requests: int, warmup: int) -> Phase:
    phase = Phase(name)
    asyncio.run(_load(settings, phase, warmup, record=False))
    asyncio.run(_load(settings, phase, requests, record=True))
    return phase


def _open_circuit(settings: Settings) -> None:
    """Send adds until the Order service skips Warehouse 1 (its circuit is open)."""
    url = f"{settings.url('order')}/orders/o-warm/products"
    for _ in range(50):
        response = httpx.post(url, json={"clientId": "c-0", "productId": "p-lamp"}, timeout=60)
        if response.headers.get("X-Warehouse-Attempts") == "1":
            return
    raise RuntimeError("Warehouse 1's circuit did not open")


def run(quick: bool) -> list[str]:
    """Measure add-product latency with both Warehouse instances up, then with one down.

    Args:
        quick: Fewer adds per case (about 20 s instead of about 60 s).

    Returns:
        A header, a Markdown table, and the target's PASS/FAIL line.
    """
    requests, warmup = (1000, 200) if quick else (4000, 500)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="failsafe-warehouse-bench-") as tmp:
        # the circuit stays open for the whole "down" case; stock for every add
        settings = Settings.fast(
            Path(tmp),
            overrides={
                "FAILSAFE_WAREHOUSE_CIRCUIT_BREAKER_RESET_TIMEOUT": "600",
                "FAILSAFE_WAREHOUSE_CIRCUIT_BREAKER_MAX_RESET_TIMEOUT": "600",
                "FAILSAFE_WAREHOUSE_TIMEOUT_SECONDS": "30",
            },
        )
        big = {component: n * 1000 for component, n in STOCK.items()}
        StockDB(open_database(settings, "stock")).create(big)
        with Supervisor(settings) as supervisor:
            supervisor.start()
            settings = supervisor.settings
            up = _measure(settings, "both instances up", requests, warmup)
            supervisor.kill("warehouse-1")
            _open_circuit(settings)
            down = _measure(settings, "Warehouse 1 down, circuit open", requests, warmup)
    elapsed = time.perf_counter() - started
    ratio = down.pct(0.99) / up.pct(0.99)
    ok = ratio <= TARGET_RATIO and set(up.statuses) == set(down.statuses) == {200}
    return [
        "### Warehouse flow (examples/warehouse_flow)",
        "",
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs shared by the five service"
        f" processes and the load generator; {CONCURRENCY} concurrent clients adding products"
        f" through the Order service, {warmup} warm-up adds per case. Load average"
        f" {load_before:.1f} before, {os.getloadavg()[0]:.1f} after. Ran in {elapsed:.0f} s.",
        "",
        "| case | adds | p50 ms | p99 ms | mean ms | adds/s | statuses | served by |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        up.row(),
        down.row(),
        "",
        f"- {'PASS' if ok else 'FAIL'}: p99 with Warehouse 1 down / p99 with both up ="
        f" {ratio:.2f} (target <= {TARGET_RATIO:g}; every add answered 200).",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench.warehouse_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer adds per case")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
