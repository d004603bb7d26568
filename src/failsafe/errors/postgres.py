"""`PostgresStore`: error records in PostgreSQL, shared by every instance of the service.

Needs the ``postgres`` extra (psycopg 3 and psycopg-pool). The SQL and every decision live in
the shared SQL store; this module opens transactions from a connection pool, spells the
placeholders ``%s`` and locks rows, so concurrent workers never claim the same record and
concurrent duplicate reports are counted on one record.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from failsafe.errors import _sql
from failsafe.errors._sqlstore import Run, SQLStore
from failsafe.errors.record import ErrorRecord, Report

__all__ = ["PostgresStore"]

# taken (per transaction) while creating the tables, so two processes starting at once do not
# race on CREATE ... IF NOT EXISTS (which is not safe against a concurrent creator)
_SCHEMA_LOCK = 0x6661696C73616665  # "failsafe"
_RECEIPT_KEY = "failsafe_error_receipts_pkey"


@functools.lru_cache(maxsize=512)
def _pyformat(statement: str) -> str:
    """``statement`` with its ``?`` placeholders as ``%s``.

    A ``?`` inside a quoted string or identifier is left alone; every ``%`` is doubled,
    since psycopg reads ``%`` as a placeholder even inside quotes.
    """
    out: list[str] = []
    quote = ""
    for char in statement:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append("%%" if char == "%" else char)
    return "".join(out)


class PostgresStore(SQLStore):
    """Error records in PostgreSQL: for several service instances and workers at once.

    Every method is one transaction on a pooled connection. Rows to change are locked
    (``FOR UPDATE``), and due records are claimed with ``FOR UPDATE SKIP LOCKED``, so
    concurrent workers get disjoint records. The tables are created if missing; two
    processes starting at once are safe. Thread-safe.

    Args:
        dsn: A libpq connection string or URL, such as ``postgresql://app@db/errors``.
        schema: Keep the tables in this schema (created if missing) instead of the
            connection's default search path.
        min_size: Connections the pool keeps open.
        max_size: Connections the pool may open at most (concurrent transactions).
        timeout: Seconds to wait for a pooled connection (at start and per transaction).

    Raises:
        psycopg.OperationalError: The server cannot be reached (at construction).

    Example:
        ```python
        from failsafe.errors.postgres import PostgresStore

        store = PostgresStore("postgresql://app@db.internal/errors", schema="failsafe")
        ```
    """

    _lock_rows = " FOR UPDATE"
    _lock_due = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
    ) -> None:
        self.schema = schema
        self._where = _describe(dsn)
        # a plain connection first: an unreachable server fails here with libpq's message
        with psycopg.connect(dsn, autocommit=True) as conn:
            _create_tables(conn, schema)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            name="failsafe-errors",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except BaseException:
            self._pool.close()
            raise

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        if self.schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

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

        A ``report_id`` seen before returns that report's record unchanged, also when two
        deliveries of it arrive at once.
        """
        for _ in range(2):
            try:
                return super().add(
                    report,
                    now=now,
                    next_attempt_at=next_attempt_at,
                    actor=actor,
                    report_id=report_id,
                )
            except psycopg.errors.UniqueViolation as exc:
                # a concurrent delivery of the same report committed its receipt first (the
                # violation is raised only once it has): the retry finds that receipt
                if report_id is None or exc.diag.constraint_name != _RECEIPT_KEY:
                    raise
        return super().add(
            report, now=now, next_attempt_at=next_attempt_at, actor=actor, report_id=report_id
        )

    def add_many(
        self,
        reports: Sequence[tuple[Report, str | None]],
        *,
        now: float,
        next_attempt_at: Sequence[float | None],
        actor: Sequence[str],
    ) -> list[tuple[str, bool]]:
        """Store many reports in one transaction (retried once on a concurrent receipt)."""
        for _ in range(2):
            try:
                return super().add_many(
                    reports, now=now, next_attempt_at=next_attempt_at, actor=actor
                )
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != _RECEIPT_KEY:
                    raise
        return super().add_many(reports, now=now, next_attempt_at=next_attempt_at, actor=actor)

    @contextmanager
    def _transaction(self) -> Iterator[Run]:
        with self._pool.connection() as conn, conn.transaction():

            def run(statement: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
                return conn.execute(_pyformat(statement), params)

            yield run

    def close(self) -> None:
        """Close the pool and its connections."""
        self._pool.close()

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f", schema={self.schema!r}"
        return f"PostgresStore({self._where!r}{schema})"


def _create_tables(conn: psycopg.Connection[Any], schema: str | None) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        if schema is not None:
            name = sql.Identifier(schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        for statement in _sql.SCHEMA:
            conn.execute(_pyformat(statement.format(serial="BIGSERIAL")), ())


def _describe(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid dsn>"
    info.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in info.items())
