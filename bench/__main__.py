"""``python -m bench [--quick] [--only PART] [--markdown]``: failsafe vs its peers, part by part."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

from bench.harness import Settings
from bench.http_report import format_http
from bench.http_run import CONCURRENCY, QUICK, HttpSettings, run_http
from bench.report import format_all
from bench.run import run_all, sleep_zero_ns
from bench.server import server_flavour

PACKAGES = (
    "failsafe-kit",
    "tenacity",
    "stamina",
    "backoff",
    "pybreaker",
    "circuitbreaker",
    "pyresilience",
)
HTTP_PACKAGES = ("httpx", "httpx-retries", "uvicorn")
POLICY_BENCHES = (
    "bench.limiter_bench",
    "bench.hedging_bench",
    "bench.adaptive_bench",
    "bench.chaos_bench",
)
OBSERVE_BENCHES = (
    "bench.observe_bench",
    "bench.prometheus_bench",
    "bench.config_bench",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one round of 3 short repeats per core case (~8 s), fewer HTTP rounds (~15 s)",
    )
    parser.add_argument(
        "--only",
        choices=("core", "http", "policies", "observe", "errors", "queue", "scale", "examples"),
        help="run one part: the core policies, the HTTP transports against a local server,"
        " the newer policies (rate limiter, hedging, adaptive concurrency, chaos),"
        " observing and configuring (traces, Prometheus, configured pipelines),"
        " the Error-handling service, failsafe.queue on SQLite and RabbitMQ, growth (keyed"
        " breakers, the DLQ, error records to 1M, ingest under wrk), or the examples",
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also write the Markdown tables between the bench markers of README.md and"
        " docs/performance.md",
    )
    args = parser.parse_args(argv)
    if args.update_docs and args.only:
        parser.error("--update-docs writes every table: run it without --only")

    sections: list[tuple[str, str, str]] = []  # (header, plain text, Markdown)
    if args.only in (None, "core"):
        sections.append(_core(args.quick))
    if args.only in (None, "http"):
        sections.append(_http(args.quick))
    if args.only in (None, "policies"):
        for module in POLICY_BENCHES:
            sections.append(_lines(module, args.quick))
    if args.only in (None, "observe"):
        for module in OBSERVE_BENCHES:
            sections.append(_lines(module, args.quick))
    if args.only in (None, "errors"):
        sections.append(_errors(args.quick))
    if args.only in (None, "queue"):
        sections.append(_queue(args.quick))
    if args.only in (None, "scale"):
        sections.append(_lines("bench.keyed_bench", args.quick))
        sections.append(_lines("bench.dlq_bench", args.quick))
        sections.append(_lines("bench.errors_scale", args.quick))
        sections.append(_wrk(args.quick))
    if args.only in (None, "examples"):
        sections.append(_lines("bench.warehouse_bench", args.quick))
        sections.append(_lines("bench.payment_bench", args.quick))

    for header, text, markdown in sections:
        print(header)
        print(markdown if args.markdown else text)
        print()
    if args.update_docs:
        command = "make bench" + (" (--quick)" if args.quick else "")
        block = f"Printed by `{command}` on {time.strftime('%Y-%m-%d')}. " + "\n\n".join(
            f"{header}\n{markdown}" for header, _, markdown in sections
        )
        for path in DOCS:
            _replace_between_markers(path, block)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


def _core(quick: bool) -> tuple[str, str, str]:
    settings = Settings(rounds=1, repeats=3, repeat_ns=25_000_000) if quick else Settings()
    started = time.perf_counter()
    results = run_all(settings)
    sleep_zero = sleep_zero_ns(settings)
    elapsed = time.perf_counter() - started

    versions = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    header = (
        f"Python {platform.python_version()} ({platform.python_implementation()}), {versions}.\n"
        f"ns per call: the best of {settings.rounds} round(s) x {settings.repeats} timed loops"
        f" of ~{settings.repeat_ns // 1_000_000} ms per case (GC off while timing; loop overhead"
        f" included). Async calls are awaited one after another in one event loop per case."
        f" Ran in {elapsed:.0f} s.\n"
    )
    return (
        header,
        format_all(results, markdown=False, sleep_zero_ns=sleep_zero),
        format_all(results, markdown=True, sleep_zero_ns=sleep_zero),
    )


def _errors(quick: bool) -> tuple[str, str, str]:
    from bench.errors_bench import run

    lines = run(quick, markdown=True)
    header, body = lines[0], "\n".join(lines[1:])
    return header, body, body


def _queue(quick: bool) -> tuple[str, str, str]:
    return _lines("bench.queue_bench", quick)


def _lines(module: str, quick: bool) -> tuple[str, str, str]:
    """A part whose module's ``run(quick)`` returns a header line, then Markdown lines."""
    run = importlib.import_module(module).run
    lines = run(quick)
    header, body = lines[0], "\n".join(lines[1:])
    return header, body, body


def _wrk(quick: bool) -> tuple[str, str, str]:
    from bench.errors_wrk import run_both

    lines = run_both(quick)
    header, body = lines[0], "\n".join(lines[1:])
    return header, body, body


def _http(quick: bool) -> tuple[str, str, str]:
    settings = QUICK if quick else HttpSettings()
    started = time.perf_counter()
    results = run_http(settings)
    elapsed = time.perf_counter() - started

    versions = ", ".join(f"{name} {version(name)}" for name in HTTP_PACKAGES)
    tasks = " and ".join(str(n) for n in CONCURRENCY)
    header = (
        f"HTTP: {versions}; one {server_flavour()} serving bench/app.py (200, an 11-byte JSON"
        f" body) on loopback, sharing the machine's {os.cpu_count()} CPUs with the client.\n"
        f"Sequential: {settings.rounds} rounds x {settings.requests:,} keep-alive GETs per"
        f" client, the clients taking turns in each round; req/s is the median of the rounds"
        f" and the ratio the median of the per-round ratios to plain httpx. Concurrent:"
        f" {settings.async_rounds} rounds x {settings.async_requests:,} GETs per client, by"
        f" {tasks} tasks sharing one AsyncClient (every inner transport limited to 50"
        f" connections alike); then {settings.own_requests:,} GETs per client and round over"
        f" httpx.MockTransport, no network. Failover: {settings.latency_rounds} rounds x"
        f" {settings.latency_requests:,} GETs per client, each timed; the primary is a"
        f" loopback port that refuses connections, backoff=Backoff.none(). GC on, collected"
        f" before each measure. Ran in {elapsed:.0f} s.\n"
    )
    return header, format_http(results, markdown=False), format_http(results, markdown=True)


ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "performance.md")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _replace_between_markers(path: Path, block: str) -> None:
    text = path.read_text()
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise SystemExit(f"{path}: the markers {START} and {END} are missing")
    path.write_text(f"{head}{START}\n{block.strip()}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
