"""The logic of the SQL stores, written once over a small connection seam.

`SQLiteStore` and `PostgresStore` differ only in how they open a transaction, spell a
placeholder, and lock rows; every decision (dedupe, moves, claims) lives here.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

import attrs

from failsafe.errors import _sql
from failsafe.errors.fingerprint import fingerprint
from failsafe.errors.record import Action, AuditEntry, ErrorRecord, Report, Status
from failsafe.errors.store import (
    COUNT_LIMIT,
    EDITABLE,
    GROUP_SOURCES,
    ID_PREFIX,
    RECEIPT_SECONDS,
    REPEAT_SAMPLE,
    AmbiguousId,
    Group,
    GroupNotFound,
    GroupPage,
    GroupQuery,
    InvalidMove,
    Page,
    Query,
    RecordNotFound,
    StoreUnavailable,
    check_move,
)

_HEX: Final = re.compile("[0-9a-f]+")
_ALERTS_SINCE: Final = "failsafe:since"  # the outbox row saying when alerts began

Run = Callable[[str, Sequence[Any]], Any]
"""Execute one statement in the open transaction; returns a cursor."""

GROUP_MAX: Final = 128
"""The most reports one group commit stores in a transaction."""


class _Pending:
    """One `add` waiting in a group: its arguments, then its outcome."""

    __slots__ = ("args", "done", "error", "lead", "result")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.done = threading.Event()
        self.lead = False  # set (with done) when this caller is to commit the next group
        self.result: Any = None
        self.error: BaseException | None = None


class _GroupCommit:
    """Concurrent `add` calls share one transaction (leader and followers, no thread of its own).

    A caller that finds no group being committed opens a transaction and commits its own
    report and every report queued until the transaction opened (at most `GROUP_MAX`); if
    one report fails, the group is stored again with a savepoint each, so one report's
    failure is its caller's alone. Its followers wait until
    that commit is done, then return: an answer is never given before its report is
    committed. Under no concurrency a group is one report, as before.
    """

    def __init__(self, commit: Callable[[Callable[[], list[_Pending]]], None]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False

    def submit(self, args: tuple[Any, ...]) -> Any:
        mine = _Pending(args)
        with self._lock:
            self._queue.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.done.wait()
            lead = mine.lead
        if lead:
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _lead(self) -> None:
        group: list[_Pending] = []

        def take() -> list[_Pending]:
            # called once the transaction is open: it takes everyone who queued meanwhile
            with self._lock:
                group[:] = self._queue[:GROUP_MAX]
                del self._queue[:GROUP_MAX]
            return group

        try:
            self._commit(take)
        except BaseException as exc:  # the transaction failed whole: every report in it did
            if not group:
                take()  # it never opened: the reports queued now fail with it
            for pending in group:
                if pending.error is None:
                    pending.result, pending.error = None, exc
        finally:
            with self._lock:
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._busy = False
                else:
                    following.lead = True  # it commits the next group
            for pending in group:
                pending.done.set()
            if following is not None:
                following.done.set()


def _new_record(
    report: Report,
    now: float,
    next_attempt_at: float | None,
    *,
    payload: Any = None,
    history: tuple[AuditEntry, ...] = (),
) -> ErrorRecord:
    """The record a new report opens (a fresh id, no attempts; ``payload`` if given)."""
    status = Status.PENDING_RETRY if report.action is Action.RETRY else Status.NEEDS_REVIEW
    return ErrorRecord(
        id=uuid.uuid4().hex,
        kind=report.kind,
        source=report.source,
        action=report.action,
        payload=report.payload if payload is None else payload,
        error_type=report.error_type,
        error_message=report.error_message,
        traceback=report.traceback,
        correlation_id=report.correlation_id,
        dedupe_key=report.dedupe_key,
        count=1,
        status=status,
        attempts=(),
        history=history,
        created_at=now,
        updated_at=now,
        next_attempt_at=next_attempt_at if status is Status.PENDING_RETRY else None,
        fingerprint=fingerprint(report),
        trace_id=report.trace_id,
        span_id=report.span_id,
    )


@attrs.frozen
class _Stored:
    """A stored record's fields that its fingerprint is made from."""

    kind: str
    error_type: str | None
    error_message: str | None
    traceback: str | None


def fill_fingerprints(run: Run) -> None:
    """Give the records stored before fingerprints existed theirs (run when a store opens).

    A thousand records at a time, in the order of their ids; records that have one are
    skipped, so a store opened again does nothing.
    """
    after = ""
    while True:
        rows = run(
            "SELECT id, kind, error_type, error_message, traceback FROM failsafe_errors"
            " WHERE id > ? ORDER BY id LIMIT 1000",
            (after,),
        ).fetchall()
        if not rows:
            return
        for record_id, *fields in rows:
            run(
                "UPDATE failsafe_errors SET fingerprint = ? WHERE id = ? AND fingerprint = ''",
                (fingerprint(_Stored(*fields)), record_id),
            )
        after = rows[-1][0]


def _as_stored(args: tuple[Any, ...]) -> tuple[ErrorRecord, tuple[Any, ...]]:
    """A new record and its row, the record as reading it back gives it (stored payload)."""
    report, now, next_attempt_at, actor = args[:4]
    text = _sql.payload_text(report.payload)
    entry = AuditEntry(at=now, actor=actor, action="reported", note=None)
    record = _new_record(report, now, next_attempt_at, payload=json.loads(text), history=(entry,))
    return record, _sql.record_row(record, payload=text)


class SQLStore:
    """Implements the `ErrorStore` protocol over ``_transaction()``; see the subclasses."""

    #: appended to SELECTs that pick rows to change (PostgreSQL: FOR UPDATE ...)
    _lock_rows = ""
    _lock_due = ""

    #: how statements over many rows are spelled (PostgreSQL: arrays)
    _bulk: _sql.Bulk = _sql.Bulk()

    _group: _GroupCommit | None = None
    _lock_group = threading.Lock()  # only to create ``_group`` once

    def _transaction(self) -> AbstractContextManager[Run]:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Run]:
        """A transaction that only reads (a store may give it a connection of its own)."""
        return self._transaction()

    def _same_add_again(self, error: Exception, report_id: str | None) -> bool:
        """Whether ``error`` from one add means: try that add once more (a store's rule)."""
        return False

    # -- reads ----------------------------------------------------------------------------
    def _load(self, run: Run, record_id: str) -> ErrorRecord:
        row = run(_sql.SELECT_RECORD, (record_id,)).fetchone()
        if row is None:
            raise RecordNotFound(record_id)
        attempts = run(_sql.SELECT_ATTEMPTS, (record_id,)).fetchall()
        history = run(_sql.SELECT_HISTORY, (record_id,)).fetchall()
        return _sql.build(row, attempts, history)

    def _load_many(self, run: Run, record_ids: Sequence[str]) -> tuple[ErrorRecord, ...]:
        """Records in the order of ``record_ids``: three queries for the page, not three each."""
        if not record_ids:
            return ()
        marks = ", ".join("?" for _ in record_ids)
        rows = {
            row[0]: row
            for row in run(
                f"SELECT {_sql.RECORD_COLUMNS} FROM failsafe_errors WHERE id IN ({marks})",
                list(record_ids),
            ).fetchall()
        }
        attempts: dict[str, list[Any]] = {i: [] for i in record_ids}
        for row in run(
            "SELECT record_id, at, ok, detail FROM failsafe_error_attempts"
            f" WHERE record_id IN ({marks}) ORDER BY seq",
            list(record_ids),
        ).fetchall():
            attempts[row[0]].append(row[1:])
        history: dict[str, list[Any]] = {i: [] for i in record_ids}
        for row in run(
            "SELECT record_id, at, actor, action, note FROM failsafe_error_history"
            f" WHERE record_id IN ({marks}) ORDER BY seq",
            list(record_ids),
        ).fetchall():
            history[row[0]].append(row[1:])
        return tuple(_sql.build(rows[i], attempts[i], history[i]) for i in record_ids if i in rows)

    def get(self, record_id: str) -> ErrorRecord:
        """Return one record. Raises `RecordNotFound`."""
        with self._reading() as run:
            return self._load(run, record_id)

    def lookup_id(self, given: str) -> str:
        """The id of the record ``given`` names, or `RecordNotFound` (`AmbiguousId`).

        ``given`` is a record's id, a report's id (its ``Idempotency-Key``: the record it
        made, while the report is remembered, `RECEIPT_SECONDS`), or the first `ID_PREFIX`
        or more characters of a record's id, any case, when they begin only one.
        """
        with self._reading() as run:
            if run("SELECT 1 FROM failsafe_errors WHERE id = ?", (given,)).fetchone():
                return given
            made = run(_sql.FIND_RECEIPT, (given,)).fetchone()
            if made is not None:
                return str(made[0])
            prefix = given.lower()
            if not (ID_PREFIX <= len(prefix) < 32 and _HEX.fullmatch(prefix)):
                raise RecordNotFound(given)
            # the ids that sort from the prefix to the prefix with its last digit + 1
            following = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            found = [
                row[0]
                for row in run(
                    "SELECT id FROM failsafe_errors WHERE id >= ? AND id < ? ORDER BY id LIMIT 3",
                    (prefix, following),
                ).fetchall()
            ]
        if not found:
            raise RecordNotFound(given)
        if len(found) > 1:
            raise AmbiguousId(given, found[:2])
        return str(found[0])

    def find(self, query: Query) -> Page:
        """Return the records matching ``query``, newest first, and how many match.

        The count stops at `COUNT_LIMIT` (``total_exact`` is then false).
        """
        clause, params = _sql.where(query, self._text_clause)
        # the count is of every match, not only those past the cursor
        counted, counted_params = (
            (clause, params)
            if query.after is None
            else _sql.where(attrs.evolve(query, after=None), self._text_clause)
        )
        with self._reading() as run:
            self._before_find(run, query)
            total = int(
                run(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM failsafe_errors{counted} LIMIT ?) AS m",
                    [*counted_params, COUNT_LIMIT + 1],
                ).fetchone()[0]
            )
            ids = run(
                f"SELECT id FROM failsafe_errors{clause} ORDER BY created_at DESC, id DESC"
                " LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
            records = self._load_many(run, [row[0] for row in ids])
        last = records[-1] if len(records) == query.limit else None
        return Page(
            records,
            min(total, COUNT_LIMIT),
            total_exact=total <= COUNT_LIMIT,
            next_after=None if last is None else (last.created_at, last.id),
        )

    def _before_find(self, run: Run, query: Query) -> None:
        """Run before a listing's queries, in its transaction (a store's own settings)."""

    def _text_clause(self, text: str) -> tuple[str, list[Any]]:
        """The SQL of a text search (a store may use an index of its own)."""
        return _sql.text_like(text)

    def counts(self) -> dict[str, int]:
        """Records per status (every status present, zero included)."""
        with self._reading() as run:
            found = {row[0]: int(row[1]) for row in run(_sql.COUNTS, ()).fetchall()}
        return {s.value: found.get(s.value, 0) for s in Status}

    # -- failure groups -------------------------------------------------------------------
    def groups(self, query: GroupQuery) -> GroupPage:
        """Return the failure groups matching ``query`` and how many match.

        Reads the groups' numbers (kept by triggers), not their records: a row per group
        (and writer) whatever the records' number.
        """
        clause, having, params = _sql.group_where(query)
        order = (
            "MAX(last_seen) DESC"
            if query.order == "newest"
            else "(" + " + ".join(f"SUM({s.value})" for s in query.statuses or Status) + ") DESC"
        )
        with self._reading() as run:
            total = int(
                run(
                    "SELECT COUNT(*) FROM (SELECT fingerprint FROM failsafe_error_groups"
                    f"{clause} GROUP BY fingerprint{having}) AS g",
                    params,
                ).fetchone()[0]
            )
            rows = run(
                f"{_sql.SELECT_GROUPS}{clause} GROUP BY fingerprint{having}"
                f" ORDER BY {order}, fingerprint LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
            sources = self._group_sources(run, [row[0] for row in rows])
            hours = self._group_hours(run, rows) if query.hours else {}
        return GroupPage(
            tuple(
                attrs.evolve(
                    _sql.build_group(row, sources.get(row[0], ())), hours=hours.get(row[0], ())
                )
                for row in rows
            ),
            total,
        )

    def group(self, fingerprint: str) -> Group:
        """Return one failure group, its sources and its last seven days' hours."""
        with self._reading() as run:
            row = run(
                f"{_sql.SELECT_GROUPS} WHERE fingerprint = ? GROUP BY fingerprint"
                " HAVING SUM(records) > 0",
                (fingerprint,),
            ).fetchone()
            if row is None:
                raise GroupNotFound(fingerprint)
            sources = self._group_sources(run, [fingerprint])
            hours = self._group_hours(run, [row])
        return attrs.evolve(
            _sql.build_group(row, sources.get(fingerprint, ())), hours=hours.get(fingerprint, ())
        )

    def _group_hours(
        self, run: Run, rows: Sequence[Sequence[Any]]
    ) -> dict[str, tuple[tuple[float, int], ...]]:
        """Each group's reports per hour over the 7 days up to its last report (its row)."""
        if not rows:
            return {}
        since = int(min(float(row[5]) for row in rows) // 3600) - 7 * 24
        marks = ", ".join("?" for _ in rows)
        found: dict[str, list[tuple[float, int]]] = {}
        last = {row[0]: int(float(row[5]) // 3600) for row in rows}
        for fp, hour, n in run(
            "SELECT fingerprint, hour, SUM(reports) FROM failsafe_error_group_hours"
            f" WHERE fingerprint IN ({marks}) AND hour > ? GROUP BY fingerprint, hour"
            " HAVING SUM(reports) > 0 ORDER BY fingerprint, hour",
            [*(row[0] for row in rows), since],
        ).fetchall():
            if int(hour) > last[fp] - 7 * 24:
                found.setdefault(fp, []).append((float(hour) * 3600, int(n)))
        return {fp: tuple(pairs) for fp, pairs in found.items()}

    def _group_sources(
        self, run: Run, fingerprints: Sequence[str]
    ) -> dict[str, tuple[tuple[str, int], ...]]:
        """Each group's sources, the most records first (at most `GROUP_SOURCES` each)."""
        if not fingerprints:
            return {}
        marks = ", ".join("?" for _ in fingerprints)
        found: dict[str, list[tuple[str, int]]] = {}
        for fp, source, n in run(
            "SELECT fingerprint, source, SUM(records) AS n FROM failsafe_error_group_sources"
            f" WHERE fingerprint IN ({marks}) GROUP BY fingerprint, source"
            " HAVING SUM(records) > 0 ORDER BY fingerprint, n DESC, source",
            list(fingerprints),
        ).fetchall():
            listed = found.setdefault(fp, [])
            if len(listed) < GROUP_SOURCES:
                listed.append((source, int(n)))
        return {fp: tuple(listed) for fp, listed in found.items()}

    def move_group(
        self,
        fingerprint: str,
        to: Status,
        *,
        statuses: Sequence[Status],
        created_until: float,
        now: float,
        actor: str,
        note: str | None = None,
        next_attempt_at: float | None = None,
        limit: int,
    ) -> list[str]:
        """Move up to ``limit`` of a group's records in ``statuses``; return their ids.

        One transaction: the records (oldest first, created at or before
        ``created_until``), one update of them all, one insert of their audit entries.
        """
        for status in statuses:
            check_move(fingerprint, status, to)
        marks = ", ".join("?" for _ in statuses)
        due = next_attempt_at if to in (Status.PENDING_RETRY, Status.RETRYING) else None
        with self._transaction() as run:
            ids = [
                row[0]
                for row in run(
                    "SELECT id FROM failsafe_errors WHERE fingerprint = ?"
                    f" AND status IN ({marks}) AND created_at <= ?"
                    f" ORDER BY created_at, id LIMIT ?{self._lock_rows}",
                    [fingerprint, *(s.value for s in statuses), created_until, limit],
                ).fetchall()
            ]
            if ids:
                id_marks = ", ".join("?" for _ in ids)
                run(
                    "UPDATE failsafe_errors SET status = ?, updated_at = ?, next_attempt_at = ?"
                    f" WHERE id IN ({id_marks})",
                    [to.value, now, due, *ids],
                )
                run(
                    *self._bulk.insert_histories(
                        [(record_id, now, actor, to.value, note) for record_id in ids]
                    )
                )
            return ids

    def delete_closed(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` closed records last changed before ``before``; how many.

        One transaction: the records (resolved or discarded, the oldest first), their
        attempts, history and receipts, and the numbers of the groups they leave empty.
        """
        closed = ", ".join(f"'{s.value}'" for s in (Status.RESOLVED, Status.DISCARDED))
        with self._transaction() as run:
            # created before too (a record changes after it is made): the newest index's range
            rows = run(
                f"SELECT id, fingerprint FROM failsafe_errors WHERE status IN ({closed})"
                " AND created_at < ? AND updated_at < ? ORDER BY created_at LIMIT ?"
                f"{self._lock_due}",
                (before, before, limit),
            ).fetchall()
            if not rows:
                return 0
            ids = [row[0] for row in rows]
            marks = ", ".join("?" for _ in ids)
            for table in ("failsafe_error_attempts", "failsafe_error_history"):
                run(f"DELETE FROM {table} WHERE record_id IN ({marks})", ids)
            run(f"DELETE FROM failsafe_error_receipts WHERE record_id IN ({marks})", ids)
            run(f"DELETE FROM failsafe_errors WHERE id IN ({marks})", ids)
            groups = sorted({row[1] for row in rows})
            self._forget_empty_groups(run, groups)
            return len(ids)

    def _forget_empty_groups(self, run: Run, fingerprints: Sequence[str]) -> None:
        """Drop the rows of those groups left without records, and of sources left without."""
        marks = ", ".join("?" for _ in fingerprints)
        empty = [
            row[0]
            for row in run(
                f"SELECT fingerprint FROM failsafe_error_groups WHERE fingerprint IN ({marks})"
                " GROUP BY fingerprint HAVING SUM(records) = 0",
                list(fingerprints),
            ).fetchall()
        ]
        if empty:
            gone = ", ".join("?" for _ in empty)
            for table in _sql.GROUP_TABLES:
                run(f"DELETE FROM {table} WHERE fingerprint IN ({gone})", empty)
        run(
            "DELETE FROM failsafe_error_group_sources WHERE (fingerprint, source) IN ("
            "SELECT fingerprint, source FROM failsafe_error_group_sources"
            f" WHERE fingerprint IN ({marks}) GROUP BY fingerprint, source"
            " HAVING SUM(records) = 0)",
            list(fingerprints),
        )

    # -- the alerts outbox (see failsafe.errors.alerts) ----------------------------------------
    def alert_add(self, key: str, body: str, *, now: float) -> bool:
        """Queue an alert under ``key`` unless one was queued before; whether it is new."""
        with self._transaction() as run:
            added = run(
                "INSERT INTO failsafe_error_alerts (key, body, created_at, next_at, attempts)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT (key) DO NOTHING RETURNING key",
                (key, body, now, now),
            ).fetchone()
            return added is not None

    def alert_since(self, *, now: float) -> float:
        """When alerts began to be watched for in this store (``now``, the first time)."""
        with self._transaction() as run:
            run(
                "INSERT INTO failsafe_error_alerts (key, body, created_at, attempts, sent_at)"
                " VALUES (?, '{}', ?, 0, ?) ON CONFLICT (key) DO NOTHING",
                (_ALERTS_SINCE, now, now),
            )
            row = run(
                "SELECT created_at FROM failsafe_error_alerts WHERE key = ?", (_ALERTS_SINCE,)
            ).fetchone()
        return float(row[0])

    def alerts_due(self, *, now: float, limit: int) -> list[tuple[str, str, int]]:
        """Up to ``limit`` alerts due to be sent: ``(key, body, attempts so far)``."""
        with self._reading() as run:
            rows = run(
                "SELECT key, body, attempts FROM failsafe_error_alerts"
                " WHERE next_at <= ? ORDER BY next_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [(str(k), str(b), int(a)) for k, b, a in rows]

    def alert_sent(self, key: str, *, now: float) -> None:
        """Mark an alert sent (it stays, so its key is never queued again)."""
        with self._transaction() as run:
            run(
                "UPDATE failsafe_error_alerts SET sent_at = ?, next_at = NULL WHERE key = ?",
                (now, key),
            )

    def alert_failed(self, key: str, *, error: str, next_at: float) -> None:
        """Count a failed delivery; the alert is due again at ``next_at``."""
        with self._transaction() as run:
            run(
                "UPDATE failsafe_error_alerts SET attempts = attempts + 1, last_error = ?,"
                " next_at = ? WHERE key = ?",
                (error, next_at, key),
            )

    def alerts_waiting(self) -> tuple[int, int, str | None]:
        """Alerts not sent yet, how many of them failed at least once, and the last error."""
        with self._reading() as run:
            waiting, failing = run(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), 0)"
                " FROM failsafe_error_alerts WHERE sent_at IS NULL",
                (),
            ).fetchone()
            last = run(
                "SELECT last_error FROM failsafe_error_alerts WHERE sent_at IS NULL"
                " AND attempts > 0 ORDER BY next_at DESC LIMIT 1",
                (),
            ).fetchone()
        return int(waiting), int(failing), None if last is None else str(last[0])

    # -- writes ---------------------------------------------------------------------------
    def add(
        self,
        report: Report,
        *,
        now: float,
        next_attempt_at: float | None,
        actor: str,
        report_id: str | None = None,
    ) -> tuple[ErrorRecord, bool]:
        """Store a report, or count it on the open record with its dedupe key.

        A ``report_id`` seen before returns that report's record unchanged.
        """
        group = self._group
        if group is None:
            with self._lock_group:
                group = self._group
                if group is None:
                    group = self._group = _GroupCommit(self._commit_group)
        result: tuple[ErrorRecord, bool] = group.submit(
            (report, now, next_attempt_at, actor, report_id)
        )
        return result

    def add_each(
        self, reports: Sequence[tuple[Report, float, float | None, str, str | None]]
    ) -> list[tuple[ErrorRecord, bool] | BaseException]:
        """Store each ``(report, now, next_attempt_at, actor, report_id)`` as `add` would.

        In one transaction when every report goes in; a report that fails fails alone (its
        exception is its outcome, in its place), and when the store cannot be reached every
        outcome is that `StoreUnavailable`.
        """
        group = [_Pending(args) for args in reports]
        try:
            self._commit_group(lambda: group)
        except Exception as exc:  # the transaction failed whole: every report in it did
            for pending in group:
                if pending.error is None:
                    pending.result, pending.error = None, exc
        return [p.result if p.error is None else p.error for p in group]

    def _commit_group(self, take: Callable[[], list[_Pending]]) -> None:
        """Store a group of reports in one transaction.

        First as one plain transaction (the usual case: every report goes in); if one of
        them fails, that transaction is rolled back and the group is stored again with a
        savepoint for each report, so that only the failing one fails.
        """
        group: list[_Pending] = []
        try:
            with self._transaction() as run:
                group = take()
                results = self._add_all(run, [pending.args for pending in group])
                for pending, result in zip(group, results, strict=True):
                    pending.result = result
            return
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                raise  # not one report's fault: no point trying again
            if len(group) <= 1 and not (group and self._same_add_again(exc, group[0].args[4])):
                raise  # one report, or the transaction itself failed: its callers fail
        for pending in group:
            pending.result = None
        with self._transaction() as run:
            for pending in group:
                for again in (False, True):
                    run("SAVEPOINT failsafe_report", ())
                    try:
                        pending.result = self._add_loaded(run, pending.args)
                    except Exception as exc:
                        run("ROLLBACK TO SAVEPOINT failsafe_report", ())
                        run("RELEASE SAVEPOINT failsafe_report", ())
                        if not again and self._same_add_again(exc, pending.args[4]):
                            continue
                        pending.error = exc
                        break
                    run("RELEASE SAVEPOINT failsafe_report", ())
                    break

    def _add_all(
        self, run: Run, group: Sequence[tuple[Any, ...]]
    ) -> list[tuple[ErrorRecord, bool]]:
        """Add every report of ``group`` (`add`'s arguments each) in the open transaction.

        The same outcome as `_add_loaded` for each in turn, in a few statements for the
        whole group rather than eight per report: one lookup of the receipts, one insert of
        the new records (each record built here, not read back), one of their audit entries
        and one of their receipts. A report whose record is open already (a repeat) goes
        the one-at-a-time way, after the new ones, so it counts on a record this group
        opened too.
        """
        if group:
            self._prune_hours(run, group[0][1])
        given = [args[4] for args in group if args[4] is not None]
        seen: dict[str, str] = {}
        if given:
            wanted = list(dict.fromkeys(given))
            statement, params = self._bulk.find_receipts(wanted)
            seen = {row[0]: row[1] for row in run(statement + self._lock_rows, params).fetchall()}
        fresh: list[int] = []
        first: dict[str, int] = {}  # a report id delivered twice in the group: its first
        again: list[tuple[int, int]] = []
        for i, args in enumerate(group):
            report_id = args[4]
            if report_id is not None and report_id not in seen:
                if report_id in first:
                    again.append((i, first[report_id]))
                    continue
                first[report_id] = i
            if report_id is None or report_id not in seen:
                fresh.append(i)
        made = {i: _as_stored(group[i]) for i in fresh}
        records = {i: record for i, (record, _) in made.items()}
        rows = {i: row for i, (_, row) in made.items()}
        inserted: set[str] = set()
        if fresh:
            statement, params = self._bulk.insert_if_new([rows[i] for i in fresh])
            inserted = {row[0] for row in run(statement, params).fetchall()}
        new = [i for i in fresh if records[i].id in inserted]
        results: list[tuple[ErrorRecord, bool] | None] = [None] * len(group)
        if new:
            entries = []
            for i in new:
                entries.append((records[i].id, group[i][1], group[i][3], "reported", None))
                results[i] = (records[i], True)
            run(*self._bulk.insert_histories(entries))
        # the rest have an open record with their dedupe key already: repeats
        alone = self._add_repeats(run, group, [i for i in fresh if results[i] is None], results)
        receipts = []
        for i in fresh:
            done = results[i]
            if group[i][4] is not None and done is not None and i not in alone:
                receipts.append((group[i][4], done[0].id, group[i][1]))
        if receipts:
            run(*self._bulk.insert_receipts(receipts))
            # as in _add: each receipt written retires at most two expired ones
            run(
                _sql.EXPIRE_RECEIPTS.format(lock=self._lock_due),
                (receipts[0][2] - RECEIPT_SECONDS, 2 * len(receipts)),
            )
        for i, args in enumerate(group):
            if args[4] is not None and args[4] in seen:
                results[i] = (self._load(run, seen[args[4]]), False)
        for i, k in again:
            done = results[k]
            assert done is not None
            results[i] = (done[0], False)
        return [result for result in results if result is not None]

    _pruned_hour = -1

    def _prune_hours(self, run: Run, now: float) -> None:
        """Once an hour: forget the groups' hours older than `HOURS_KEPT` (8 days)."""
        hour = int(now // 3600)
        if hour != self._pruned_hour:
            run(_sql.PRUNE_HOURS, (hour - _sql.HOURS_KEPT,))
            self._pruned_hour = hour

    def _add_repeats(
        self,
        run: Run,
        group: Sequence[tuple[Any, ...]],
        repeats: Sequence[int],
        results: list[tuple[ErrorRecord, bool] | None],
    ) -> set[int]:
        """Count the repeats of ``group`` (by index) on their open records, all at once.

        A few statements for all of them: one look-up of the records, one update per record
        (its count up by its repeats), one insert of the sampled audit entries, one read of
        the records.

        A repeat whose open record was closed meanwhile goes the one-at-a-time way (with
        its receipt); returns those indexes.
        """
        if not repeats:
            return set()
        keys = list(dict.fromkeys(group[i][0].dedupe_key for i in repeats))
        statement, params = self._bulk.find_open(keys)
        found = run(statement + self._lock_rows, params).fetchall()
        open_ids = {key: record_id for record_id, key in found}
        members: dict[str, list[int]] = {}
        alone: list[int] = []
        for i in repeats:
            key = group[i][0].dedupe_key
            (members.setdefault(key, []) if key in open_ids else alone).append(i)
        entries: list[tuple[Any, ...]] = []
        for key, indexes in members.items():
            now = max(group[i][1] for i in indexes)
            # the latest repeat with a trace: the record points at that trace from now on
            traced = [group[i][0] for i in indexes if group[i][0].trace_id is not None]
            latest = traced[-1] if traced else None
            bumped = run(
                _sql.BUMP_BY,
                _sql.bump_params(
                    len(indexes),
                    now,
                    None if latest is None else latest.trace_id,
                    None if latest is None else latest.span_id,
                    open_ids[key],
                ),
            ).fetchone()[0]
            before = int(bumped) - len(indexes)
            # a bounded sample of the repeats, as in _add: the count says the rest
            for n, i in enumerate(indexes, start=1):
                if before + n <= REPEAT_SAMPLE + 1:
                    entries.append(
                        (open_ids[key], group[i][1], group[i][3], "reported again", None)
                    )
        if entries:
            run(*self._bulk.insert_histories(entries))
        loaded = {r.id: r for r in self._load_many(run, [open_ids[k] for k in members])}
        for key, indexes in members.items():
            for i in indexes:
                results[i] = (loaded[open_ids[key]], False)
        for i in alone:
            results[i] = self._add_loaded(run, group[i])
        return set(alone)

    def _add_loaded(self, run: Run, args: tuple[Any, ...]) -> tuple[ErrorRecord, bool]:
        report, now, next_attempt_at, actor, report_id = args
        record_id, created = self._add(run, report, now, next_attempt_at, actor, report_id)
        return self._load(run, record_id), created

    def add_many(
        self,
        reports: Sequence[tuple[Report, str | None]],
        *,
        now: float,
        next_attempt_at: Sequence[float | None],
        actor: Sequence[str],
    ) -> list[tuple[str, bool]]:
        """Store many ``(report, report_id)`` pairs in one transaction: all or none.

        Returns each report's record id and whether the record is new, in order.
        """
        group = [
            (report, now, due, who, report_id)
            for (report, report_id), due, who in zip(reports, next_attempt_at, actor, strict=True)
        ]
        with self._transaction() as run:
            return [(record.id, created) for record, created in self._add_all(run, group)]

    def _add(
        self,
        run: Run,
        report: Report,
        now: float,
        next_attempt_at: float | None,
        actor: str,
        report_id: str | None,
    ) -> tuple[str, bool]:
        """Add one report inside an open transaction; return its record id and if it is new."""
        if report_id is not None:
            seen = run(_sql.FIND_RECEIPT + self._lock_rows, (report_id,)).fetchone()
            if seen is not None:
                return seen[0], False
        record = _new_record(report, now, next_attempt_at)
        while True:  # at most twice: see the comment below
            inserted = run(_sql.INSERT_IF_NEW, _sql.record_row(record)).fetchone()
            if inserted is not None:
                record_id, created = record.id, True
                run(_sql.INSERT_HISTORY, (record_id, now, actor, "reported", None))
                break
            existing = run(_sql.FIND_OPEN + self._lock_rows, (report.dedupe_key,)).fetchone()
            if existing is None:  # the open record was closed since the conflict: insert
                continue
            record_id, created = existing[0], False
            # a bounded sample of the repeats: the count and updated_at say the rest
            params = _sql.bump_params(1, now, report.trace_id, report.span_id, record_id)
            if run(_sql.BUMP_BY, params).fetchone()[0] <= REPEAT_SAMPLE + 1:
                run(_sql.INSERT_HISTORY, (record_id, now, actor, "reported again", None))
            break
        if report_id is not None:
            run(_sql.INSERT_RECEIPT, (report_id, record_id, now))
            # each receipt written retires at most two expired ones: the table stays
            # within RECEIPT_SECONDS of reports, at a constant cost per report
            run(
                _sql.EXPIRE_RECEIPTS.format(lock=self._lock_due),
                (now - RECEIPT_SECONDS, 2),
            )
        return record_id, created

    def _status(self, run: Run, record_id: str) -> Status:
        row = run(_sql.STATUS_OF + self._lock_rows, (record_id,)).fetchone()
        if row is None:
            raise RecordNotFound(record_id)
        return Status(row[0])

    def edit_payload(
        self,
        record_id: str,
        payload: Any,
        *,
        now: float,
        actor: str,
        note: str,
        next_attempt_at: float,
    ) -> ErrorRecord:
        """Replace a record's payload and queue it for a retry at ``next_attempt_at``.

        One transaction, with a "payload edited" audit entry (``note``: why, and the
        changes). Only a record that needs review or waits for a retry may be edited.
        """
        with self._transaction() as run:
            status = self._status(run, record_id)
            if status not in EDITABLE:
                raise InvalidMove(record_id, status, Status.PENDING_RETRY)
            run(
                "UPDATE failsafe_errors SET payload = ?, status = ?, updated_at = ?,"
                " next_attempt_at = ? WHERE id = ?",
                (
                    _sql.payload_text(payload),
                    Status.PENDING_RETRY.value,
                    now,
                    next_attempt_at,
                    record_id,
                ),
            )
            run(_sql.INSERT_HISTORY, (record_id, now, actor, "payload edited", note))
            if status is not Status.PENDING_RETRY:
                run(_sql.INSERT_HISTORY, (record_id, now, actor, Status.PENDING_RETRY.value, None))
            return self._load(run, record_id)

    def move(
        self,
        record_id: str,
        to: Status,
        *,
        now: float,
        actor: str,
        note: str | None = None,
        next_attempt_at: float | None = None,
    ) -> ErrorRecord:
        """Change a record's status with an audit entry."""
        with self._transaction() as run:
            check_move(record_id, self._status(run, record_id), to)
            due = next_attempt_at if to in (Status.PENDING_RETRY, Status.RETRYING) else None
            run(_sql.MOVE, (to.value, now, due, record_id))
            run(_sql.INSERT_HISTORY, (record_id, now, actor, to.value, note))
            return self._load(run, record_id)

    def claim_due(self, *, now: float, lease: float, limit: int) -> list[ErrorRecord]:
        """Take due records (and those whose worker died) and mark them ``retrying``."""
        with self._transaction() as run:
            ids = [row[0] for row in run(_sql.DUE + self._lock_due, (now, limit)).fetchall()]
            for record_id in ids:
                run(_sql.MOVE, (Status.RETRYING.value, now, now + lease, record_id))
                run(_sql.INSERT_HISTORY, (record_id, now, "worker", "retrying", None))
            return [self._load(run, record_id) for record_id in ids]

    def record_attempt(
        self,
        record_id: str,
        *,
        ok: bool,
        detail: str,
        now: float,
        to: Status,
        next_attempt_at: float | None,
        actor: str,
        lease: float | None = None,
    ) -> ErrorRecord:
        """Append an attempt and move the record, unless it moved on meanwhile.

        It moved on when a person closed it, or when the worker's ``lease`` (the lease end
        it got from `claim_due`) ran out and another worker claimed it: then the attempt is
        recorded but the record is left to its new owner.
        """
        with self._transaction() as run:
            row = run(_sql.STATE_OF + self._lock_rows, (record_id,)).fetchone()
            if row is None:
                raise RecordNotFound(record_id)
            current, held = Status(row[0]), row[1]
            run(_sql.INSERT_ATTEMPT, (record_id, now, int(ok), detail))
            note = detail if not ok else None
            event = "attempt succeeded" if ok else "attempt failed"
            run(_sql.INSERT_HISTORY, (record_id, now, actor, event, note))
            ours = lease is None or held == lease
            if current is Status.RETRYING and to is not current and ours:
                due = next_attempt_at if to is Status.PENDING_RETRY else None
                run(_sql.MOVE, (to.value, now, due, record_id))
                run(_sql.INSERT_HISTORY, (record_id, now, actor, to.value, None))
            return self._load(run, record_id)
