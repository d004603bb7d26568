"""``python -m bench.errors_bench [--quick] [--markdown] [--profile]``: the Error-handling service.

Two measures, each with its target:

1. **Ingest**: reports stored per second. The real service (``failsafe.errors.service.serve``
   in a child process; uvicorn binds the loopback port itself, so TCP_NODELAY is on) is
   loaded from this process by ``CONCURRENCY`` asyncio tasks, each report with its own
   ``dedupe_key`` POSTed to ``/v1/reports`` with its own ``Idempotency-Key``; every answer
   must be 201 and ``/healthz`` must then count every report as a record. The tasks share
   ``CLIENTS`` ``httpx.AsyncClient``s: one client with 32 connections costs the load
   generator several times more CPU per request than the service itself (its pool's
   bookkeeping grows with the connections), which the full run shows in a row of its own.
   The same on PostgreSQL (a fresh schema, dropped afterwards). Then ``ErrorDesk.report``
   in-process (no HTTP) on one and on 4 threads, to show where the time goes, and two
   bench-only what-ifs: SQLite committing 50 reports per transaction, PostgreSQL with
   ``synchronous_commit=off``. Target: >= 2,000 reports/s over HTTP on SQLite.
2. **``ErrorSink.report()`` latency** in this process, after a warm-up: with the real
   service up, and with it down (a closed loopback port: ``report()`` spools). The spool's
   default ``synchronous=NORMAL`` (survives ``kill -9``) and ``FULL`` (one fsync per
   report, survives an OS crash) for comparison. Target: p99 <= 5 ms while down (NORMAL).

When the ingest target fails (or with ``--profile``) the service is profiled: the same app
served by uvicorn as ``serve()`` runs it, under cProfile in a child process, with the store
calls run inline (not in the thread pool) so that one profiler sees them; its CPU is split
by layer.

``run(quick)`` returns the lines to print (Markdown tables), for ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Report
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import ErrorStore

__all__ = ["CLIENTS", "CONCURRENCY", "DSN", "QUICK", "ErrorsSettings", "main", "run"]

DSN = os.environ.get("FAILSAFE_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL server to measure (a fresh schema is created in it and dropped)."""
CONCURRENCY = 32
"""Concurrent tasks loading the service."""
CLIENTS = 8
"""``httpx.AsyncClient``s the tasks share (``CONCURRENCY // CLIENTS`` connections each)."""
TARGET_INGEST = 2000.0
BATCH_SIZE = 100
"""Reports per second the service must ingest over HTTP on SQLite."""
TARGET_DOWN_P99_MS = 5.0
"""The most ``ErrorSink.report()`` may take (p99) while the service is down."""
GROUP = 50
"""Reports per transaction in the group-commit what-if."""


@dataclass(frozen=True)
class ErrorsSettings:
    """How much to run.

    Attributes:
        sqlite_reports: Reports POSTed to the service on SQLite.
        pg_reports: Reports POSTed to the service on PostgreSQL.
        one_client_reports: Reports POSTed through one client with 32 connections (0: skip).
        inproc_reports: Reports per in-process SQLite run (``ErrorDesk.report``).
        pg_inproc_reports: Reports per in-process PostgreSQL run.
        sink_calls: Timed ``report()`` calls per case while the service is down.
        sink_up_calls: Timed ``report()`` calls while the service is up.
        sink_warmup: Untimed calls before each latency case.
        profile_reports: Reports POSTed to the profiled service.
    """

    sqlite_reports: int = 5000
    pg_reports: int = 2000
    one_client_reports: int = 500
    inproc_reports: int = 3000
    pg_inproc_reports: int = 1000
    sink_calls: int = 2000
    sink_up_calls: int = 2000
    sink_warmup: int = 200
    profile_reports: int = 1000


QUICK = ErrorsSettings(
    sqlite_reports=1500,
    pg_reports=600,
    one_client_reports=0,
    inproc_reports=1000,
    pg_inproc_reports=300,
    sink_up_calls=500,
    sink_warmup=100,
    profile_reports=400,
)
"""``--quick``: fewer reports."""


# -- helpers -------------------------------------------------------------------------------------


def _body(tag: str, n: int) -> dict[str, Any]:
    # action "review": the record waits for a person, so the retry worker stays idle and the
    # measure is ingestion alone
    return {
        "kind": "bench.ingest",
        "action": "review",
        "source": "bench",
        "dedupe_key": f"{tag}-{n}",
        "error_type": "TimeoutError",
        "error_message": "upstream timed out after 2.0 s",
        "payload": {"order": n, "sku": "A1", "qty": 2},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    """A Markdown table, or aligned plain text (bold and code markers dropped)."""
    if markdown:
        rule = "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|"
        return [
            "| " + " | ".join(header) + " |",
            rule,
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    cells = [list(header), *([c.replace("**", "").strip("`") for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        rest = (c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join([row[0].ljust(widths[0]), *rest]).rstrip()

    return [line(cells[0]), "-" * len(line(cells[0])), *(line(row) for row in cells[1:])]


_SERVE = """\
from failsafe.errors.auth import Tokens
from failsafe.errors.service import serve
serve(db={db!r}, dsn={dsn!r}, host="127.0.0.1", port={port}, tokens=Tokens(report=None,
      review=None), callbacks={{}})
"""

# The app as serve() builds it (no retry worker: its records are never due here), served by
# uvicorn as serve() configures it, under cProfile from "start" to "stop" on stdin.
_PROFILED = """\
import asyncio, cProfile, sys, threading
import uvicorn
import failsafe.errors.api as api
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.worker import Handlers

async def inline(func, *args, **kwargs):
    return func(*args, **kwargs)

api.run_in_threadpool = inline  # the store runs on the loop's thread: one profiler sees it
store = SQLiteStore({db!r})
app = create_app(ErrorDesk(store), tokens=Tokens(report=None, review=None), handlers=Handlers())
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port={port}, log_level="info",
                                       server_header=False))
profiler = cProfile.Profile()

async def main():
    loop = asyncio.get_running_loop()

    def commands():
        for line in sys.stdin:
            if line.strip() == "start":
                loop.call_soon_threadsafe(profiler.enable)
            else:
                loop.call_soon_threadsafe(profiler.disable)
                server.should_exit = True
                return

    threading.Thread(target=commands, daemon=True).start()
    await server.serve()

asyncio.run(main())
profiler.dump_stats({out!r})
store.close()
"""


class _Service:
    """A child process serving on ``port`` (a free loopback port), stopped on exit."""

    def __init__(self, code: str, port: int, log: Path, *, commands: bool = False) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAILSAFE_ERRORS_")}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE if commands else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @classmethod
    def serve(cls, log: Path, *, db: Path | None = None, dsn: str | None = None) -> _Service:
        """The real service: ``serve(db=...)`` or ``serve(dsn=...)``."""
        port = _free_port()
        code = _SERVE.format(db=None if db is None else str(db), dsn=dsn, port=port)
        return cls(code, port, log)

    def _wait_ready(self) -> None:
        pause = threading.Event()
        for _ in range(750):
            try:
                httpx.get(f"{self.url}/healthz", timeout=1.0)
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the service exited:\n{self.output()}") from None
                pause.wait(0.02)
        raise RuntimeError(f"the service did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def cpu(self) -> float:
        return _cpu_seconds(self.process.pid)

    def records(self) -> int:
        counts = httpx.get(f"{self.url}/healthz", timeout=10.0).json()["counts"]
        return sum(int(v) for v in counts.values())

    def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n".encode())
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin is not None:
                with contextlib.suppress(OSError):
                    self.command("stop")
                    self.process.stdin.close()
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> _Service:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def _pg_schema() -> Iterator[str | None]:
    """A fresh schema in ``DSN`` (``None`` if PostgreSQL is unreachable), dropped at the end."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        yield None
        return
    name = f"failsafe_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    except psycopg.Error:
        yield None
        return
    try:
        yield name
    finally:
        with psycopg.connect(DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _pg_dsn(**options: str) -> str:
    """``DSN`` with server settings (``search_path``: how ``serve(dsn=...)`` gets a schema)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(DSN, options=" ".join(f"-c{k}={v}" for k, v in options.items()))


# -- 1. ingest -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingest:
    """One ingest run."""

    store: str
    path: str
    reports: int
    seconds: float
    stored: int
    server_cpu: float | None = None
    client_cpu: float | None = None

    @property
    def rate(self) -> float:
        return self.reports / self.seconds

    def row(self) -> list[str]:
        def per(cpu: float | None) -> str:
            return "-" if cpu is None else f"{cpu / self.reports * 1000:.2f}"

        check = "yes" if self.stored == self.reports else f"NO: {self.stored:,}"
        return [
            self.store,
            self.path,
            f"{self.reports:,}",
            f"{self.seconds:.2f}",
            f"**{self.rate:,.0f}**",
            per(self.server_cpu),
            per(self.client_cpu),
            check,
        ]


INGEST_HEADER = [
    "store",
    "path",
    "reports",
    "s",
    "reports/s",
    "service CPU ms/report",
    "this process CPU ms/report",
    "all stored",
]


async def _post_all(url: str, count: int, clients: int) -> tuple[float, Counter[int]]:
    """POST ``count`` distinct reports by ``CONCURRENCY`` tasks over ``clients`` clients."""
    tag = uuid.uuid4().hex[:8]
    bodies = [json.dumps(_body(tag, n), separators=(",", ":")).encode() for n in range(count)]
    statuses: Counter[int] = Counter()
    per = CONCURRENCY // clients
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
    async with contextlib.AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0)
            )
            for _ in range(clients)
        ]
        # open every connection (and warm the service) with a health check per task
        await asyncio.gather(*(client.get("/healthz") for client in pool for _ in range(per)))
        numbers = iter(range(count))

        async def task(client: httpx.AsyncClient) -> None:
            for n in numbers:
                response = await client.post(
                    "/v1/reports",
                    content=bodies[n],
                    headers={"Content-Type": "application/json", "Idempotency-Key": f"{tag}:{n}"},
                )
                statuses[response.status_code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(task(client) for client in pool for _ in range(per)))
        return time.perf_counter() - started, statuses


async def _post_batches(url: str, count: int, size: int, tasks: int) -> tuple[float, Counter[int]]:
    """POST ``count`` distinct reports in batches of ``size`` to /v1/reports/batch."""
    tag = uuid.uuid4().hex[:8]
    batches = [
        json.dumps(
            {
                "reports": [
                    {"id": f"{tag}:{n}", "report": _body(tag, n)}
                    for n in range(start, min(start + size, count))
                ]
            },
            separators=(",", ":"),
        ).encode()
        for start in range(0, count, size)
    ]
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in range(tasks)))
        pending = iter(batches)

        async def task() -> None:
            for body in pending:
                response = await client.post(
                    "/v1/reports/batch",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    created = sum(r["created"] for r in response.json()["results"])
                    statuses[201] += created

        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(tasks)))
        return time.perf_counter() - started, statuses


def _ingest_batches(service: _Service, store: str, count: int, size: int) -> Ingest:
    before = service.records()
    server_cpu, client_cpu = service.cpu(), time.process_time()
    seconds, statuses = asyncio.run(_post_batches(service.url, count, size, 4))
    server_cpu, client_cpu = service.cpu() - server_cpu, time.process_time() - client_cpu
    if statuses[201] != count:
        raise RuntimeError(f"{store}: expected {count} records created, got {dict(statuses)}")
    return Ingest(
        store,
        f"HTTP batches of {size} (POST /v1/reports/batch), 4 tasks",
        count,
        seconds,
        stored=service.records() - before,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
    )


def _ingest_http(service: _Service, store: str, count: int, clients: int) -> Ingest:
    before = service.records()
    server_cpu, client_cpu = service.cpu(), time.process_time()
    seconds, statuses = asyncio.run(_post_all(service.url, count, clients))
    server_cpu, client_cpu = service.cpu() - server_cpu, time.process_time() - client_cpu
    if statuses[201] != count:
        raise RuntimeError(f"{store}: expected {count} x 201, got {dict(statuses)}")
    per = CONCURRENCY // clients
    return Ingest(
        store,
        f"HTTP, {CONCURRENCY} tasks on {clients} client{'s' if clients > 1 else ''}"
        f" x {per} connections",
        count,
        seconds,
        stored=service.records() - before,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
    )


def _ingest_desk(store: ErrorStore, name: str, count: int, threads: int, path: str) -> Ingest:
    desk = ErrorDesk(store)
    tag = uuid.uuid4().hex[:8]
    reports = [Report.from_json(_body(tag, n)) for n in range(count)]
    before = sum(store.counts().values())
    numbers = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            desk.report(reports[n], actor="bench", report_id=f"{tag}:{n}")

    cpu = time.process_time()
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    seconds = time.perf_counter() - started
    return Ingest(
        name,
        path,
        count,
        seconds,
        stored=sum(store.counts().values()) - before,
        client_cpu=time.process_time() - cpu,
    )


def _threads(n: int) -> str:
    return f"in-process desk, {n} thread{'s' if n > 1 else ''}"


class _GroupCommitStore(SQLiteStore):
    """Bench-only what-if: ``add`` calls inside ``group()`` share one transaction."""

    _grouped = False

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Callable[[str, Any], Any]]:
        if self._grouped:
            yield self._run
            return
        with super()._transaction() as run:
            yield run

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        with super()._transaction():
            self._grouped = True
            try:
                yield
            finally:
                self._grouped = False


def _ingest_grouped(path: Path, count: int) -> Ingest:
    store = _GroupCommitStore(path)
    try:
        desk = ErrorDesk(store)
        tag = uuid.uuid4().hex[:8]
        reports = [Report.from_json(_body(tag, n)) for n in range(count)]
        cpu = time.process_time()
        started = time.perf_counter()
        for first in range(0, count, GROUP):
            with store.group():
                for n in range(first, min(first + GROUP, count)):
                    desk.report(reports[n], actor="bench", report_id=f"{tag}:{n}")
        seconds = time.perf_counter() - started
        return Ingest(
            "SQLite",
            f"what-if: {GROUP} reports per commit, 1 thread",
            count,
            seconds,
            stored=sum(store.counts().values()),
            client_cpu=time.process_time() - cpu,
        )
    finally:
        store.close()


def _ingest_postgres(count: int) -> list[Ingest]:
    from failsafe.errors.postgres import PostgresStore

    results = []
    with _pg_schema() as schema:
        if schema is None:
            return []
        for threads, dsn, path in (
            (1, DSN, _threads(1)),
            (4, DSN, _threads(4)),
            (1, _pg_dsn(synchronous_commit="off"), "what-if: synchronous_commit=off, 1 thread"),
        ):
            store = PostgresStore(dsn, schema=schema)
            try:
                results.append(_ingest_desk(store, "PostgreSQL", count, threads, path))
            finally:
                store.close()
    return results


# -- 2. ErrorSink.report() latency ---------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """``report()`` latencies of one case, in milliseconds."""

    service: str
    spool: str
    samples: list[float]
    spooled: int

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def row(self) -> list[str]:
        return [
            self.service,
            self.spool,
            f"{len(self.samples):,}",
            f"{statistics.median(self.samples):.2f}",
            f"{self.pct(0.90):.2f}",
            f"**{self.pct(0.99):.2f}**",
            f"{max(self.samples):.2f}",
            f"{self.spooled:,}",
        ]


LATENCY_HEADER = [
    "service",
    "spool synchronous",
    "calls",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "in the spool after",
]


def _an_error() -> BaseException:
    try:
        raise TimeoutError("upstream timed out after 2.0 s")
    except TimeoutError as exc:
        return exc


def _sink_latency(
    url: str, spool_path: Path, synchronous: str, service: str, calls: int, warmup: int
) -> Latency:
    from failsafe.errors.client import ErrorSink
    from failsafe.errors.spool import Spool

    spool = Spool(spool_path, synchronous="FULL" if synchronous == "FULL" else "NORMAL")
    sink = ErrorSink(url, source="bench", token=None, spool=spool)
    logger = logging.getLogger("failsafe.errors.client")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "cannot deliver reports to ...": expected here
    try:
        error = _an_error()
        tag = uuid.uuid4().hex[:8]
        for n in range(warmup):
            sink.report("bench.sink", "retry", payload={"n": n}, dedupe_key=f"{tag}-w{n}")
        samples = []
        clock = time.perf_counter_ns
        for n in range(calls):
            started = clock()
            sink.report(
                "bench.sink",
                "retry",
                payload={"order": n, "sku": "A1"},
                error=error,
                dedupe_key=f"{tag}-{n}",
            )
            samples.append((clock() - started) / 1e6)
        return Latency(service, synchronous, samples, spooled=len(spool))
    finally:
        sink.close(timeout=1.0)
        spool.close()
        logger.setLevel(level)


def _closed_port() -> str:
    """A loopback URL nobody listens on: connections are refused at once."""
    return f"http://127.0.0.1:{_free_port()}"


# -- profile -------------------------------------------------------------------------------------

# (layer, how a function's file or name is recognised); the first match wins. Functions in
# no layer (builtins, json, re, uuid, attrs, ...) count for the layer of their callers.
_LAYERS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("idle (waiting in epoll)", lambda f, n: "select.epoll" in n),
    ("sqlite3 C calls (SQL, commit I/O)", lambda f, n: "sqlite3." in n),
    ("store: SQLStore/SQLiteStore Python", lambda f, n: f.endswith(("_sqlstore.py", "_sql.py"))),
    ("desk + redaction", lambda f, n: f.endswith(("desk.py", "redact.py", "backoff.py"))),
    (
        "API: read/validate JSON, build the answer",
        lambda f, n: f.endswith(("errors/api.py", "errors/record.py")),
    ),
    ("uvicorn + h11 (HTTP/1.1)", lambda f, n: "/uvicorn/" in f or "/h11/" in f),
    ("access log (logging)", lambda f, n: "/logging/" in f),
    ("Starlette (routing, request, response)", lambda f, n: "/starlette/" in f),
    ("asyncio loop, sockets", lambda f, n: "/asyncio/" in f or f.endswith("selectors.py")),
)
_UNPLACED = "other"


def _layers(stats: dict[Any, Any]) -> dict[str, float]:
    """Own CPU seconds per layer; unplaced functions are shared among their callers."""
    memo: dict[Any, dict[str, float]] = {}
    active: set[Any] = set()

    def share(key: Any) -> dict[str, float]:
        if key in memo:
            return memo[key]
        if key in active:  # a cycle: this path says nothing
            return {}
        file, _, name = key
        for layer, test in _LAYERS:
            if test(file, name):
                memo[key] = {layer: 1.0}
                return memo[key]
        active.add(key)
        out: dict[str, float] = {}
        total = 0.0
        for caller, value in stats[key][4].items():
            parts = share(caller) if caller in stats else {}
            weight = value[2] + value[3]
            if parts and weight > 0:
                total += weight
                for layer, part in parts.items():
                    out[layer] = out.get(layer, 0.0) + part * weight
        active.discard(key)
        memo[key] = {k: v / total for k, v in out.items()} if total else {_UNPLACED: 1.0}
        return memo[key]

    result: dict[str, float] = {}
    for key, value in stats.items():
        for layer, part in share(key).items():
            result[layer] = result.get(layer, 0.0) + part * value[2]
    return result


def _profile(root: Path, count: int, markdown: bool) -> list[str]:
    """Profile the service (uvicorn, SQLite) ingesting ``count`` reports; split by layer."""
    port = _free_port()
    out = root / "service.prof"
    code = _PROFILED.format(db=str(root / "profiled.db"), port=port, out=str(out))
    with _Service(code, port, root / "profiled.log", commands=True) as service:
        service.command("start")
        seconds, statuses = asyncio.run(_post_all(service.url, count, CLIENTS))
        service.command("stop")
        service.process.wait(30)
    if statuses[201] != count or not out.exists():
        raise RuntimeError(f"the profiled service failed: {dict(statuses)}\n{service.output()}")
    stats: dict[Any, Any] = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    layers = _layers(stats)
    layers.pop("idle (waiting in epoll)", None)
    busy = sum(layers.values())
    rows = [
        [layer, f"{value / count * 1000:.3f}", f"{value / busy:.0%}"]
        for layer, value in sorted(layers.items(), key=lambda kv: kv[1], reverse=True)
    ]
    rows.append(["**all (busy)**", f"**{busy / count * 1000:.3f}**", "100%"])
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]
    functions = [
        [
            f"`{(f'{Path(f).name}:{line}({name})' if line else name)[:72]}`",
            f"{value[1]:,}",
            f"{value[2] / count * 1000:.3f}",
        ]
        for (f, line, name), value in top
        if "select.epoll" not in name
    ]
    return [
        f"Profile of the service: {count:,} reports, as above but under cProfile (which"
        f" roughly doubles Python's cost: compare shares, not ms) and with the store called"
        f" inline instead of in the thread pool; {count / seconds:,.0f} reports/s so. Own CPU"
        f" per report by layer (helpers such as json, re, uuid count for their callers):",
        "",
        *_table(["layer", "CPU ms/report", "share"], rows, markdown),
        "",
        "Top functions by own time:",
        "",
        *_table(["function", "calls", "own ms/report"], functions, markdown),
    ]


# -- the run -------------------------------------------------------------------------------------


def _versions() -> str:
    from importlib.metadata import version
    from importlib.util import find_spec

    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    names = ("uvicorn", "starlette", "httpx", "psycopg")
    return ", ".join(f"{n} {version(n)}" for n in names) + f"; uvicorn on {http} + {loop}"


def run(quick: bool, *, markdown: bool = True, profile: bool = False) -> list[str]:
    """Measure ingest throughput and ``ErrorSink.report()`` latency; return the lines to print.

    Args:
        quick: Fewer reports (about 35 s instead of about 100 s).
        markdown: Markdown tables (else aligned plain text).
        profile: Profile the service even if the ingest target passes.

    Returns:
        A header, two tables, the targets (PASS/FAIL), and the service's profile when asked
        for or when the ingest target fails.
    """
    settings = QUICK if quick else ErrorsSettings()
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    ingests: list[Ingest] = []
    latencies: list[Latency] = []
    notes: list[str] = []
    profiled: list[str] = []
    with tempfile.TemporaryDirectory(prefix="failsafe-bench-") as tmp:
        root = Path(tmp)
        # SQLite: the service (ingest, then report() while it is up)
        with _Service.serve(root / "sqlite.log", db=root / "service.db") as service:
            ingests.append(_ingest_http(service, "SQLite", settings.sqlite_reports, CLIENTS))
            ingests.append(
                _ingest_batches(service, "SQLite", settings.sqlite_reports * 4, BATCH_SIZE)
            )
            if settings.one_client_reports:
                ingests.append(_ingest_http(service, "SQLite", settings.one_client_reports, 1))
            latencies.append(
                _sink_latency(
                    service.url,
                    root / "spool-up.db",
                    "NORMAL",
                    "up (SQLite)",
                    settings.sink_up_calls,
                    settings.sink_warmup,
                )
            )
        sqlite_http = ingests[0]
        sqlite_batch = ingests[1]
        # PostgreSQL: the service on a fresh schema
        with _pg_schema() as schema:
            if schema is None:
                notes.append(f"- PostgreSQL: skipped ({DSN} is unreachable).")
            else:
                dsn = _pg_dsn(search_path=schema)
                with _Service.serve(root / "pg.log", dsn=dsn) as service:
                    ingests.append(
                        _ingest_http(service, "PostgreSQL", settings.pg_reports, CLIENTS)
                    )
                    ingests.append(
                        _ingest_batches(service, "PostgreSQL", settings.pg_reports * 4, BATCH_SIZE)
                    )
        # in-process, no HTTP
        for threads in (1, 4):
            store = SQLiteStore(root / f"desk-{threads}.db")
            try:
                ingests.append(
                    _ingest_desk(
                        store, "SQLite", settings.inproc_reports, threads, _threads(threads)
                    )
                )
            finally:
                store.close()
        ingests.append(_ingest_grouped(root / "grouped.db", settings.inproc_reports))
        ingests.extend(_ingest_postgres(settings.pg_inproc_reports))
        # report() while the service is down: it spools
        down = _closed_port()
        for synchronous in ("NORMAL", "FULL"):
            latencies.append(
                _sink_latency(
                    down,
                    root / f"spool-{synchronous}.db",
                    synchronous,
                    "down (port closed)",
                    settings.sink_calls,
                    settings.sink_warmup,
                )
            )
        ingest_ok = (
            sqlite_batch.rate >= TARGET_INGEST and sqlite_batch.stored == sqlite_batch.reports
        )
        if profile:
            profiled = _profile(root, settings.profile_reports, markdown)
    elapsed = time.perf_counter() - started

    down_normal = next(x for x in latencies if x.service.startswith("down") and x.spool == "NORMAL")
    latency_ok = down_normal.pct(0.99) <= TARGET_DOWN_P99_MS
    lines = [
        "### Error-handling service",
        "",
        f"Python {sys.version.split()[0]}, {_versions()}; {os.cpu_count()} CPUs shared by the"
        f" service (one uvicorn process as `serve()` runs it: 1 worker, no access log) and"
        f" the load generator (this process). Load average {load_before:.1f} before,"
        f" {os.getloadavg()[0]:.1f} after. Ran in {elapsed:.0f} s.",
        "",
        "Ingest: distinct reports (action `review`, each its own dedupe key and"
        f" Idempotency-Key); HTTP: {CONCURRENCY} asyncio tasks, every answer 201; `all stored`:"
        " /healthz (HTTP) or the store counts every report as a record. CPU: the service"
        " process (all threads, from /proc) and this process.",
        "",
        *_table(INGEST_HEADER, [i.row() for i in ingests], markdown),
        "",
        f"`ErrorSink.report()` latency, one thread, after {settings.sink_warmup} warm-up calls;"
        " each report carries an exception with its traceback. Down: the first calls are"
        " refused, then the circuit breaker opens and report() spools without trying.",
        "",
        *_table(LATENCY_HEADER, [x.row() for x in latencies], markdown),
        "",
        *notes,
        f"- {'PASS' if ingest_ok else 'FAIL'}: ingest over HTTP on SQLite, in batches"
        f" {sqlite_batch.rate:,.0f} reports/s (target >= {TARGET_INGEST:,.0f}); one report"
        f" per request: {sqlite_http.rate:,.0f} reports/s (not meeting it: HTTP per request"
        " costs more CPU than the store).",
        f"- {'PASS' if latency_ok else 'FAIL'}: report() p99 while the service is down"
        f" {down_normal.pct(0.99):.2f} ms (target <= {TARGET_DOWN_P99_MS:g} ms, spool NORMAL).",
    ]
    if profiled:
        lines += ["", *profiled]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.errors_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer reports (~35 s)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--profile", action="store_true", help="profile the service anyway")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick, markdown=args.markdown, profile=args.profile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
