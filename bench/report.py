"""Print the results: a table per group, then the performance targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.cases import GROUPS, Group
from bench.run import Result, Results

__all__ = ["Target", "format_all", "format_group", "format_targets", "targets"]

MODES = ("plain", "async")


def _ns(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ratio(value: float | None, ref: float | None) -> str:
    if value is None or ref is None:
        return "n/a"
    return f"{value / ref:.2f}"


def _rows(group: Group, results: Results) -> list[list[str]]:
    by_case = results[group.key]
    ref = by_case[group.cases[0].key]
    rows = []
    for case in group.cases:
        r = by_case[case.key]
        rows.append(
            [
                case.label,
                _ns(r.plain),
                _ns(r.aio),
                _ratio(r.plain, ref.plain),
                _ratio(r.aio, ref.aio),
            ]
        )
    return rows


HEADER = ["library", "plain ns/call", "async ns/call", "plain ratio", "async ratio"]


def format_group(group: Group, results: Results, markdown: bool) -> str:
    rows = _rows(group, results)
    title = f"{group.title} (ratio = peer / failsafe: > 1 means failsafe is faster)"
    if markdown:
        lines = [f"#### {title}", ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "|".join(["---", *["---:"] * (len(HEADER) - 1)]) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(HEADER))
    return "\n".join([title, rule, line(HEADER), rule, *(line(r) for r in rows), rule])


# -- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    passed: bool | None  # None: reported, not judged
    detail: str


def _pick(result: Result, mode: str) -> float:
    value = result.plain if mode == "plain" else result.aio
    if value is None:
        raise ValueError(f"no {mode} measurement")
    return value


def targets(results: Results) -> list[Target]:
    retry, breaker, timeout, failure = (
        results["retry"],
        results["breaker"],
        results["timeout"],
        results["failure"],
    )
    out: list[Target] = []
    for mode in MODES:
        fs = _pick(retry["failsafe"], mode)
        ten = min(_pick(retry["tenacity"], mode), _pick(retry["tenacity-obj"], mode))
        bo = _pick(retry["backoff"], mode)
        out.append(
            Target(
                f"(1) {mode}: Retry success <= 1/10 of tenacity and < backoff",
                fs <= ten / 10 and fs < bo,
                f"failsafe {fs:,.0f} ns; tenacity (faster form) {ten:,.0f} ns "
                f"= {ten / fs:.1f}x; backoff {bo:,.0f} ns = {bo / fs:.2f}x",
            )
        )
    for mode in MODES:
        fs = _pick(breaker["failsafe"], mode)
        py = _pick(breaker["pyresilience"], mode)
        out.append(
            Target(
                f"(2) {mode}: Pipeline(Retry, CircuitBreaker) <= 0.7 x pyresilience",
                fs <= 0.7 * py,
                f"failsafe {fs:,.0f} ns; pyresilience {py:,.0f} ns; "
                f"failsafe / pyresilience = {fs / py:.2f}",
            )
        )
    added_plain = _pick(timeout["failsafe"], "plain") - _pick(breaker["failsafe"], "plain")
    out.append(
        Target(
            "(3) plain: Timeout(1.0) added to Pipeline(Retry, CircuitBreaker)",
            None,
            f"+{added_plain:,.0f} ns (cooperative: a context variable and two clock reads)",
        )
    )
    added = _pick(timeout["failsafe"], "async") - _pick(breaker["failsafe"], "async")
    asyncio_cost = _pick(timeout["asyncio"], "async") - _pick(retry["bare"], "async")
    extra = added - asyncio_cost
    out.append(
        Target(
            "(3) async: Timeout adds <= 1,500 ns over asyncio.timeout alone",
            extra <= 1500,
            f"Timeout(1.0) adds {added:,.0f} ns to the pipeline; asyncio.timeout(1) adds "
            f"{asyncio_cost:,.0f} ns to the bare coroutine; difference {extra:,.0f} ns",
        )
    )
    for mode in MODES:
        fs = _pick(failure["failsafe"], mode)
        ten = min(_pick(failure["tenacity"], mode), _pick(failure["tenacity-obj"], mode))
        out.append(
            Target(
                f"(4) {mode}: zero-delay failure path <= 1/10 of tenacity",
                fs <= ten / 10,
                f"failsafe {fs:,.0f} ns; tenacity (faster form) {ten:,.0f} ns = {ten / fs:.1f}x",
            )
        )
    return out


def format_targets(items: list[Target], markdown: bool, title: str = "Targets") -> str:
    def verdict(t: Target) -> str:
        return "INFO" if t.passed is None else "PASS" if t.passed else "FAIL"

    if markdown:
        lines = [f"#### {title}", ""]
        lines.extend(f"- **{verdict(t)}** {t.name}: {t.detail}" for t in items)
        return "\n".join(lines)
    lines = [title, "-" * len(title)]
    for t in items:
        lines.append(f"{verdict(t)}  {t.name}")
        lines.append(f"      {t.detail}")
    return "\n".join(lines)


def format_all(results: Results, markdown: bool, sleep_zero_ns: float) -> str:
    parts = [format_group(group, results, markdown) for group in GROUPS]
    parts[-1] += (
        f"\n\nNote: tenacity, stamina, backoff and pyresilience call time.sleep(0) (plain) or"
        f" asyncio.sleep(0) (async) between attempts even with a zero wait; failsafe does not."
        f" One time.sleep(0) costs {sleep_zero_ns:,.0f} ns on this machine."
    )
    parts.append(format_targets(targets(results), markdown))
    return "\n\n".join(parts)
