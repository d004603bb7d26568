"""Reading a run's trace files back, and printing one trace as a tree.

Each traced process appends its spans to ``traces/SERVICE.jsonl`` in the run folder
(`examples._support.telemetry`); `read_spans` reads them all, and `tree` lays out the
spans of one trace as an indented tree, children under their parent, ordered by start
time::

    python -m examples._support.traces RUN_DIR              # the trace reaching most services
    python -m examples._support.traces RUN_DIR --list       # every trace, one line each
    python -m examples._support.traces RUN_DIR --trace ID   # that trace

Each span is one line: when it started (from the trace's first span), the service, the
span's name, its kind and duration, and its key attributes (`KEY_ATTRIBUTES`: the HTTP
status, the path served, the endpoint called, the queue and how its message ended, the
Error-handling service's record kind and attempt, ``error.type``). Below it, its events
(the decisions failsafe took in that span: ``failsafe.retry.scheduled`` with its delay,
``failsafe.failover``, ``failsafe.circuit.rejected`` ...), one sub-line each. A span whose
parent is in no file (its process was killed before the parent ended, so the parent was
never written) is shown at the top level, with a note.

Reads only JSON: no OpenTelemetry needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "KEY_ATTRIBUTES",
    "MAX_SPANS_SHOWN",
    "TRACES_DIR",
    "Span",
    "by_trace",
    "main",
    "pick_trace",
    "read_spans",
    "tree",
]

TRACES_DIR = "traces"
"""The folder of the run folder holding the trace files (``SERVICE.jsonl``)."""

MAX_SPANS_SHOWN = 500
"""The most spans `tree` prints by default; it says how many more there were."""

KEY_ATTRIBUTES: Mapping[str, str] = {
    "url.path": "path",
    "failsafe.endpoint": "endpoint",
    "http.request.resend_count": "resend",
    "http.response.status_code": "http",
    "messaging.destination.name": "queue",
    "failsafe.queue.outcome": "outcome",
    "failsafe.queue.attempts": "attempts",
    "failsafe.errors.kind": "kind",
    "failsafe.errors.attempt": "attempt",
    "failsafe.errors.outcome": "outcome",
    "error.type": "error",
}
"""The span attributes a line shows, in this order, with the label it shows them by."""


@dataclass(frozen=True)
class Span:
    """One span, as a line of a trace file holds it (`examples._support.telemetry.span_json`)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    kind: str
    start: int
    end: int
    status: str = "unset"
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def parse(cls, line: str) -> Span | None:
        """The span on ``line``, or ``None`` if the line is not a whole span."""
        try:
            data = json.loads(line)
            return cls(
                trace_id=str(data["trace_id"]),
                span_id=str(data["span_id"]),
                parent_id=None if data.get("parent_id") is None else str(data["parent_id"]),
                service=str(data["service"]),
                name=str(data["name"]),
                kind=str(data.get("kind", "internal")),
                start=int(data["start"]),
                end=int(data["end"]),
                status=str(data.get("status", "unset")),
                attributes=dict(data.get("attributes") or {}),
                events=list(data.get("events") or ()),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @property
    def duration_ms(self) -> float:
        """How long the span lasted, in milliseconds."""
        return (self.end - self.start) / 1e6


def read_spans(run_dir: str | Path) -> list[Span]:
    """Every span of every ``traces/*.jsonl`` file in the run folder.

    A line that is not a whole span (the last one of a process killed while writing it) is
    skipped.
    """
    spans: list[Span] = []
    for path in sorted((Path(run_dir) / TRACES_DIR).glob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            spans.extend(span for line in lines if (span := Span.parse(line)) is not None)
    return spans


def by_trace(spans: Iterable[Span]) -> dict[str, list[Span]]:
    """The spans grouped by trace id, each group ordered by start time."""
    traces: dict[str, list[Span]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    for group in traces.values():
        group.sort(key=lambda s: (s.start, s.end))
    return traces


def pick_trace(spans: Iterable[Span]) -> str | None:
    """The trace that reaches the most services (the latest one on a tie), or ``None``."""
    best: tuple[int, int, str] | None = None
    for trace_id, group in by_trace(spans).items():
        rank = (len({s.service for s in group}), group[0].start, trace_id)
        if best is None or rank > best:
            best = rank
    return None if best is None else best[2]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(_value(v) for v in value)
    return str(value)


def _key_attributes(span: Span) -> str:
    shown = [
        f"{label} {_value(span.attributes[key])}"
        for key, label in KEY_ATTRIBUTES.items()
        if key in span.attributes
    ]
    return "  " + ", ".join(shown) if shown else ""


def _event_line(event: Mapping[str, Any]) -> str:
    attributes = event.get("attributes") or {}
    shown = ", ".join(
        f"{key.removeprefix('failsafe.')}={_value(value)}" for key, value in attributes.items()
    )
    return f"{event.get('name', '?')}" + (f" ({shown})" if shown else "")


def tree(spans: Iterable[Span], trace_id: str, *, limit: int = MAX_SPANS_SHOWN) -> list[str]:
    """The spans of trace ``trace_id`` as the lines of an indented tree.

    Children are listed under their parent, each level ordered by start time. A span whose
    parent is not among the spans is listed at the top level with a note. Event names and
    attributes are shown as recorded, with the ``failsafe.`` prefix of attribute names left
    out.

    Args:
        spans: Spans of any traces (`read_spans`).
        trace_id: The trace to show (32 hex digits).
        limit: The most spans shown; the lines end with how many were left out.

    Returns:
        A heading, then one line per span and one per event (no line ends with a newline).
    """
    group = by_trace(spans).get(trace_id, [])
    if not group:
        return [f"trace {trace_id}: no spans"]
    known = {span.span_id for span in group}
    children: dict[str | None, list[Span]] = {}
    for span in group:  # by start time: children lists keep that order
        parent = span.parent_id if span.parent_id in known else None
        children.setdefault(parent, []).append(span)
    origin = group[0].start
    services = sorted({span.service for span in group})
    lines = [f"trace {trace_id}: {len(group)} spans from {', '.join(services)}"]
    shown = 0
    seen: set[str] = set()

    def show(span: Span, depth: int) -> None:
        nonlocal shown
        if span.span_id in seen or shown >= limit:
            return
        seen.add(span.span_id)
        shown += 1
        pad = "  " * depth
        offset = f"+{(span.start - origin) / 1e6:8.1f} ms"
        head = (
            f"{offset}  {pad}{span.service}: {span.name} "
            f"[{span.kind}, {span.duration_ms:.1f} ms]{_key_attributes(span)}"
        )
        if span.parent_id is not None and span.parent_id not in known:
            head += f"  (its parent {span.parent_id} is in no trace file: its process was killed?)"
        lines.append(head)
        for event in span.events:
            at = f"+{(int(event.get('time') or span.start) - origin) / 1e6:8.1f} ms"
            lines.append(f"{at}  {pad}    * {_event_line(event)}")
        for child in children.get(span.span_id, []):
            show(child, depth + 1)

    for top in children.get(None, []):
        show(top, 0)
    if shown < len(group):
        lines.append(f"... and {len(group) - shown} more spans (limit {limit})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m examples._support.traces RUN_DIR [--trace ID | --list]``; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m examples._support.traces",
        description="Print one trace of a run (its traces/*.jsonl files) as a tree.",
    )
    parser.add_argument("run_dir", help="the run folder (it holds traces/)")
    parser.add_argument("--trace", help="the trace id (default: the one reaching most services)")
    parser.add_argument("--list", action="store_true", help="list the traces instead")
    args = parser.parse_args(argv)
    spans = read_spans(args.run_dir)
    if not spans:
        print(f"no spans in {Path(args.run_dir) / TRACES_DIR}: was the run traced (--traces)?")
        return 1
    if args.list:
        groups = sorted(by_trace(spans).items(), key=lambda item: item[1][0].start)
        for trace_id, group in groups:
            services = ", ".join(sorted({s.service for s in group}))
            print(f"{trace_id}  {len(group):4d} spans  {group[0].name!r}  {services}")
        return 0
    chosen = str(args.trace).lower() if args.trace else pick_trace(spans)
    assert chosen is not None  # there are spans
    print("\n".join(tree(spans, chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
