"""The logic of the SQL stores, written once over a small connection seam.

`SQLiteStore` and `PostgresStore` differ only in how they open a transaction, spell a
placeholder, and lock rows; every decision (dedupe, moves, claims) lives here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from failsafe.errors import _sql
from failsafe.errors.record import Action, ErrorRecord, Report, Status
from failsafe.errors.store import (
    RECEIPT_SECONDS,
    REPEAT_SAMPLE,
    Page,
    Query,
    RecordNotFound,
    check_move,
)

Run = Callable[[str, Sequence[Any]], Any]
"""Execute one statement in the open transaction; returns a cursor."""


class SQLStore:
    """Implements the `ErrorStore` protocol over ``_transaction()``; see the subclasses."""

    #: appended to SELECTs that pick rows to change (PostgreSQL: FOR UPDATE ...)
    _lock_rows = ""
    _lock_due = ""

    def _transaction(self) -> AbstractContextManager[Run]:
        raise NotImplementedError

    # -- reads ----------------------------------------------------------------------------
    def _load(self, run: Run, record_id: str) -> ErrorRecord:
        row = run(_sql.SELECT_RECORD, (record_id,)).fetchone()
        if row is None:
            raise RecordNotFound(record_id)
        attempts = run(_sql.SELECT_ATTEMPTS, (record_id,)).fetchall()
        history = run(_sql.SELECT_HISTORY, (record_id,)).fetchall()
        return _sql.build(row, attempts, history)

    def get(self, record_id: str) -> ErrorRecord:
        """Return one record. Raises `RecordNotFound`."""
        with self._transaction() as run:
            return self._load(run, record_id)

    def find(self, query: Query) -> Page:
        """Return the records matching ``query``, newest first, and their total."""
        clause, params = _sql.where(query)
        with self._transaction() as run:
            total = int(run(f"SELECT COUNT(*) FROM failsafe_errors{clause}", params).fetchone()[0])
            ids = run(
                f"SELECT id FROM failsafe_errors{clause} ORDER BY created_at DESC, id"
                " LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
            return Page(tuple(self._load(run, row[0]) for row in ids), total)

    def counts(self) -> dict[str, int]:
        """Records per status (every status present, zero included)."""
        with self._transaction() as run:
            found = {row[0]: int(row[1]) for row in run(_sql.COUNTS, ()).fetchall()}
        return {s.value: found.get(s.value, 0) for s in Status}

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
        with self._transaction() as run:
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
        with self._transaction() as run:
            return [
                self._add(run, report, now, due, who, report_id)
                for (report, report_id), due, who in zip(
                    reports, next_attempt_at, actor, strict=True
                )
            ]

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
        status = Status.PENDING_RETRY if report.action is Action.RETRY else Status.NEEDS_REVIEW
        record = ErrorRecord(
            id=uuid.uuid4().hex,
            kind=report.kind,
            source=report.source,
            action=report.action,
            payload=report.payload,
            error_type=report.error_type,
            error_message=report.error_message,
            traceback=report.traceback,
            correlation_id=report.correlation_id,
            dedupe_key=report.dedupe_key,
            count=1,
            status=status,
            attempts=(),
            history=(),
            created_at=now,
            updated_at=now,
            next_attempt_at=next_attempt_at if status is Status.PENDING_RETRY else None,
        )
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
            run(_sql.BUMP, (now, record_id))
            # a bounded sample of the repeats: the count and updated_at say the rest
            if run(_sql.COUNT_OF, (record_id,)).fetchone()[0] <= REPEAT_SAMPLE + 1:
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
