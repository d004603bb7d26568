"""``python -m bench.payment_bench [--quick]``: examples/payment_flow, from payment to Paid.

Every service of the example is a real process on loopback (``examples.payment_flow.runner``,
the demo's fast settings: the DLQ's delay is 2 s instead of 60 s). Two measures:

1. **Normal operation**: payments POSTed to the Payment service at a steady 100 per second
   (open loop: each is sent on its schedule, whatever the earlier ones do), on the SQLite
   broker; the latency of each is the time from the request's start to its Paid row in the
   Orders database's status history (both wall clocks of this machine). Target: p99 <= 1 s
   (the shop's own requirement is 15 s). Then the same payments as fast as 16 clients can
   send them, for the pipeline's throughput.
2. **Backlog drain**: the Order service is killed, a backlog of messages is published
   (10,000; 2,000 with ``--quick``) and the Status consumer moves each to the DLQ; the Order
   service is started again and the time until every order is Paid is measured, on SQLite
   and on RabbitMQ. The consumer makes no immediate retry here (``immediate=0``), so that
   deferring the backlog does not take minutes of backoff.

``run(quick)`` returns the lines to print (a header, then Markdown tables), for ``python -m
bench``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from examples.payment_flow.demo import Flow
from examples.payment_flow.domain import PAID, status_message
from examples.payment_flow.runner import Supervisor, delete_rabbitmq_queues
from examples.payment_flow.settings import Settings

from failsafe.queue import Envelope

__all__ = ["RABBIT", "run"]

RABBIT = os.environ.get("FAILSAFE_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
"""The RabbitMQ server of the drain measure."""
RATE = 100.0
"""Payments per second in normal operation."""
TARGET_P99 = 1.0
"""The most a payment may take to be Paid (p99), in seconds, at ``RATE`` on SQLite."""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _wait(what: str, check: Callable[[], bool], timeout: float, pause: float = 0.05) -> None:
    event = threading.Event()
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        event.wait(pause)


def _pay_all(
    flow: Flow, orders: list[str], *, rate: float | None, clients: int = 16
) -> tuple[dict[str, float], float]:
    """Pay ``orders`` at ``rate`` per second (or as fast as ``clients`` can).

    Returns:
        When each request started (wall clock), and the seconds from the first to the last.
    """
    sent: dict[str, float] = {}
    local = threading.local()
    url = f"{flow.settings.url('payment')}/payments"
    clients_made: list[httpx.Client] = []

    def pay(order: str) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30.0)
            clients_made.append(client)
        sent[order] = time.time()
        answer = client.post(url, json={"orderId": order, "amount": 10.0})
        if answer.status_code != 202:
            raise RuntimeError(f"payment {order}: HTTP {answer.status_code} {answer.text}")

    pause = threading.Event()
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        futures = []
        for i, order in enumerate(orders):
            if rate is not None:
                due = started + i / rate
                while (left := due - time.monotonic()) > 0:
                    pause.wait(left)
            futures.append(pool.submit(pay, order))
        for future in futures:
            future.result()
    for client in clients_made:
        client.close()
    # from the first request's start to the last's: not the clients' creation before it
    return sent, max(sent.values()) - min(sent.values())


def _normal(root: Path, payments: int) -> list[list[str]]:
    rows = []
    settings = Settings.fast(root / "normal")
    with Supervisor(settings) as supervisor:
        supervisor.start()
        flow = Flow(supervisor.settings)
        try:
            for label, rate in ((f"{RATE:.0f} payments/s", RATE), ("16 clients, no pause", None)):
                orders = [f"n-{uuid.uuid4().hex[:12]}" for _ in range(payments)]
                flow.db.add_orders(orders)
                target = flow.db.count(PAID) + payments
                sent, sending = _pay_all(flow, orders, rate=rate)
                _wait("every order Paid", lambda t=target: flow.db.count(PAID) >= t, 120)
                paid = flow.db.reached_at(PAID)
                latencies = [paid[o] - sent[o] for o in orders]
                span = max(paid[o] for o in orders) - min(sent.values())
                rows.append(
                    [
                        label,
                        "SQLite",
                        f"{payments:,}",
                        f"{payments / sending:,.0f}",
                        f"{payments / span:,.0f}",
                        f"{_pct(latencies, 0.5) * 1000:,.0f}",
                        f"{_pct(latencies, 0.99) * 1000:,.0f}",
                        f"{max(latencies) * 1000:,.0f}",
                    ]
                )
        finally:
            flow.close()
    return rows


def _drain(root: Path, name: str, broker: str | None, backlog: int) -> list[str]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings.fast(root / f"drain-{name}", broker=broker, queue=queue, immediate=0)
    settings = settings.replace(concurrency=16, prefetch=32, redelivery_rounds=100)
    try:
        with Supervisor(settings) as supervisor:
            supervisor.start()
            flow = Flow(supervisor.settings)
            try:
                orders = [f"b-{i:05d}" for i in range(backlog)]
                flow.db.add_orders(orders)
                supervisor.kill("order")
                messages = [Envelope(body=status_message(o)) for o in orders]
                publishing = time.monotonic()
                publish_many = getattr(flow.broker, "publish_many", None)
                if publish_many is not None:
                    publish_many(queue, messages)
                else:
                    with ThreadPoolExecutor(16) as pool:
                        list(pool.map(lambda m: flow.broker.publish(queue, m), messages))
                published = time.monotonic() - publishing
                _wait(
                    "the backlog deferred to the DLQ",
                    lambda: flow.stats().get("RedeliveryScheduled", 0) >= backlog,
                    600,
                    0.2,
                )
                back = time.time()
                supervisor.start(["order"])
                _wait("the backlog drained", lambda: flow.db.count(PAID) >= backlog, 600, 0.05)
                done = max(flow.db.reached_at(PAID).values())
            finally:
                flow.close()
    finally:
        if broker is not None:
            delete_rabbitmq_queues(settings)
    drain = done - back
    return [
        name,
        f"{backlog:,}",
        f"{backlog / published:,.0f}",
        f"{drain:.1f}",
        f"{backlog / drain:,.0f}",
    ]


NORMAL_HEADER = (
    "load",
    "broker",
    "payments",
    "sent/s",
    "Paid/s",
    "p50 ms",
    "p99 ms",
    "max ms",
)
DRAIN_HEADER = ("broker", "backlog", "published/s", "drain s", "applied/s")


def _table(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    rule = "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|"
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


def run(quick: bool) -> list[str]:
    """Measure the payment flow; return a header line, then Markdown tables and verdicts.

    Args:
        quick: 1,000 payments per load and a backlog of 2,000 (instead of 3,000 and 10,000).
    """
    payments, backlog = (1000, 2000) if quick else (3000, 10_000)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="payment-bench-") as tmp:
        root = Path(tmp)
        normal = _normal(root, payments)
        drains = [
            _drain(root, "SQLite", None, backlog),
            _drain(root, "RabbitMQ", RABBIT, backlog),
        ]
    p99 = float(normal[0][6].replace(",", "")) / 1000
    verdict = "PASS" if p99 <= TARGET_P99 else "FAIL"
    return [
        "### examples/payment_flow: from payment to Paid",
        "",
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs shared by the four service"
        f" processes and this load generator. Load average {load:.1f} before,"
        f" {os.getloadavg()[0]:.1f} after; ran in {time.perf_counter() - started:.0f} s."
        " Latency: request start to the Paid row in the Orders database.",
        "",
        *_table(NORMAL_HEADER, normal),
        "",
        "Backlog drain: the Order service down while the backlog is published and deferred to"
        " the DLQ (2 s delay); drain = from its restart to the last order Paid.",
        "",
        *_table(DRAIN_HEADER, drains),
        "",
        f"- {verdict}: p99 {p99 * 1000:,.0f} ms at {RATE:.0f} payments/s on SQLite"
        f" (target <= {TARGET_P99 * 1000:,.0f} ms; the shop requires 15 s).",
    ]


def main(argv: list[str] | None = None) -> int:
    """Print the measures."""
    parser = argparse.ArgumentParser(prog="python -m bench.payment_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer payments, a smaller backlog")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
