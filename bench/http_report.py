"""Print the HTTP results: three tables, then the HTTP targets."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import quantiles

from bench.http_run import CONCURRENCY, HttpResults, Latency, Throughput
from bench.report import Target, format_targets

__all__ = ["format_http", "http_targets"]

SEQUENTIAL_MIN_RATIO = 0.97  # target (a)
OPEN_CIRCUIT_MAX_RATIO = 1.1  # target (b)


def _table(title: str, header: Sequence[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [f"#### {title}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(r) for r in rows), rule])


def _us(ns: float) -> str:
    return f"{ns / 1000:,.0f}"


def format_sequential(rows: list[Throughput], markdown: bool) -> str:
    plain = rows[0]
    return _table(
        "HTTP: sequential keep-alive GETs, one client each"
        " (ratio = req/s / plain httpx's: < 1 means slower; p50 ratio = plain p50 / p50)",
        ["client", "req/s", "ratio", "p50 µs", "p50 ratio"],
        [
            [
                t.label,
                f"{t.rate:,.0f}",
                f"{t.ratio:.3f}",
                f"{t.p50 / 1000:,.0f}",
                f"{plain.p50 / t.p50:.3f}",
            ]
            for t in rows
        ],
        markdown,
    )


def format_concurrent(by_tasks: dict[int, list[Throughput]], markdown: bool) -> str:
    header = ["client"]
    header += [f"req/s, {n} tasks" for n in CONCURRENCY]
    header += [f"ratio, {n} tasks" for n in CONCURRENCY]
    rows = []
    for i, first in enumerate(by_tasks[CONCURRENCY[0]]):
        cells = [by_tasks[n][i] for n in CONCURRENCY]
        rows.append(
            [
                first.label,
                *(f"{t.rate:,.0f}" for t in cells),
                *(f"{t.ratio:.3f}" for t in cells),
            ]
        )
    return _table(
        "HTTP: concurrent GETs, one AsyncClient shared by the tasks"
        " (ratio = req/s / plain httpx's)",
        header,
        rows,
        markdown,
    )


def format_own_cost(by_tasks: dict[int, list[Throughput]], markdown: bool) -> str:
    """The concurrent clients over httpx.MockTransport: CPU per request, without a network."""
    header = ["client"]
    header += [f"µs/request, {n} tasks" for n in CONCURRENCY]
    header += [f"+µs over plain, {n} tasks" for n in CONCURRENCY]
    plain = {n: by_tasks[n][0] for n in CONCURRENCY}
    rows = []
    for i, first in enumerate(by_tasks[CONCURRENCY[0]]):
        cells = [by_tasks[n][i] for n in CONCURRENCY]
        rows.append(
            [
                first.label,
                *(f"{1e6 / t.rate:,.1f}" for t in cells),
                *(
                    f"{1e6 / t.rate - 1e6 / plain[n].rate:+,.1f}"
                    for n, t in zip(CONCURRENCY, cells, strict=True)
                ),
            ]
        )
    return _table(
        "HTTP: the same concurrent clients without a network (inner httpx.MockTransport):"
        " what the client and the transport cost per request",
        header,
        rows,
        markdown,
    )


def format_failover(rows: list[Latency], markdown: bool) -> str:
    direct = rows[0]
    return _table(
        "HTTP: failover, the primary refuses connections, the secondary answers"
        " (µs per request; ratio = / the direct request's)",
        ["client", "connections tried", "p50 µs", "p99 µs", "p50 ratio", "p99 ratio"],
        [
            [
                r.label,
                str(r.attempts),
                _us(r.p50),
                _us(r.p99),
                f"{r.p50 / direct.p50:.2f}",
                f"{r.p99 / direct.p99:.2f}",
            ]
            for r in rows
        ],
        markdown,
    )


def http_targets(results: HttpResults) -> list[Target]:
    out: list[Target] = []
    by_key = {t.key: t for t in results.sequential}
    plain = by_key["plain"]
    for key in ("failsafe", "failsafe-endpoints"):
        t = by_key[key]
        low, _, high = quantiles(t.ratios, n=4)
        out.append(
            Target(
                f"(a) sequential: {t.label} >= {SEQUENTIAL_MIN_RATIO} x plain httpx's req/s",
                t.ratio >= SEQUENTIAL_MIN_RATIO,
                f"{t.rate:,.0f} req/s vs {plain.rate:,.0f}; ratio {t.ratio:.3f}, the median of"
                f" {len(t.ratios)} rounds (quartiles {low:.2f} and {high:.2f}); p50 per request"
                f" {t.p50 / 1000:,.0f} µs vs {plain.p50 / 1000:,.0f} µs,"
                f" ratio {plain.p50 / t.p50:.3f}",
            )
        )
    lat = {r.key: r for r in results.failover}
    direct, opened = lat["direct"], lat["open"]
    ratio = opened.p50 / direct.p50
    out.append(
        Target(
            f"(b) failover: with the primary's circuit open, p50 <= {OPEN_CIRCUIT_MAX_RATIO} x"
            f" a direct request's",
            ratio <= OPEN_CIRCUIT_MAX_RATIO,
            f"p50 {_us(opened.p50)} µs vs {_us(direct.p50)} µs = {ratio:.2f}; p99"
            f" {_us(opened.p99)} µs vs {_us(direct.p99)} µs = {opened.p99 / direct.p99:.2f}",
        )
    )
    return out


def format_http(results: HttpResults, markdown: bool) -> str:
    parts = [
        format_sequential(results.sequential, markdown),
        format_concurrent(results.concurrent, markdown),
        format_own_cost(results.own_cost, markdown),
        format_failover(results.failover, markdown),
        format_targets(http_targets(results), markdown, title="HTTP targets"),
    ]
    return "\n\n".join(parts)
