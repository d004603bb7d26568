"""SQL shared by the SQLite and PostgreSQL stores (both speak this dialect subset).

Placeholders are written ``?``; the PostgreSQL store turns them into ``%s``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from failsafe.errors.record import Action, Attempt, AuditEntry, ErrorRecord, Status
from failsafe.errors.store import Group, GroupQuery, Query, open_statuses

OPEN_IN = "(" + ", ".join(f"'{s.value}'" for s in open_statuses()) + ")"

RECORD_COLUMNS = (
    "id, kind, source, action, payload, error_type, error_message, traceback, correlation_id,"
    " dedupe_key, count, status, created_at, updated_at, next_attempt_at, fingerprint,"
    " trace_id, span_id"
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS failsafe_errors (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        error_type TEXT,
        error_message TEXT,
        traceback TEXT,
        correlation_id TEXT,
        dedupe_key TEXT NOT NULL,
        count INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION,
        fingerprint TEXT NOT NULL DEFAULT '',
        trace_id TEXT,
        span_id TEXT
    )""",
    # one open record per dedupe key: a repeated report can only join it
    f"""CREATE UNIQUE INDEX IF NOT EXISTS failsafe_errors_open_dedupe
        ON failsafe_errors (dedupe_key) WHERE status IN {OPEN_IN}""",
    """CREATE INDEX IF NOT EXISTS failsafe_errors_due
        ON failsafe_errors (status, next_attempt_at)""",
    # newest first, by any one filter: a page of a listing reads its rows off an index
    "DROP INDEX IF EXISTS failsafe_errors_created",
    """CREATE INDEX IF NOT EXISTS failsafe_errors_newest
        ON failsafe_errors (created_at, id)""",
    """CREATE INDEX IF NOT EXISTS failsafe_errors_status_newest
        ON failsafe_errors (status, created_at, id)""",
    """CREATE INDEX IF NOT EXISTS failsafe_errors_kind_newest
        ON failsafe_errors (kind, created_at, id)""",
    """CREATE INDEX IF NOT EXISTS failsafe_errors_source_newest
        ON failsafe_errors (source, created_at, id)""",
    """CREATE TABLE IF NOT EXISTS failsafe_error_attempts (
        seq {serial} PRIMARY KEY,
        record_id TEXT NOT NULL REFERENCES failsafe_errors (id),
        at DOUBLE PRECISION NOT NULL,
        ok INTEGER NOT NULL,
        detail TEXT NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS failsafe_error_attempts_record
        ON failsafe_error_attempts (record_id)""",
    """CREATE TABLE IF NOT EXISTS failsafe_error_history (
        seq {serial} PRIMARY KEY,
        record_id TEXT NOT NULL REFERENCES failsafe_errors (id),
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        note TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS failsafe_error_history_record
        ON failsafe_error_history (record_id)""",
    # one row per delivered report id: a report sent twice (a client retrying after a lost
    # answer, a spool redelivering after a crash) is applied once
    """CREATE TABLE IF NOT EXISTS failsafe_error_receipts (
        report_id TEXT PRIMARY KEY,
        record_id TEXT NOT NULL REFERENCES failsafe_errors (id),
        at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS failsafe_error_receipts_at ON failsafe_error_receipts (at)""",
    # the alerts outbox: one row per alert, kept once sent so it is never sent twice
    """CREATE TABLE IF NOT EXISTS failsafe_error_alerts (
        key TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        next_at DOUBLE PRECISION,
        attempts INTEGER NOT NULL,
        last_error TEXT,
        sent_at DOUBLE PRECISION
    )""",
    """CREATE INDEX IF NOT EXISTS failsafe_error_alerts_due
        ON failsafe_error_alerts (next_at)""",
    # a record's receipts, found when retention deletes the record
    """CREATE INDEX IF NOT EXISTS failsafe_error_receipts_record
        ON failsafe_error_receipts (record_id)""",
)

TRACE_COLUMNS = ("trace_id", "span_id")
"""The columns a store from before traces lacks: added (nullable) when it is opened."""
TRACE_SCHEMA = (
    # a record's trace: the records of one trace, newest first, off this index (only the
    # records that have one are in it)
    """CREATE INDEX IF NOT EXISTS failsafe_errors_trace
        ON failsafe_errors (trace_id, created_at, id) WHERE trace_id IS NOT NULL""",
)
"""Run once the trace columns are there (`TRACE_COLUMNS`)."""

RECORD_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_RECORD = f"INSERT INTO failsafe_errors ({RECORD_COLUMNS}) VALUES {RECORD_MARKS}"
# a concurrent duplicate waits on the partial unique index, then does nothing (and bumps)
IF_NEW = f" ON CONFLICT (dedupe_key) WHERE status IN {OPEN_IN} DO NOTHING RETURNING id"
INSERT_IF_NEW = INSERT_RECORD + IF_NEW


FIND_OPEN = f"SELECT id FROM failsafe_errors WHERE dedupe_key = ? AND status IN {OPEN_IN}"
# a repeat (or k of them): the count up, its new value back; the trace of the latest repeat
# that carries one replaces the record's (trace id, trace id, span id; NULL: kept)
BUMP_BY = (
    "UPDATE failsafe_errors SET count = count + ?, updated_at = ?,"
    " trace_id = COALESCE(CAST(? AS TEXT), trace_id),"
    " span_id = CASE WHEN CAST(? AS TEXT) IS NULL THEN span_id ELSE CAST(? AS TEXT) END"
    " WHERE id = ? RETURNING count"
)


def bump_params(
    repeats: int, now: float, trace_id: str | None, span_id: str | None, record_id: str
) -> tuple[Any, ...]:
    """BUMP_BY's parameters: ``repeats`` more reports, the latest traced one's trace ids."""
    return (repeats, now, trace_id, trace_id, span_id, record_id)


INSERT_HISTORY = (
    "INSERT INTO failsafe_error_history (record_id, at, actor, action, note) VALUES (?, ?, ?, ?, ?)"
)
INSERT_ATTEMPT = (
    "INSERT INTO failsafe_error_attempts (record_id, at, ok, detail) VALUES (?, ?, ?, ?)"
)
STATUS_OF = "SELECT status FROM failsafe_errors WHERE id = ?"
STATE_OF = "SELECT status, next_attempt_at FROM failsafe_errors WHERE id = ?"
MOVE = "UPDATE failsafe_errors SET status = ?, updated_at = ?, next_attempt_at = ? WHERE id = ?"
DUE = (
    "SELECT id FROM failsafe_errors WHERE status IN ('pending_retry', 'retrying')"
    " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?"
)
FIND_RECEIPT = "SELECT record_id FROM failsafe_error_receipts WHERE report_id = ?"
INSERT_RECEIPT = "INSERT INTO failsafe_error_receipts (report_id, record_id, at) VALUES (?, ?, ?)"
# the oldest expired receipts, a few at a time ({lock}: skip rows another deleter holds)
EXPIRE_RECEIPTS = (
    "DELETE FROM failsafe_error_receipts WHERE report_id IN (SELECT report_id"
    " FROM failsafe_error_receipts WHERE at < ? ORDER BY at LIMIT ?{lock})"
)
# records per status, kept by triggers in the writes' own transactions: reading them costs
# the same at ten records and at ten million (a shard each so writers rarely share a row)
COUNTS = "SELECT status, SUM(n) FROM failsafe_error_counts GROUP BY status"
COUNTS_TABLE = """CREATE TABLE IF NOT EXISTS failsafe_error_counts (
        status TEXT NOT NULL,
        shard INTEGER NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (status, shard)
    )"""
# the counts of records stored before the table existed (run once, when it is made)
FILL_COUNTS = (
    "INSERT INTO failsafe_error_counts (status, shard, n)"
    " SELECT status, 0, COUNT(*) FROM failsafe_errors GROUP BY status"
)
SELECT_RECORD = f"SELECT {RECORD_COLUMNS} FROM failsafe_errors WHERE id = ?"
SELECT_ATTEMPTS = (
    "SELECT at, ok, detail FROM failsafe_error_attempts WHERE record_id = ? ORDER BY seq"
)
SELECT_HISTORY = (
    "SELECT at, actor, action, note FROM failsafe_error_history WHERE record_id = ? ORDER BY seq"
)


# -- failure groups ----------------------------------------------------------------------------
# A row per group and shard (a writer's own, as the counts above) holds the group's numbers;
# triggers keep them in the writes' own transactions; a read sums a group's shards.

STATUS_COLUMNS = [s.value for s in Status]
GROUP_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS failsafe_error_groups (
        fingerprint TEXT NOT NULL,
        shard INTEGER NOT NULL,
        kind TEXT NOT NULL,
        error_type TEXT,
        title TEXT,
        first_seen DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        reports BIGINT NOT NULL,
        records BIGINT NOT NULL,
        """
    + ",\n        ".join(f"{s} BIGINT NOT NULL" for s in STATUS_COLUMNS)
    + """,
        PRIMARY KEY (fingerprint, shard)
    )""",
    """CREATE TABLE IF NOT EXISTS failsafe_error_group_sources (
        fingerprint TEXT NOT NULL,
        shard INTEGER NOT NULL,
        source TEXT NOT NULL,
        records BIGINT NOT NULL,
        PRIMARY KEY (fingerprint, shard, source)
    )""",
    """CREATE TABLE IF NOT EXISTS failsafe_error_group_hours (
        fingerprint TEXT NOT NULL,
        shard INTEGER NOT NULL,
        hour BIGINT NOT NULL,
        reports BIGINT NOT NULL,
        PRIMARY KEY (fingerprint, shard, hour)
    )""",
    """CREATE INDEX IF NOT EXISTS failsafe_error_group_hours_hour
        ON failsafe_error_group_hours (hour)""",
    """CREATE INDEX IF NOT EXISTS failsafe_errors_group_newest
        ON failsafe_errors (fingerprint, created_at, id)""",
    """CREATE INDEX IF NOT EXISTS failsafe_errors_group_status
        ON failsafe_errors (fingerprint, status, created_at, id)""",
)
GROUP_TABLES = (
    "failsafe_error_groups",
    "failsafe_error_group_sources",
    "failsafe_error_group_hours",
)
TITLE_CHARS = 300  # of the first record's message, kept as the group's title

_G = "failsafe_error_groups"


def _status_delta(new: str | None, old: str | None) -> str:
    """A column per status: +1 for ``new``'s status, -1 for ``old``'s (row aliases)."""
    columns = []
    for status in STATUS_COLUMNS:
        plus = f"CASE WHEN {new}.status = '{status}' THEN 1 ELSE 0 END" if new else "0"
        minus = f" - CASE WHEN {old}.status = '{status}' THEN 1 ELSE 0 END" if old else ""
        columns.append(f"{plus}{minus} AS {status}")
    return ", ".join(columns)


def group_changes(
    new: str | None, old: str | None, *, rows: str, shard: str, hour: str
) -> list[str]:
    """The statements that carry record rows' changes into the group tables.

    ``new`` and ``old`` name the rows after and before (``None``: an insert has no old
    row, a delete no new one); ``rows`` is what the rows are selected from, with its WHERE
    (``""`` for a row trigger's ``new``/``old``, which need none); ``shard`` the writer's
    shard; ``hour`` turns a time (``{t}``) into its hour. An update counts only rows whose
    status or count changed; the new reports of a count that grew are counted at the hour
    of the record's ``updated_at``.
    """
    if new and old:
        where = f"({new}.status <> {old}.status OR {new}.count <> {old}.count)"
        reports, records = f"{new}.count - {old}.count", "0"
        first = f"{old}.created_at"
        last = (
            f"CASE WHEN {new}.count > {old}.count THEN {new}.updated_at ELSE {old}.created_at END"
        )
        ident = new
        at = f"{new}.updated_at"
    elif new:
        where, reports, records = "", f"{new}.count", "1"
        first, last, ident, at = f"{new}.created_at", f"{new}.updated_at", new, f"{new}.created_at"
    else:
        assert old is not None
        where, reports, records = "", f"-{old}.count", "-1"
        first, last, ident, at = f"{old}.created_at", f"{old}.created_at", old, ""
    filtered = f"{rows} WHERE {where}" if where and rows else (f" WHERE {where}" if where else rows)
    sums = ", ".join(f"SUM({s})" for s in STATUS_COLUMNS)
    adds = ", ".join(f"{s} = {_G}.{s} + excluded.{s}" for s in STATUS_COLUMNS)
    statements = [
        f"INSERT INTO {_G} (fingerprint, shard, kind, error_type, title, first_seen, last_seen,"
        f" reports, records, {', '.join(STATUS_COLUMNS)})"
        f" SELECT fingerprint, {shard}, MIN(kind), MIN(error_type), MIN(title), MIN(first_seen),"
        f" MAX(last_seen), SUM(reports), SUM(records), {sums} FROM ("
        f"SELECT {ident}.fingerprint AS fingerprint, {ident}.kind AS kind,"
        f" {ident}.error_type AS error_type,"
        f" SUBSTR({ident}.error_message, 1, {TITLE_CHARS}) AS title, {first} AS first_seen,"
        f" {last} AS last_seen, {reports} AS reports, {records} AS records,"
        f" {_status_delta(new, old)}{filtered}) AS d WHERE true GROUP BY fingerprint"
        f" ON CONFLICT (fingerprint, shard) DO UPDATE SET"
        f" first_seen = CASE WHEN excluded.first_seen < {_G}.first_seen"
        f" THEN excluded.first_seen ELSE {_G}.first_seen END,"
        f" last_seen = CASE WHEN excluded.last_seen > {_G}.last_seen"
        f" THEN excluded.last_seen ELSE {_G}.last_seen END,"
        f" reports = {_G}.reports + excluded.reports, records = {_G}.records + excluded.records,"
        f" {adds}"
    ]
    if records != "0":  # an update never changes a record's source
        statements.append(
            "INSERT INTO failsafe_error_group_sources (fingerprint, shard, source, records)"
            f" SELECT fingerprint, {shard}, source, SUM(n) FROM (SELECT {ident}.fingerprint AS"
            f" fingerprint, {ident}.source AS source, {records} AS n{filtered}) AS d WHERE true"
            " GROUP BY fingerprint, source ON CONFLICT (fingerprint, shard, source) DO UPDATE"
            " SET records = failsafe_error_group_sources.records + excluded.records"
        )
    if at:  # a deleted record's reports happened all the same: its hours stay
        statements.append(
            "INSERT INTO failsafe_error_group_hours (fingerprint, shard, hour, reports)"
            f" SELECT fingerprint, {shard}, hour, SUM(n) FROM (SELECT {ident}.fingerprint AS"
            f" fingerprint, {hour.format(t=at)} AS hour, {reports} AS n{filtered}) AS d"
            " WHERE n <> 0 GROUP BY fingerprint, hour"
            " ON CONFLICT (fingerprint, shard, hour) DO UPDATE"
            " SET reports = failsafe_error_group_hours.reports + excluded.reports"
        )
    return statements


SELECT_GROUPS = (
    "SELECT fingerprint, MIN(kind), MIN(error_type), MIN(title), MIN(first_seen),"
    " MAX(last_seen), SUM(reports), SUM(records), "
    + ", ".join(f"SUM({s})" for s in STATUS_COLUMNS)
    + " FROM failsafe_error_groups"
)


def group_where(query: GroupQuery) -> tuple[str, str, list[Any]]:
    """The WHERE and HAVING clauses of a group listing, and their parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.kind is not None:
        clauses.append("kind = ?")
        params.append(query.kind)
    if query.source is not None:
        clauses.append(
            "fingerprint IN (SELECT fingerprint FROM failsafe_error_group_sources"
            " WHERE source = ? GROUP BY fingerprint HAVING SUM(records) > 0)"
        )
        params.append(query.source)
    if query.text:
        pattern = like_pattern(query.text)
        clauses.append(
            "(LOWER(kind) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(error_type, '')) LIKE ? ESCAPE '\\'"
            " OR LOWER(COALESCE(title, '')) LIKE ? ESCAPE '\\')"
        )
        params += [pattern] * 3
    wanted = [s.value for s in query.statuses] or ["records"]
    having = " HAVING (" + " + ".join(f"SUM({s})" for s in wanted) + ") > 0"
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), having, params


def build_group(row: Sequence[Any], sources: tuple[tuple[str, int], ...]) -> Group:
    """A group from its SELECT_GROUPS row and its sources."""
    return Group(
        fingerprint=row[0],
        kind=row[1],
        error_type=row[2],
        title=row[3],
        first_seen=float(row[4]),
        last_seen=float(row[5]),
        reports=int(row[6]),
        records=int(row[7]),
        statuses={s: int(n) for s, n in zip(STATUS_COLUMNS, row[8:], strict=True)},
        sources=sources,
    )


HOURS_KEPT = 8 * 24
"""Hours of occurrences kept per group (8 days: the console's 7-day chart, and the hour now)."""
PRUNE_HOURS = "DELETE FROM failsafe_error_group_hours WHERE hour < ?"


TextClause = Callable[[str], tuple[str, list[Any]]]
"""A store's test for "the text is in the kind, error type, message or payload"."""


def like_pattern(text: str) -> str:
    """``%text%`` in lower case, its LIKE wildcards escaped with a backslash."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def text_like(text: str) -> tuple[str, list[Any]]:
    """The text search as a scan: a case-insensitive ``LIKE`` on each column."""
    pattern = like_pattern(text)
    return (
        "(LOWER(kind) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(error_type, '')) LIKE ? ESCAPE '\\'"
        " OR LOWER(COALESCE(error_message, '')) LIKE ? ESCAPE '\\'"
        " OR LOWER(payload) LIKE ? ESCAPE '\\')",
        [pattern] * 4,
    )


def where(query: Query, text_clause: TextClause = text_like) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of a listing."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.statuses:
        clauses.append("status IN (" + ", ".join("?" for _ in query.statuses) + ")")
        params += [s.value for s in query.statuses]
    for column in ("kind", "source"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.fingerprint is not None:
        clauses.append("fingerprint = ?")
        params.append(query.fingerprint)
    if query.trace_id is not None:
        clauses.append("trace_id = ?")
        params.append(query.trace_id)
    if query.since is not None:
        clauses.append("created_at >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("created_at < ?")
        params.append(query.until)
    if query.after is not None:
        # keyset: older than the last record shown (the order is created_at, id, descending)
        # a row value: both stores read it as one range of the (…, created_at, id) indexes
        clauses.append("(created_at, id) < (?, ?)")
        params += [query.after[0], query.after[1]]
    if query.text:
        clause, more = text_clause(query.text)
        clauses.append(clause)
        params += more
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def payload_text(payload: Any) -> str:
    """The payload as stored: compact JSON with non-ASCII text as it was sent.

    So a search for a non-ASCII word finds it; escaped only where the payload holds a lone
    surrogate, which UTF-8 cannot carry.
    """
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(payload, separators=(",", ":"), sort_keys=True)
    return text


def record_row(record: ErrorRecord, *, payload: str | None = None) -> tuple[Any, ...]:
    """A record's row for INSERT_RECORD (``payload``: its `payload_text`, if known)."""
    return (
        record.id,
        record.kind,
        record.source,
        record.action.value,
        payload_text(record.payload) if payload is None else payload,
        record.error_type,
        record.error_message,
        record.traceback,
        record.correlation_id,
        record.dedupe_key,
        record.count,
        record.status.value,
        record.created_at,
        record.updated_at,
        record.next_attempt_at,
        record.fingerprint,
        record.trace_id,
        record.span_id,
    )


def build(
    row: Sequence[Any],
    attempts: Iterable[Sequence[Any]],
    history: Iterable[Sequence[Any]],
) -> ErrorRecord:
    """A record from its row, its attempt rows (at, ok, detail) and history rows."""
    return ErrorRecord(
        id=row[0],
        kind=row[1],
        source=row[2],
        action=Action(row[3]),
        payload=json.loads(row[4]),
        error_type=row[5],
        error_message=row[6],
        traceback=row[7],
        correlation_id=row[8],
        dedupe_key=row[9],
        count=int(row[10]),
        status=Status(row[11]),
        created_at=float(row[12]),
        updated_at=float(row[13]),
        next_attempt_at=None if row[14] is None else float(row[14]),
        fingerprint=row[15],
        trace_id=row[16],
        span_id=row[17],
        attempts=tuple(Attempt(at=float(a[0]), ok=bool(a[1]), detail=a[2]) for a in attempts),
        history=tuple(
            AuditEntry(at=float(h[0]), actor=h[1], action=h[2], note=h[3]) for h in history
        ),
    )


Rows = Sequence[Sequence[Any]]


class Bulk:
    """The statements that write or find many rows at once, and their parameters.

    These spell a row as a ``VALUES`` tuple (or an ``IN`` item) each, so a statement's text
    grows with its rows: SQLite parses it in C and keeps the recent ones.
    """

    def insert_if_new(self, rows: Rows) -> tuple[str, list[Any]]:
        """INSERT_IF_NEW for many records (a row that conflicts is skipped)."""
        marks = ", ".join([RECORD_MARKS] * len(rows))
        return f"INSERT INTO failsafe_errors ({RECORD_COLUMNS}) VALUES {marks}{IF_NEW}", _flat(rows)

    def insert_histories(self, rows: Rows) -> tuple[str, list[Any]]:
        """INSERT_HISTORY for many (record_id, at, actor, action, note) rows."""
        marks = ", ".join(["(?, ?, ?, ?, ?)"] * len(rows))
        return f"{_HISTORY_INTO} VALUES {marks}", _flat(rows)

    def insert_receipts(self, rows: Rows) -> tuple[str, list[Any]]:
        """INSERT_RECEIPT for many (report_id, record_id, at) rows."""
        marks = ", ".join(["(?, ?, ?)"] * len(rows))
        return f"{_RECEIPT_INTO} VALUES {marks}", _flat(rows)

    def find_receipts(self, report_ids: Sequence[str]) -> tuple[str, list[Any]]:
        """The (report_id, record_id) of those of ``report_ids`` seen before."""
        marks = ", ".join(["?"] * len(report_ids))
        return f"{_FIND_RECEIPTS} WHERE report_id IN ({marks})", list(report_ids)

    def find_open(self, keys: Sequence[str]) -> tuple[str, list[Any]]:
        """The (id, dedupe_key) of the open records with one of ``keys``."""
        marks = ", ".join(["?"] * len(keys))
        return f"{_FIND_OPEN} WHERE dedupe_key IN ({marks}) AND status IN {OPEN_IN}", list(keys)


class ArrayBulk(Bulk):
    """The same statements with one array per column (PostgreSQL's ``unnest``, ``ANY``).

    The text is the same for any number of rows, so the driver parses it once (psycopg
    parses a long text again each time: 2 ms for a group of 128 records) and the server
    prepares it once.
    """

    def insert_if_new(self, rows: Rows) -> tuple[str, list[Any]]:
        """INSERT_IF_NEW for many records, a column each."""
        types = ["text"] * 10 + ["bigint", "text", "float8", "float8", "float8"] + ["text"] * 3
        arrays = ", ".join(f"?::{t}[]" for t in types)
        statement = (
            f"INSERT INTO failsafe_errors ({RECORD_COLUMNS}) SELECT * FROM unnest({arrays}){IF_NEW}"
        )
        return statement, _columns(rows, len(types))

    def insert_histories(self, rows: Rows) -> tuple[str, list[Any]]:
        """INSERT_HISTORY for many rows, a column each."""
        arrays = "?::text[], ?::float8[], ?::text[], ?::text[], ?::text[]"
        return f"{_HISTORY_INTO} SELECT * FROM unnest({arrays})", _columns(rows, 5)

    def insert_receipts(self, rows: Rows) -> tuple[str, list[Any]]:
        """INSERT_RECEIPT for many rows, a column each."""
        arrays = "?::text[], ?::text[], ?::float8[]"
        return f"{_RECEIPT_INTO} SELECT * FROM unnest({arrays})", _columns(rows, 3)

    def find_receipts(self, report_ids: Sequence[str]) -> tuple[str, list[Any]]:
        """The receipts of ``report_ids``, one array parameter."""
        return f"{_FIND_RECEIPTS} WHERE report_id = ANY(?::text[])", [list(report_ids)]

    def find_open(self, keys: Sequence[str]) -> tuple[str, list[Any]]:
        """The open records of ``keys``, one array parameter."""
        return (
            f"{_FIND_OPEN} WHERE dedupe_key = ANY(?::text[]) AND status IN {OPEN_IN}",
            [list(keys)],
        )


_HISTORY_INTO = "INSERT INTO failsafe_error_history (record_id, at, actor, action, note)"
_RECEIPT_INTO = "INSERT INTO failsafe_error_receipts (report_id, record_id, at)"
_FIND_RECEIPTS = "SELECT report_id, record_id FROM failsafe_error_receipts"
_FIND_OPEN = "SELECT id, dedupe_key FROM failsafe_errors"


def _flat(rows: Rows) -> list[Any]:
    return [value for row in rows for value in row]


def _columns(rows: Rows, width: int) -> list[Any]:
    return [[row[c] for row in rows] for c in range(width)]
