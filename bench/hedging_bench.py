"""``python -m bench.hedging_bench [--quick]``: hedging against a long latency tail (issue 17).

One uvicorn process on loopback serves ``GET /item`` with a long tail: 5% of requests take
20 ms, the rest 2 ms (10x the median). Whether a request is slow is a seeded draw by call
and by arrival: each call carries an id (``X-Call``, the same on its hedge), and the k-th
request of call n is slow when the draw for (n, k) says so. So call n's first request is
slow for every client alike, and its hedge is as likely to be slow as any request. Through
the same server, in the same run, one request at a time per client:

- **no hedging**: httpx's own transport;
- **failsafe**: `ResilientTransport` / `AsyncResilientTransport` with
  ``hedging=Hedging(delay=Hedging.percentile(93))``: one hedge once a request has run past
  the 93rd percentile of recent latencies;
- **httpx-hedged**: its ``HedgedTransport`` / ``SyncHedgedTransport`` at the same percentile
  (``HedgeConfig(percentile=0.93)``, its other options at their defaults: a 10% hedge budget).

The clients take turns, a block of requests each, in an order that rotates from round to
round, so that a drift of the machine (or the state one client leaves) weighs on all of
them alike; each one is warmed up first (not measured), so that both adaptive delays
have their samples. "Requests sent" counts what reached the inner httpx transport (a
cancelled hedge included) per measured call.

Targets, for the async and the sync clients: p99 with failsafe's hedging at most 0.5 of
p99 without, with at most 10% more requests sent; failsafe's p99 and requests sent at most
httpx-hedged's.

``run(quick)`` returns a header line, then Markdown lines (a table, then the targets).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = ["FAST_MS", "PERCENTILE", "SLOW_MS", "SLOW_SHARE", "app", "main", "run"]

SLOW_SHARE = 0.05
"""The share of requests the server answers slowly."""
FAST_MS = 2.0
"""How long the server takes for most requests."""
SLOW_MS = 20.0
"""How long it takes for the slow ones (10x)."""
PERCENTILE = 93
"""The percentile of recent latencies after which a request is hedged (failsafe and peer)."""

ROOT = Path(__file__).resolve().parent.parent
_SEED = int(os.environ.get("HEDGING_BENCH_SEED", "17"))
_MAX_CALLS = 10_000  # the server remembers the arrivals of this many recent calls
_arrivals: dict[str, int] = {}


def _slow(call: str) -> bool:
    """Whether this request of ``call`` (``client/n``) is slow: the draw for (n, arrival)."""
    arrival = _arrivals.get(call, 0) + 1
    _arrivals[call] = arrival
    if len(_arrivals) > _MAX_CALLS:
        del _arrivals[next(iter(_arrivals))]
    number = call.rpartition("/")[2]
    return random.Random(f"{_SEED}/{number}/{arrival}").random() < SLOW_SHARE


# -- the server ---------------------------------------------------------------------------------
async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The long-tail server: 200 after 2 ms, or after 20 ms for one request in twenty."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    headers = dict(scope["headers"])
    slow = _slow(headers.get(b"x-call", b"anonymous/0").decode())
    await asyncio.sleep((SLOW_MS if slow else FAST_MS) / 1000)
    body = b'{"slow": true}' if slow else b'{"slow": false}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _impl(module: str, fallback: str) -> str:
    return module if find_spec(module) is not None else fallback


class TailServer:
    """``with TailServer() as server:`` the long-tail server at ``server.url``, killed on exit.

    The socket is bound here and handed to uvicorn with ``--fd``, with ``TCP_NODELAY`` set
    before (see bench/server.py: else a delayed ACK adds about 40 ms per request).
    """

    def __init__(self) -> None:
        import httpx

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.flavour = (
            f"uvicorn ({_impl('httptools', 'h11')}, {_impl('uvloop', 'asyncio')} loop, 1 worker)"
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.hedging_bench:app",
                "--fd",
                str(sock.fileno()),
                "--http",
                _impl("httptools", "h11"),
                "--loop",
                _impl("uvloop", "asyncio"),
                "--log-level",
                "critical",
                "--no-access-log",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "HEDGING_BENCH_SEED": str(_SEED)},
            pass_fds=[sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock.close()
        pause = threading.Event()
        for _ in range(500):
            try:
                httpx.get(self.url, timeout=1.0).raise_for_status()
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError("the hedging bench server exited") from None
                pause.wait(0.02)
        self.kill()
        raise RuntimeError("the hedging bench server did not start")

    def kill(self) -> None:
        """Stop the server."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> TailServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- the clients --------------------------------------------------------------------------------
@dataclass
class Case:
    """One client: its latencies (seconds) and the requests it sent while measured."""

    driver: str
    name: str
    latencies: list[float] = field(default_factory=list)
    sent: int = 0

    def pct(self, q: float) -> float:
        """The ``q`` quantile of the latencies, in milliseconds (nearest rank)."""
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q * len(ordered) - 1e-9))
        return ordered[rank - 1] * 1000

    def per_call(self) -> float:
        """Requests sent per call measured."""
        return self.sent / len(self.latencies)

    def row(self) -> str:
        """The case's Markdown table row."""
        return (
            f"| {self.driver} | {self.name} | {len(self.latencies)} | {self.pct(0.5):.2f} | "
            f"{self.pct(0.9):.2f} | {self.pct(0.99):.2f} | {self.pct(0.999):.2f} | "
            f"{self.sent} | {self.per_call():.3f} |"
        )


def _counting_sync(inner: Any, counter: list[int]) -> Any:
    import httpx

    class Counting(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            counter[0] += 1
            return inner.handle_request(request)  # type: ignore[no-any-return]

        def close(self) -> None:
            inner.close()

    return Counting()


def _counting_async(inner: Any, counter: list[int]) -> Any:
    import httpx

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            counter[0] += 1
            return await inner.handle_async_request(request)  # type: ignore[no-any-return]

        async def aclose(self) -> None:
            await inner.aclose()

    return Counting()


def _transports(driver: str) -> dict[str, Any]:
    """The three transports of one driver, each on its own counting httpx transport."""
    import httpx
    import httpx_hedged

    from failsafe import Hedging
    from failsafe.http import AsyncResilientTransport, ResilientTransport

    peer = httpx_hedged.HedgeConfig(percentile=PERCENTILE / 100)
    hedging = Hedging(delay=Hedging.percentile(PERCENTILE))
    if driver == "sync":
        return {
            "no hedging": lambda c: _counting_sync(httpx.HTTPTransport(), c),
            "failsafe": lambda c: ResilientTransport(
                _counting_sync(httpx.HTTPTransport(), c), hedging=hedging
            ),
            "httpx-hedged": lambda c: httpx_hedged.SyncHedgedTransport(
                _counting_sync(httpx.HTTPTransport(), c), default_config=peer
            ),
        }
    return {
        "no hedging": lambda c: _counting_async(httpx.AsyncHTTPTransport(), c),
        "failsafe": lambda c: AsyncResilientTransport(
            _counting_async(httpx.AsyncHTTPTransport(), c), hedging=hedging
        ),
        "httpx-hedged": lambda c: httpx_hedged.HedgedTransport(
            _counting_async(httpx.AsyncHTTPTransport(), c), default_config=peer
        ),
    }


def _turns(names: list[str], round_: int) -> list[str]:
    """The clients' order in a round: each one goes first, second and last in turn.

    The client after another one meets the server and the loop in the state the first left
    (connections being closed, the server finishing cancelled requests): it must not always
    be the same one.
    """
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


def _call(client: str, number: object) -> dict[str, str]:
    return {"X-Call": f"{client}/{number}"}


def _measure_sync(url: str, calls: int, warmup: int, rounds: int) -> list[Case]:
    import httpx

    names = list(_transports("sync"))
    counters = {name: [0] for name in names}
    built = _transports("sync")
    clients = {
        name: httpx.Client(transport=built[name](counters[name]), base_url=url, timeout=5.0)
        for name in names
    }
    cases = {name: Case("sync", name) for name in names}
    try:
        for name in names:
            for n in range(warmup):
                clients[name].get("/item", headers=_call(name, f"w{n}")).raise_for_status()
        block = calls // rounds
        for round_ in range(rounds):
            for name in _turns(names, round_):
                client, case = clients[name], cases[name]
                before = counters[name][0]
                for _ in range(block):
                    headers = _call(name, len(case.latencies))
                    started = time.perf_counter()
                    client.get("/item", headers=headers).raise_for_status()
                    case.latencies.append(time.perf_counter() - started)
                case.sent += counters[name][0] - before
    finally:
        for client in clients.values():
            client.close()
    return [cases[name] for name in names]


def _measure_async(url: str, calls: int, warmup: int, rounds: int) -> list[Case]:
    import httpx

    names = list(_transports("async"))

    async def main() -> list[Case]:
        counters = {name: [0] for name in names}
        built = _transports("async")
        clients = {
            name: httpx.AsyncClient(
                transport=built[name](counters[name]), base_url=url, timeout=5.0
            )
            for name in names
        }
        cases = {name: Case("async", name) for name in names}
        try:
            for name in names:
                for n in range(warmup):
                    headers = _call(name, f"w{n}")
                    (await clients[name].get("/item", headers=headers)).raise_for_status()
            block = calls // rounds
            for round_ in range(rounds):
                for name in _turns(names, round_):
                    client, case = clients[name], cases[name]
                    before = counters[name][0]
                    for _ in range(block):
                        headers = _call(name, len(case.latencies))
                        started = time.perf_counter()
                        (await client.get("/item", headers=headers)).raise_for_status()
                        case.latencies.append(time.perf_counter() - started)
                    case.sent += counters[name][0] - before
        finally:
            for client in clients.values():
                await client.aclose()
        return [cases[name] for name in names]

    return asyncio.run(main())


def _targets(driver: str, none: Case, ours: Case, peer: Case) -> list[str]:
    def line(ok: bool, text: str) -> str:
        return f"- {'PASS' if ok else 'FAIL'}: {driver}: {text}"

    ratio = ours.pct(0.99) / none.pct(0.99)
    extra = ours.sent / none.sent - 1
    return [
        line(
            ratio <= 0.5,
            f"p99 with failsafe's hedging / without = {ours.pct(0.99):.2f} / "
            f"{none.pct(0.99):.2f} ms = {ratio:.2f} (target <= 0.5)",
        ),
        line(
            extra <= 0.10,
            f"requests sent with failsafe's hedging = {ours.sent} for {none.sent} calls: "
            f"{extra:+.1%} (target <= +10%)",
        ),
        line(
            ours.pct(0.99) <= peer.pct(0.99),
            f"p99 failsafe {ours.pct(0.99):.2f} ms vs httpx-hedged {peer.pct(0.99):.2f} ms "
            "(target: at most httpx-hedged's)",
        ),
        line(
            ours.sent <= peer.sent,
            f"requests sent failsafe {ours.sent} vs httpx-hedged {peer.sent} "
            "(target: at most httpx-hedged's)",
        ),
    ]


def run(quick: bool) -> list[str]:
    """Measure p50/p99 and requests sent without hedging, with failsafe's, with httpx-hedged.

    Args:
        quick: Fewer calls per client (about 45 s instead of about 2.5 minutes).

    Returns:
        A header line, a Markdown table, then one PASS/FAIL line per target.
    """
    calls, warmup, rounds = (1500, 300, 6) if quick else (6000, 500, 12)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with TailServer() as server:
        cases = _measure_async(server.url, calls, warmup, rounds)
        cases += _measure_sync(server.url, calls, warmup, rounds)
        flavour = server.flavour
    elapsed = time.perf_counter() - started
    lines = [
        f"### Hedging against a long tail: Python {platform.python_version()}, httpx "
        f"{version('httpx')}, httpx-hedged {version('httpx-hedged')}, failsafe-kit "
        f"{version('failsafe-kit')}; server {flavour} on loopback, {SLOW_SHARE:.0%} of "
        f"requests {SLOW_MS:g} ms, the rest {FAST_MS:g} ms (seeded draws by call and "
        f"arrival: every client's call n meets the same draws); {calls} calls per client, "
        f"one at a time, in {rounds} interleaved blocks (the order rotating) after {warmup} "
        f"warm-up calls; hedge after the p{PERCENTILE} of recent latencies (failsafe: "
        f"`Hedging.percentile({PERCENTILE})`, httpx-hedged: `HedgeConfig(percentile="
        f"{PERCENTILE / 100:g})`), one hedge at most; {os.cpu_count()} CPUs, load "
        f"{load_before:.1f} before; ran in {elapsed:.0f} s.",
        "",
        "| driver | hedging | calls | p50 ms | p90 ms | p99 ms | p99.9 ms | requests sent | "
        "per call |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(case.row() for case in cases),
        "",
    ]
    for driver in ("async", "sync"):
        none, ours, peer = (c for c in cases if c.driver == driver)
        lines += _targets(driver, none, ours, peer)
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its lines."""
    parser = argparse.ArgumentParser(prog="python -m bench.hedging_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls per client")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
