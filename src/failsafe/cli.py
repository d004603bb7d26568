"""The ``failsafe`` command: the Error-handling service, a queue's DLQ, configuration files.

Usage:

```text
failsafe --version
failsafe errors serve [--db errors.db | --dsn postgresql://...] [--host 127.0.0.1]
                      [--port 8090] [--callback KIND=URL ...] [--callback-host HOST ...]
                      [--poll-interval 1.0]
                      [--schedule KIND=ATTEMPTS:FIRST[:MAX] ...]
                      [--retention-days 14] [--require-handlers] [--allow-edits]
                      [--alert-url URL] [--alert-at N ...]
                      [--dlq-broker URL --dlq-queue NAME ...]
failsafe errors list [--status open] [--kind K] [--source S] [--text T] [--trace-id ID]
                     [--limit N] [--json]
failsafe errors show ID [--json]
failsafe errors resolve|retry|discard ID [--note TEXT] [--actor NAME] [--json]
failsafe errors groups [--status open] [--kind K] [--source S] [--text T]
                       [--order newest|largest] [--limit N] [--json]
failsafe errors group show FINGERPRINT [--json]
failsafe errors group resolve|retry|discard FINGERPRINT [--dry-run] [--note TEXT]
                       [--actor NAME] [--json]
```

``list``, ``show``, the actions and the group commands work on a local store (``--db``,
default ``errors.db``, or ``--dsn``) or on a running service (``--url
http://127.0.0.1:8090``, with the review token from ``FAILSAFE_ERRORS_REVIEW_TOKEN``).
Exit codes: 0 done, 1 refused or not found (the reason on stderr), 2 bad usage or
configuration.

For the person on call, a queue's dead letters (see ``failsafe.queue.cli``):

```text
failsafe queue dlq list --queue NAME [--broker URL] [--place delayed|parked|all]
                        [--older-than AGE] [--error-type TYPE] [--id ID] [--limit N] [--json]
failsafe queue dlq show ID --queue NAME [--broker URL] [--json]
failsafe queue dlq replay --queue NAME [FILTERS | --all] [--batch 100] [--rate N] [--dry-run]
failsafe queue dlq purge --queue NAME [FILTERS | --all] [--batch 100] [--dry-run] [--yes]
```

``--broker`` is ``sqlite:///path.db``, a file path or ``amqp://...`` (default:
``$FAILSAFE_QUEUE_BROKER``, else ``queue.db``).

For a configuration file of named pipelines (see ``failsafe.config``):

```text
failsafe config check FILE [--env]
```

``check`` loads the file (with the ``FAILSAFE_<PIPELINE>_<KIND>_<OPTION>`` overrides of the
environment when ``--env`` is given) and prints each pipeline as ``name: <repr>``; on the
first problem it prints it as ``file:line: key = value: problem`` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from failsafe._extras import MissingExtra
from failsafe._version import __version__
from failsafe.exceptions import ConfigurationError

__all__ = ["errors_main", "main"]

OK: Final = 0
REFUSED: Final = 1
USAGE: Final = 2

_OPEN: Final = ("pending_retry", "retrying", "needs_review")
_ALL: Final = ("pending_retry", "retrying", "needs_review", "resolved", "discarded")
_TRACE_ID: Final = re.compile("[0-9a-f]{32}")  # a W3C trace id, lower case


class _Refused(Exception):
    """The store or service refused (not found, invalid move, unreachable): exit 1."""


class _Usage(Exception):
    """Bad arguments or configuration: exit 2."""


# -- where the records are ----------------------------------------------------------------
class _Target:
    """Records as JSON objects, from a local store or a running service."""

    def find(self, query: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def get(self, record_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def act(self, action: str, record_id: str, *, actor: str, note: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def groups(self, query: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def group(self, fingerprint: str) -> dict[str, Any]:
        raise NotImplementedError

    def group_act(
        self, action: str, fingerprint: str, *, actor: str, note: str | None, dry_run: bool
    ) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class _Local(_Target):
    """A store opened here, through `ErrorDesk` (so moves are audited as in the service)."""

    def __init__(self, db: str | None, dsn: str | None) -> None:
        from failsafe.errors.desk import ErrorDesk
        from failsafe.errors.store import ErrorStore

        store: ErrorStore
        if dsn is not None:
            try:
                from failsafe.errors.postgres import PostgresStore
            except ImportError as exc:
                raise _Usage(
                    f"--dsn needs the postgres extra (pip install 'failsafe-kit[postgres]'): {exc}"
                ) from None
            try:
                store = PostgresStore(dsn)
            except Exception as exc:  # psycopg's errors: say what failed, exit 1
                raise _Refused(f"cannot open the PostgreSQL store: {exc}") from None
        else:
            from failsafe.errors.sqlite import SQLiteStore

            path = db or "errors.db"
            if path != ":memory:" and not Path(path).is_file():
                raise _Refused(
                    f"no error store at {path} (give --db PATH, --dsn URL or --url SERVICE)"
                )
            try:
                store = SQLiteStore(path)
            except ConfigurationError as exc:
                raise _Usage(f"--db: {exc.problem}") from None
        self.desk = ErrorDesk(store)

    def find(self, query: dict[str, Any]) -> dict[str, Any]:
        from failsafe.errors.record import Status
        from failsafe.errors.store import Query

        try:
            q = Query(
                statuses=tuple(Status(s) for s in query["statuses"]),
                kind=query["kind"],
                source=query["source"],
                text=query["text"],
                fingerprint=query["fingerprint"],
                trace_id=query["trace_id"],
                limit=query["limit"],
                offset=query["offset"],
            )
        except ValueError as exc:
            raise _Usage(str(exc)) from None
        page = self.desk.find(q)
        return {
            "records": [r.to_json() for r in page.records],
            "total": page.total,
            "total_exact": page.total_exact,
            "limit": q.limit,
            "offset": q.offset,
        }

    def get(self, record_id: str) -> dict[str, Any]:
        from failsafe.errors.store import StoreError

        try:
            return self.desk.get(record_id).to_json()
        except StoreError as exc:
            raise _Refused(str(exc)) from None

    def act(self, action: str, record_id: str, *, actor: str, note: str | None) -> dict[str, Any]:
        from failsafe.errors.store import StoreError

        operation: Callable[..., Any] = getattr(self.desk, action)
        try:
            return dict(operation(record_id, actor=actor, note=note).to_json())
        except StoreError as exc:
            raise _Refused(str(exc)) from None

    def groups(self, query: dict[str, Any]) -> dict[str, Any]:
        from failsafe.errors.record import Status
        from failsafe.errors.store import GroupQuery

        try:
            q = GroupQuery(
                statuses=tuple(Status(s) for s in query["statuses"]),
                kind=query["kind"],
                source=query["source"],
                text=query["text"],
                order=query["order"],
                limit=query["limit"],
                offset=query["offset"],
            )
        except ValueError as exc:
            raise _Usage(str(exc)) from None
        page = self.desk.store.groups(q)
        return {
            "groups": [g.to_json() for g in page.groups],
            "total": page.total,
            "limit": q.limit,
            "offset": q.offset,
        }

    def group(self, fingerprint: str) -> dict[str, Any]:
        from failsafe.errors.store import StoreError

        try:
            return self.desk.store.group(fingerprint).to_json()
        except StoreError as exc:
            raise _Refused(str(exc)) from None

    def group_act(
        self, action: str, fingerprint: str, *, actor: str, note: str | None, dry_run: bool
    ) -> dict[str, Any]:
        from failsafe.errors.store import StoreError

        try:
            done = self.desk.group_action(
                fingerprint, action, actor=actor, note=note, dry_run=dry_run
            )
        except StoreError as exc:
            raise _Refused(str(exc)) from None
        return done.to_json()

    def close(self) -> None:
        self.desk.store.close()


class _Remote(_Target):
    """A running service, through its JSON API with the review token."""

    def __init__(self, url: str, token: str | None) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - httpx comes with the errors extra
            raise _Usage("--url needs httpx (pip install 'failsafe-kit[errors]')") from None
        if not url.startswith(("http://", "https://")):
            raise _Usage(f"--url must start with http:// or https://, got {url!r}")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._httpx = httpx
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10.0)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except self._httpx.HTTPError as exc:
            raise _Refused(f"cannot reach the service at {self.client.base_url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        reason = body.get("error") if isinstance(body, dict) else None
        reason = reason or response.text[:200] or response.reason_phrase
        if response.status_code == 401:
            reason = f"{reason} (set FAILSAFE_ERRORS_REVIEW_TOKEN to the review token)"
        raise _Refused(f"HTTP {response.status_code}: {reason}")

    def find(self, query: dict[str, Any]) -> dict[str, Any]:
        params = {
            "status": ",".join(query["statuses"]),
            "kind": query["kind"],
            "source": query["source"],
            "q": query["text"],
            "fingerprint": query["fingerprint"],
            "trace_id": query["trace_id"],
            "limit": query["limit"],
            "offset": query["offset"],
        }
        return self._call("GET", "/v1/records", params={k: v for k, v in params.items() if v})

    def groups(self, query: dict[str, Any]) -> dict[str, Any]:
        params = {
            "status": ",".join(query["statuses"]) or "all",
            "kind": query["kind"],
            "source": query["source"],
            "q": query["text"],
            "order": query["order"],
            "limit": query["limit"],
            "offset": query["offset"],
        }
        return self._call("GET", "/v1/groups", params={k: v for k, v in params.items() if v})

    def group(self, fingerprint: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/groups/{_segment(fingerprint)}")

    def group_act(
        self, action: str, fingerprint: str, *, actor: str, note: str | None, dry_run: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"actor": actor, "dry_run": dry_run}
        if note is not None:
            body["note"] = note
        return self._call("POST", f"/v1/groups/{_segment(fingerprint)}/{action}", json=body)

    def get(self, record_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/records/{_segment(record_id)}")

    def act(self, action: str, record_id: str, *, actor: str, note: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"actor": actor}
        if note is not None:
            body["note"] = note
        return self._call("POST", f"/v1/records/{_segment(record_id)}/{action}", json=body)

    def close(self) -> None:
        self.client.close()


def _segment(record_id: str) -> str:
    from urllib.parse import quote

    return quote(record_id, safe="")


def _target(args: argparse.Namespace) -> _Target:
    if args.url is not None:
        from failsafe.errors.auth import Tokens

        return _Remote(args.url, Tokens.from_env().review)
    return _Local(args.db, args.dsn)


# -- output ---------------------------------------------------------------------------------
def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text: str | None, limit: int = 60) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _print_list(page: dict[str, Any], out: TextIO) -> None:
    records = page.get("records", [])
    if not records:
        out.write("no records match\n")
        return
    columns = ("id", "status", "kind", "source", "count", "created (UTC)", "error")
    rows = [
        (
            r["id"],
            r["status"],
            r["kind"],
            r["source"],
            str(r["count"]),
            _when(r["created_at"]),
            _one_line(": ".join(x for x in (r.get("error_type"), r.get("error_message")) if x)),
        )
        for r in records
    ]
    _print_table(columns, rows, out)
    offset = int(page.get("offset", 0))
    out.write(
        f"{len(records)} of {page.get('total', len(records))}"
        f"{'' if page.get('total_exact', True) else '+'} records"
        f" (from {offset + 1}; --offset for more)\n"
    )


def _print_groups(page: dict[str, Any], out: TextIO) -> None:
    groups = page.get("groups", [])
    if not groups:
        out.write("no groups match\n")
        return
    columns = ("fingerprint", "open", "records", "reports", "last seen (UTC)", "kind", "error")
    rows = [
        (
            g["fingerprint"],
            str(g["open"]),
            str(g["records"]),
            str(g["reports"]),
            _when(g["last_seen"]),
            g["kind"],
            _one_line(": ".join(x for x in (g.get("error_type"), g.get("title")) if x)),
        )
        for g in groups
    ]
    _print_table(columns, rows, out)
    offset = int(page.get("offset", 0))
    out.write(
        f"{len(groups)} of {page.get('total', len(groups))} groups"
        f" (from {offset + 1}; --offset for more)\n"
    )


def _print_group(g: dict[str, Any], out: TextIO) -> None:
    facts = [
        ("fingerprint", g["fingerprint"]),
        ("kind", g["kind"]),
        ("error type", g.get("error_type") or "-"),
        ("title", g.get("title") or "-"),
        ("records", f"{g['records']} ({g['open']} open)"),
        ("reports", str(g["reports"])),
        ("first seen", _when(g["first_seen"]) + " UTC"),
        ("last seen", _when(g["last_seen"]) + " UTC"),
        ("statuses", ", ".join(f"{s} {n}" for s, n in g["statuses"].items() if n) or "-"),
        ("sources", ", ".join(f"{s['source']} {s['records']}" for s in g["sources"]) or "-"),
    ]
    for name, value in facts:
        out.write(f"{name + ':':<16}{value}\n")
    hours = g.get("hours") or []
    out.write(f"reports per hour (last 7 days, hours with reports): {len(hours)}\n")
    for h in hours[-24:]:
        out.write(f"  {_when(h['at'])}  {h['reports']}\n")


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    for row in (columns, *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _print_record(r: dict[str, Any], out: TextIO) -> None:
    facts = [
        ("id", r["id"]),
        ("status", r["status"]),
        ("kind", r["kind"]),
        ("source", r["source"]),
        ("asked for", r["action"]),
        ("reports", str(r["count"])),
        ("created", _when(r["created_at"]) + " UTC"),
        ("updated", _when(r["updated_at"]) + " UTC"),
        ("next attempt", _when(r.get("next_attempt_at"))),
        ("correlation id", r.get("correlation_id") or "-"),
        ("trace id", r.get("trace_id") or "-"),
        ("span id", r.get("span_id") or "-"),
        ("error type", r.get("error_type") or "-"),
        ("error message", r.get("error_message") or "-"),
    ]
    for name, value in facts:
        out.write(f"{name + ':':<16}{value}\n")
    out.write("payload:\n")
    for line in json.dumps(r.get("payload"), indent=2, sort_keys=True).splitlines():
        out.write(f"  {line}\n")
    if r.get("traceback"):
        out.write("traceback:\n")
        for line in str(r["traceback"]).splitlines():
            out.write(f"  {line}\n")
    attempts = r.get("attempts") or []
    out.write(f"attempts: {len(attempts)}\n")
    for a in attempts:
        out.write(f"  {_when(a['at'])}  {'ok' if a['ok'] else 'failed'}  {a['detail']}\n")
    out.write("history:\n")
    for h in r.get("history") or []:
        note = f" — {h['note']}" if h.get("note") else ""
        out.write(f"  {_when(h['at'])}  {h['actor']}: {h['action']}{note}\n")


# -- commands --------------------------------------------------------------------------------
def _statuses(values: Sequence[str] | None) -> tuple[str, ...]:
    if not values:
        return _OPEN
    chosen: list[str] = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if item == "open":
                chosen.extend(_OPEN)
            elif item == "all":
                chosen.extend(_ALL)
            elif item in _ALL:
                chosen.append(item)
            elif item:
                known = ", ".join(("open", *_ALL, "all"))
                raise _Usage(f"--status: unknown status {item!r} (known: {known})")
    return tuple(dict.fromkeys(chosen))


def _cmd_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise _Usage(f"--limit must be from 1 to 500, got {args.limit}")
    if args.offset < 0:
        raise _Usage(f"--offset must be >= 0, got {args.offset}")
    trace_id = (args.trace_id or "").strip().lower() or None
    if trace_id is not None and not _TRACE_ID.fullmatch(trace_id):
        raise _Usage(f"--trace-id must be a trace id (32 hex digits), got {args.trace_id!r}")
    query = {
        "statuses": _statuses(args.status),
        "kind": args.kind,
        "source": args.source,
        "text": args.text,
        "fingerprint": args.group,
        "trace_id": trace_id,
        "limit": args.limit,
        "offset": args.offset,
    }
    target = _target(args)
    try:
        page = target.find(query)
    finally:
        target.close()
    if args.json:
        json.dump(page, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        _print_list(page, sys.stdout)
    return OK


def _cmd_show(args: argparse.Namespace) -> int:
    target = _target(args)
    try:
        record = target.get(args.id)
    finally:
        target.close()
    if args.json:
        json.dump(record, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        _print_record(record, sys.stdout)
    return OK


def _cmd_act(args: argparse.Namespace) -> int:
    actor = args.actor.strip()
    if not actor:
        raise _Usage("--actor must not be empty")
    target = _target(args)
    try:
        record = target.act(args.command, args.id, actor=actor, note=args.note or None)
    finally:
        target.close()
    if args.json:
        json.dump(record, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"record {record['id']} is now {record['status']}\n")
    return OK


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _cmd_groups(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise _Usage(f"--limit must be from 1 to 500, got {args.limit}")
    if args.offset < 0:
        raise _Usage(f"--offset must be >= 0, got {args.offset}")
    statuses = _statuses(args.status)
    query = {
        "statuses": () if statuses == _ALL else statuses,
        "kind": args.kind,
        "source": args.source,
        "text": args.text,
        "order": args.order,
        "limit": args.limit,
        "offset": args.offset,
    }
    target = _target(args)
    try:
        page = target.groups(query)
    finally:
        target.close()
    if args.json:
        _print_json(page)
    else:
        _print_groups(page, sys.stdout)
    return OK


def _cmd_group(args: argparse.Namespace) -> int:
    target = _target(args)
    try:
        if args.action == "show":
            found = target.group(args.fingerprint)
        else:
            actor = args.actor.strip()
            if not actor:
                raise _Usage("--actor must not be empty")
            found = target.group_act(
                args.action,
                args.fingerprint,
                actor=actor,
                note=args.note or None,
                dry_run=args.dry_run,
            )
    finally:
        target.close()
    if args.json:
        _print_json(found)
    elif args.action == "show":
        _print_group(found, sys.stdout)
    elif found["dry_run"]:
        sys.stdout.write(
            f"{args.action} would change {found['matched']} records of {found['fingerprint']}"
            " (dry run: nothing changed)\n"
        )
    else:
        sys.stdout.write(
            f"{args.action}: {found['changed']} of {found['matched']} records of"
            f" {found['fingerprint']} changed\n"
        )
    return OK


def _alerts(args: argparse.Namespace) -> dict[str, Any]:
    """``serve``'s alert options, when given (the service's defaults otherwise)."""
    chosen: dict[str, Any] = {}
    if args.alert_url is not None:
        chosen["alert_url"] = args.alert_url
    if args.alert_at:
        if args.alert_url is None:
            raise _Usage("--alert-at needs --alert-url")
        chosen["alert_thresholds"] = tuple(args.alert_at)
    return chosen


def _dead_letters(args: argparse.Namespace) -> dict[str, Any]:
    """``serve``'s dead-letter pages: the broker and its queues, when given."""
    if args.dlq_broker is None and not args.dlq_queue:
        return {}
    if args.dlq_broker is None or not args.dlq_queue:
        raise _Usage("--dlq-broker and --dlq-queue go together (the broker, and its queues)")
    return {"dlq_broker": args.dlq_broker, "dlq_queues": tuple(args.dlq_queue)}


def _callbacks(values: Sequence[str] | None) -> dict[str, str]:
    callbacks: dict[str, str] = {}
    for value in values or ():
        kind, sep, url = value.partition("=")
        if not sep or not kind.strip() or not url.strip():
            raise _Usage(f"--callback must be KIND=URL, got {value!r}")
        if not url.startswith(("http://", "https://")):
            raise _Usage(f"--callback {kind}: the URL must start with http:// or https://")
        callbacks[kind.strip()] = url.strip()
    return callbacks


def _schedules(values: Sequence[str] | None) -> dict[str, Any]:
    """``KIND=ATTEMPTS:FIRST[:MAX]`` (``*`` as KIND: every other kind) -> RetrySchedule."""
    from failsafe.backoff import Backoff
    from failsafe.errors.desk import RetrySchedule

    schedules: dict[str, Any] = {}
    for value in values or ():
        kind, sep, spec = value.partition("=")
        parts = spec.split(":")
        if not sep or not kind.strip() or len(parts) not in (2, 3):
            raise _Usage(f"--schedule must be KIND=ATTEMPTS:FIRST[:MAX] (seconds), got {value!r}")
        try:
            attempts = int(parts[0])
            first = float(parts[1])
            maximum = float(parts[2]) if len(parts) == 3 else max(first, 3600.0)
            schedule = RetrySchedule(
                attempts=attempts,
                backoff=Backoff.exponential(first, maximum=maximum, jitter="full"),
            )
        except (ValueError, ConfigurationError) as exc:
            raise _Usage(f"--schedule {value!r}: {exc}") from None
        schedules[kind.strip()] = schedule
    return schedules


def _cmd_serve(args: argparse.Namespace) -> int:
    from failsafe.errors.auth import Tokens
    from failsafe.errors.service import serve
    from failsafe.errors.worker import DEFAULT_CALLBACK_HOSTS

    if args.poll_interval <= 0:
        raise _Usage(f"--poll-interval must be > 0, got {args.poll_interval}")
    if not 0 < args.port < 65536:
        raise _Usage(f"--port must be from 1 to 65535, got {args.port}")
    if not 0 <= args.retention_days < float("inf"):
        raise _Usage(f"--retention-days must be >= 0 (0: keep forever), got {args.retention_days}")
    callbacks = _callbacks(args.callback)
    schedules = _schedules(args.schedule)
    db = None if args.dsn is not None else (args.db or "errors.db")
    try:
        serve(
            db=db,
            dsn=args.dsn,
            host=args.host,
            port=args.port,
            tokens=Tokens.from_env(),
            callbacks=callbacks,
            callback_hosts=args.callback_host or DEFAULT_CALLBACK_HOSTS,
            poll_interval=args.poll_interval,
            schedules=schedules,
            retention_days=args.retention_days or None,
            require_handlers=args.require_handlers,
            allow_edits=args.allow_edits,
            **_alerts(args),
            **_dead_letters(args),
        )
    except ConfigurationError as exc:  # name the command's option, not the function's
        option = {
            "db": "--db",
            "path": "--db",
            "port": "--port",
            "host": "--host",
            "alert_url": "--alert-url",
            "thresholds": "--alert-at",
        }
        raise _Usage(f"{option.get(exc.option, exc.option)}: {exc.problem}") from None
    return OK


# -- the parser ----------------------------------------------------------------------------
def _store_options(parser: argparse.ArgumentParser, *, remote: bool = True) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db", metavar="PATH", help="a SQLite store file (default: errors.db)", default=None
    )
    where.add_argument("--dsn", metavar="URL", help="a PostgreSQL store (postgresql://...)")
    if remote:
        where.add_argument(
            "--url",
            metavar="URL",
            help="a running service (token from FAILSAFE_ERRORS_REVIEW_TOKEN)",
        )


def _add_errors(commands: Any, prog_help: str = "the Error-handling service") -> None:
    errors = commands.add_parser("errors", help=prog_help, description=prog_help)
    _fill_errors(errors)


def _fill_errors(errors: argparse.ArgumentParser) -> None:
    sub = errors.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="run the service (API, review pages, retry worker)")
    _store_options(serve, remote=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8090, help="port to listen on")
    serve.add_argument(
        "--callback",
        action="append",
        metavar="KIND=URL",
        help="POST records of KIND to URL for automatic retries (repeatable); a kind set"
        " here cannot be changed over HTTP",
    )
    serve.add_argument(
        "--callback-host",
        action="append",
        metavar="HOST",
        help="a host that callbacks registered over HTTP (PUT /v1/handlers/KIND, review"
        " token) may point at (repeatable; default: 127.0.0.1, ::1 and localhost)",
    )
    serve.add_argument(
        "--schedule",
        action="append",
        metavar="KIND=ATTEMPTS:FIRST[:MAX]",
        help="how KIND is retried: attempts before review, the first delay and the cap in"
        " seconds (exponential, full jitter); KIND * sets the default (repeatable)",
    )
    serve.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between worker rounds"
    )
    serve.add_argument(
        "--retention-days",
        type=float,
        default=14.0,
        metavar="DAYS",
        help="delete resolved and discarded records unchanged for DAYS (default 14; 0: keep"
        " them forever); open records are never deleted",
    )
    serve.add_argument(
        "--require-handlers",
        action="store_true",
        help="refuse (422) a retry report for a kind that has no handler",
    )
    serve.add_argument(
        "--allow-edits",
        action="store_true",
        help="let reviewers correct a record's payload and retry it (off by default)",
    )
    serve.add_argument(
        "--alert-url",
        metavar="URL",
        help="POST alerts (a new failure group, a group past --alert-at open records, a"
        " record escalated to review) to this webhook",
    )
    serve.add_argument(
        "--alert-at",
        type=int,
        action="append",
        metavar="N",
        help="open records of a group at which an alert says it grew (repeatable; default"
        " 100, 1000 and 10000)",
    )
    serve.add_argument(
        "--dlq-broker",
        metavar="URL",
        help="a queue broker (sqlite:///queue.db, amqp://...) whose dead letters the review"
        " pages show and act on (with --dlq-queue)",
    )
    serve.add_argument(
        "--dlq-queue",
        action="append",
        metavar="NAME",
        help="a work queue of --dlq-broker to show (repeatable)",
    )
    serve.set_defaults(run=_cmd_serve)

    listing = sub.add_parser("list", help="list records (open ones by default)")
    _store_options(listing)
    listing.add_argument(
        "--status",
        action="append",
        help="open (default), all, or statuses, comma-separated or repeated",
    )
    listing.add_argument("--kind", help="only this kind")
    listing.add_argument("--source", help="only this source service")
    listing.add_argument("--text", help="a substring of kind, error or payload")
    listing.add_argument("--group", metavar="FINGERPRINT", help="only this failure group")
    listing.add_argument(
        "--trace-id", metavar="ID", help="only the records of this trace (32 hex digits)"
    )
    listing.add_argument("--limit", type=int, default=50, help="records to show (1-500)")
    listing.add_argument("--offset", type=int, default=0, help="records to skip")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_cmd_list)

    show = sub.add_parser("show", help="show one record")
    _store_options(show)
    show.add_argument("id", help="the record's id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=_cmd_show)

    helps = {
        "resolve": "close a record as dealt with",
        "retry": "queue a record for an automatic attempt now",
        "discard": "close a record as not worth acting on",
    }
    for action, text in helps.items():
        act = sub.add_parser(action, help=text)
        _store_options(act)
        act.add_argument("id", help="the record's id")
        act.add_argument("--note", help="why (kept in the record's history)")
        act.add_argument("--actor", default="reviewer", help="your name (default: reviewer)")
        act.add_argument("--json", action="store_true", help="print the record as JSON")
        act.set_defaults(run=_cmd_act)

    groups = sub.add_parser("groups", help="list failure groups (with open records by default)")
    _store_options(groups)
    groups.add_argument(
        "--status",
        action="append",
        help="groups with a record in: open (default), all, or statuses, comma-separated",
    )
    groups.add_argument("--kind", help="only this kind")
    groups.add_argument("--source", help="only groups with a record from this service")
    groups.add_argument("--text", help="a substring of kind, error type or title")
    groups.add_argument(
        "--order",
        choices=("newest", "largest"),
        default="newest",
        help="newest (last seen first, the default) or largest (most records first)",
    )
    groups.add_argument("--limit", type=int, default=50, help="groups to show (1-500)")
    groups.add_argument("--offset", type=int, default=0, help="groups to skip")
    groups.add_argument("--json", action="store_true", help="print JSON")
    groups.set_defaults(run=_cmd_groups)

    group = sub.add_parser("group", help="show a failure group, or act on all its records")
    group_actions = group.add_subparsers(dest="action", metavar="ACTION")
    group_actions.required = True
    group_helps = {
        "show": "show a group: its numbers, sources and reports per hour",
        "resolve": "close every open record of a group as dealt with",
        "retry": "queue every record of a group that needs review for a retry now",
        "discard": "close every open record of a group as not worth acting on",
    }
    for action, text in group_helps.items():
        one = group_actions.add_parser(action, help=text)
        _store_options(one)
        one.add_argument("fingerprint", help="the group's fingerprint")
        if action != "show":
            one.add_argument(
                "--dry-run", action="store_true", help="change nothing; say how many it would"
            )
            one.add_argument("--note", help="why (kept in each record's history)")
            one.add_argument("--actor", default="reviewer", help="your name (default: reviewer)")
        one.add_argument("--json", action="store_true", help="print JSON")
        one.set_defaults(run=_cmd_group)


def _add_queue(commands: Any) -> None:
    from failsafe.queue.cli import fill_queue_parser  # only when main() builds its parser

    text = "a queue's dead letters: list, show, replay, purge"
    fill_queue_parser(commands.add_parser("queue", help=text, description=text))


def _cmd_config_check(args: argparse.Namespace) -> int:
    from failsafe.config import ConfigError, load  # only for this command

    path = Path(args.file)
    if not path.is_file():
        sys.stderr.write(f"failsafe config check: no such file: {args.file}\n")
        return USAGE
    # import strings name the application's modules: find them from where the command runs,
    # as uvicorn finds an app
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        config = load(path, environ=None if args.env else {})
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return USAGE
    if not config:
        sys.stderr.write(f"{args.file}: no pipeline in [pipelines]\n")
    for name, pipeline in config.items():
        sys.stdout.write(f"{name}: {pipeline!r}\n")
    return OK


def _add_config(commands: Any) -> None:
    text = "named pipelines from a configuration file: check one"
    config = commands.add_parser("config", help=text, description=text)
    sub = config.add_subparsers(dest="command", metavar="COMMAND")

    def usage(args: argparse.Namespace) -> int:
        config.print_help(sys.stderr)
        return USAGE

    config.set_defaults(run=usage)
    check = sub.add_parser(
        "check",
        help="load a configuration file and print each pipeline in words (exit 2 on a problem)",
    )
    check.add_argument("file", help="the TOML file")
    check.add_argument(
        "--env",
        action="store_true",
        help="apply the FAILSAFE_<PIPELINE>_<KIND>_<OPTION> variables of the environment",
    )
    check.set_defaults(run=_cmd_config_check)


def _run(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return run(args)
    except _Usage as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return USAGE
    except ConfigurationError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return USAGE
    except _Refused as exc:
        sys.stderr.write(f"{parser.prog}: {exc}\n")
        return REFUSED
    except MissingExtra as exc:  # a part not installed: say which, and how to add it
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``failsafe`` command; return its exit code (0 ok, 1 refused, 2 usage).

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Example:
        ```python
        from failsafe.cli import main

        code = main(["errors", "list", "--db", "errors.db", "--json"])
        ```
    """
    parser = argparse.ArgumentParser(prog="failsafe", description="failsafe tools")
    parser.add_argument("--version", action="version", version=f"failsafe {__version__}")
    commands = parser.add_subparsers(dest="tool", metavar="TOOL")
    _add_errors(commands)
    _add_queue(commands)
    _add_config(commands)
    return _run(parser, sys.argv[1:] if argv is None else argv)


def errors_main(argv: Sequence[str] | None = None) -> int:
    """Run ``failsafe errors`` directly (``python -m failsafe.errors``); return the exit code.

    Args:
        argv: The arguments after ``errors`` (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m failsafe.errors", description="the Error-handling service"
    )
    _fill_errors(parser)
    return _run(parser, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
