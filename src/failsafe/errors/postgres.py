"""`PostgresStore`: error records in PostgreSQL, shared by every instance of the service.

Needs the ``postgres`` extra (psycopg 3 and psycopg-pool). The SQL and every decision live in
the shared SQL store; this module opens transactions from a connection pool, spells the
placeholders ``%s`` and locks rows, so concurrent workers never claim the same record and
concurrent duplicate reports are counted on one record.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, NoReturn

from failsafe._extras import missing_extra

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
except ImportError as exc:
    raise missing_extra("postgres", "failsafe.errors.postgres", exc) from exc

from failsafe import _validators as _v
from failsafe._validators import integer, number
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.errors import _sql
from failsafe.errors._sqlstore import Run, SQLStore, fill_fingerprints
from failsafe.errors.record import ErrorRecord, Report
from failsafe.errors.store import Query, StoreUnavailable

__all__ = ["FIRST_WAIT", "PostgresStore"]

# taken (per transaction) while creating the tables, so two processes starting at once do not
# race on CREATE ... IF NOT EXISTS (which is not safe against a concurrent creator)
_SCHEMA_LOCK = 0x6661696C73616665  # "failsafe"
_RECEIPT_KEY = "failsafe_error_receipts_pkey"

_log = logging.getLogger("failsafe.errors.postgres")

FIRST_WAIT: Final = 1.0
"""Seconds a transaction waits for a pooled connection before asking whether the server is up.

Up (the pool is busy): it waits on, up to the store's ``timeout``. Down: it fails at once with
`StoreUnavailable`."""

# SQLSTATEs of a lost or refused connection: class 08, and the server shutting down or starting
_GONE_STATES: Final = ("08", "57P01", "57P02", "57P03")


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
        timeout: Seconds a transaction waits for a pooled connection while every one is
            busy (and to open the pool at start).
        connect_timeout: Seconds to wait for the server to accept a connection (libpq's
            ``connect_timeout``, whole seconds, at least 2).
        probe_interval: While the server is unreachable, seconds between two attempts to
            reach it; calls in between fail at once.
        clock: Times the probes (`FakeClock` in tests).

    While the server cannot be reached (it refuses connections, a connection breaks, or no
    connection frees up and a fresh one cannot be made), every call raises
    [`StoreUnavailable`][failsafe.errors.StoreUnavailable] within about
    ``FIRST_WAIT + connect_timeout`` seconds, then at once, until a probe (one at a time,
    every ``probe_interval`` seconds) reaches the server again; the pool is then opened
    anew, so the store works again within ``probe_interval`` seconds of the server's return.
    Nothing is written in part: a transaction cut by a lost connection is rolled back by
    the server.

    Raises:
        psycopg.OperationalError: The server cannot be reached (at construction).
        ConfigurationError: A size or time is not a positive number.

    Example:
        ```python
        from failsafe.errors.postgres import PostgresStore

        store = PostgresStore("postgresql://app@db.internal/errors", schema="failsafe")
        ```
    """

    _lock_rows = " FOR UPDATE"
    _lock_due = " FOR UPDATE SKIP LOCKED"
    _bulk = _sql.ArrayBulk()

    #: Groups of reports the service stores at once (each a transaction on a connection of
    #: its own): the server works on one while the next one travels.
    writers: int = 2

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        probe_interval: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        for name, value in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("probe_interval", probe_interval),
        ):
            _v.check(name, value, number(above=0))
        _v.check("min_size", min_size, integer(0))
        _v.check("max_size", max_size, integer(max(min_size, 1)))
        self.schema = schema
        self._where = _describe(dsn)
        self._dsn = dsn
        self._sizes = (min_size, max_size)
        self._timeout = float(timeout)
        # libpq takes whole seconds and treats anything under 2 as 2
        self._connect_timeout = max(2, math.ceil(connect_timeout))
        self._probe_interval = float(probe_interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._next_probe = 0.0
        self._closed = False
        # a plain connection first: an unreachable server fails here with libpq's message
        with psycopg.connect(dsn, autocommit=True, connect_timeout=self._connect_timeout) as conn:
            _create_tables(conn, schema)
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = self._new_pool()
        try:
            self._pool.open(wait=True, timeout=timeout)
        except BaseException:
            self._pool.close()
            raise

    def _new_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        return ConnectionPool(
            self._dsn,
            min_size=self._sizes[0],
            max_size=self._sizes[1],
            timeout=self._timeout,
            kwargs={
                "autocommit": True,
                "connect_timeout": self._connect_timeout,
                # a peer that vanishes without a word (a dropped network path, a powered-off
                # host) is noticed by TCP within seconds, not the kernel's default 2 hours:
                # unanswered sends give up after connect_timeout, idle ones after ~11 s
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
                "tcp_user_timeout": self._connect_timeout * 1000,
            },
            configure=self._configure,
            check=ConnectionPool.check_connection,
            name="failsafe-errors",
            open=False,
        )

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

    def _before_find(self, run: Run, query: Query) -> None:
        # psycopg prepares a statement run five times; PostgreSQL then may plan it once for
        # any value, and a generic plan cannot use the trigram index for a LIKE pattern it
        # does not know: a text search fell to a full scan (1.6 ms -> 280 ms at 100k
        # records). Planned for its values, in this transaction only (for every statement,
        # the planning cost a quarter of the ingest rate).
        if query.text:
            run("SET LOCAL plan_cache_mode = force_custom_plan", ())
            if len(query.text) >= 3 and _UNIT not in query.text:
                # and the trigram index whenever it can serve: below ~100k records the
                # planner guessed a scan cheaper, and it was not (63 ms vs 7 ms at 10k)
                run("SET LOCAL enable_seqscan = off", ())

    def _text_clause(self, text: str) -> tuple[str, list[Any]]:
        # three characters or more: the trigram index (when pg_trgm could be installed)
        if len(text) < 3 or _UNIT in text:
            return _sql.text_like(text)
        return f"{_TEXT} LIKE ? ESCAPE '\\'", [_sql.like_pattern(text)]

    def _same_add_again(self, error: Exception, report_id: str | None) -> bool:
        # in a group: a concurrent delivery of the same report committed its receipt first
        return (
            report_id is not None
            and isinstance(error, psycopg.errors.UniqueViolation)
            and error.diag.constraint_name == _RECEIPT_KEY
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
        pool = self._ready()
        conn = self._connection(pool)
        try:
            with conn.transaction():

                def run(statement: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
                    return conn.execute(_pyformat(statement), params)

                yield run
        except psycopg.OperationalError as exc:
            if not (conn.broken or conn.closed or _gone(exc)):
                raise  # a lock timeout, a serialization failure: the caller's to handle
            self._lost(pool, f"the connection broke: {_first_line(exc)}", exc)
        finally:
            with contextlib.suppress(PoolClosed):
                pool.putconn(conn)

    # -- reaching the server -----------------------------------------------------------------

    def _ready(self) -> ConnectionPool[psycopg.Connection[Any]]:
        """The pool while the server is reachable; else a probe when one is due, or refusal."""
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{self!r} is closed", retry_after=self._probe_interval)
            if self._pool is not None:
                return self._pool
            now = self._clock.monotonic()
            if now < self._next_probe:
                raise StoreUnavailable(
                    f"PostgreSQL at {self._where} is unreachable; next try in "
                    f"{self._next_probe - now:.1f} s",
                    retry_after=self._next_probe - now,
                )
            self._next_probe = now + self._probe_interval  # this caller probes; others wait
        problem = self._probe()
        if problem is not None:
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} is unreachable: {problem}",
                retry_after=self._probe_interval,
            )
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{self!r} is closed", retry_after=self._probe_interval)
            if self._pool is None:
                # a fresh pool: the old one's reconnection backoff may have grown to minutes
                pool = self._new_pool()
                pool.open(wait=False)
                self._pool = pool
                _log.warning("PostgreSQL at %s is reachable again", self._where)
            return self._pool

    def _connection(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
        first = min(FIRST_WAIT, self._timeout)
        try:
            try:
                return pool.getconn(timeout=first)
            except PoolTimeout as exc:
                problem = self._probe()
                if problem is not None:
                    self._lost(pool, problem, exc)
            try:
                return pool.getconn(timeout=max(self._timeout - first, 0.001))
            except PoolTimeout as exc:
                raise StoreUnavailable(
                    f"every connection to PostgreSQL at {self._where} stayed busy for "
                    f"{self._timeout:g} s",
                    retry_after=1.0,
                ) from exc
        except PoolClosed as exc:  # the server went away (or the store closed) while waiting
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} is unreachable", retry_after=self._probe_interval
            ) from exc

    def _probe(self) -> str | None:
        """Why a new connection to the server fails, or ``None`` when it works."""
        try:
            with psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return _first_line(exc)
        return None

    def _lost(
        self, pool: ConnectionPool[psycopg.Connection[Any]], problem: str, cause: BaseException
    ) -> NoReturn:
        """Mark the server unreachable (closing ``pool``) and raise `StoreUnavailable`."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
                self._next_probe = self._clock.monotonic() + self._probe_interval
                _log.warning(
                    "PostgreSQL at %s is unreachable (%s); calls fail at once, trying again "
                    "every %g s",
                    self._where,
                    problem,
                    self._probe_interval,
                )
                # closed aside: its workers may be waiting on a connect that will time out
                threading.Thread(
                    target=pool.close,
                    kwargs={"timeout": 1.0},
                    name="failsafe-pool-close",
                    daemon=True,
                ).start()
        raise StoreUnavailable(
            f"PostgreSQL at {self._where} is unreachable: {problem}",
            retry_after=self._probe_interval,
        ) from cause

    def close(self) -> None:
        """Close the pool and its connections; later calls raise `StoreUnavailable`."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f", schema={self.schema!r}"
        return f"PostgresStore({self._where!r}{schema})"


# the four searched columns as one text, a unit separator between them (so a search cannot
# match across two columns); its trigram index makes a text search an index lookup
_UNIT = "\x1f"
_TEXT = (
    "LOWER(kind || chr(31) || COALESCE(error_type, '') || chr(31)"
    " || COALESCE(error_message, '') || chr(31) || payload)"
)


def _create_text_index(conn: psycopg.Connection[Any]) -> None:
    """A trigram index for the text search, if the pg_trgm extension is there or may be made.

    Called inside the schema lock's transaction. Without the extension (no right to create
    one) the search still works, as a scan, and a warning says so once.
    """
    where = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
    ).fetchone()
    if where is None:
        try:
            with conn.transaction():  # a savepoint: a refusal leaves the tables made
                # in public, so dropping one store's schema never drops it for the others
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
        except psycopg.Error as exc:
            text = str(exc).strip()
            _log.warning(
                "text search without an index: cannot create the pg_trgm extension (%s)",
                text.splitlines()[0] if text else type(exc).__name__,
            )
            return
        where = ("public",)
    opclass = sql.SQL("{}.gin_trgm_ops").format(sql.Identifier(where[0]))
    conn.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS failsafe_errors_text_trgm ON failsafe_errors"
            " USING gin ((" + _TEXT + ") {})"
        ).format(opclass)
    )


def _create_tables(conn: psycopg.Connection[Any], schema: str | None) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        if schema is not None:
            name = sql.Identifier(schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        for statement in _sql.SCHEMA:
            conn.execute(_pyformat(statement.format(serial="BIGSERIAL")), ())
        _add_trace_columns(conn)
        _create_text_index(conn)
        _create_counts(conn)
        _create_groups(conn)


def _add_trace_columns(conn: psycopg.Connection[Any]) -> None:
    """A schema from before traces gets the (empty) trace columns and their index, once.

    Called inside the schema lock's transaction. Looked up first: an ``ALTER TABLE`` would
    lock the records table at every start, even with nothing to add.
    """
    found = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'failsafe_errors'"
        ).fetchall()
    }
    for column in _sql.TRACE_COLUMNS:
        if column not in found:
            conn.execute(f"ALTER TABLE failsafe_errors ADD COLUMN {column} TEXT")
    for statement in _sql.TRACE_SCHEMA:
        conn.execute(statement)


# one shard per connection: concurrent writers (other instances, too) update rows of their
# own, so a count never makes one transaction wait for another's commit
_ADD_COUNTS = (
    "INSERT INTO failsafe_error_counts AS c (status, shard, n)"
    " SELECT {row}.status, pg_backend_pid() % 16, {sign}COUNT(*) FROM {rows}"
    " GROUP BY {row}.status ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n"
)
# an update counts only the rows whose status changed (matched on id, old to new)
_CHANGED = "old_rows o JOIN new_rows r ON r.id = o.id WHERE r.status <> o.status"
_COUNT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION failsafe_errors_count() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_ADD_COUNTS.format(row="r", sign="", rows="new_rows r")};
    ELSIF TG_OP = 'DELETE' THEN
        {_ADD_COUNTS.format(row="o", sign="-", rows="old_rows o")};
    ELSE
        {_ADD_COUNTS.format(row="o", sign="-", rows=_CHANGED)};
        {_ADD_COUNTS.format(row="r", sign="", rows=_CHANGED)};
    END IF;
    RETURN NULL;
END $$"""


def _create_counts(conn: psycopg.Connection[Any]) -> None:
    """The records per status, kept by statement triggers (`counts` reads them).

    Called inside the schema lock's transaction; the counts of records already there are
    taken once, when the table is made.
    """
    exists = conn.execute("SELECT to_regclass('failsafe_error_counts')").fetchone()
    conn.execute(_sql.COUNTS_TABLE)
    conn.execute(_COUNT_FUNCTION)
    for event, tables in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ):
        conn.execute(
            f"CREATE OR REPLACE TRIGGER failsafe_errors_count_{event.lower()} AFTER {event}"
            f" ON failsafe_errors REFERENCING {tables} FOR EACH STATEMENT"
            " EXECUTE FUNCTION failsafe_errors_count()"
        )
    if exists is None or exists[0] is None:
        conn.execute(_sql.FILL_COUNTS)


_SHARD = "pg_backend_pid() % 16"  # as the counts: a writer's own rows, no waiting
_HOUR = "floor({t} / 3600)::bigint"


def _group_function() -> str:
    def body(new: str | None, old: str | None, rows: str) -> str:
        return ";\n        ".join(_sql.group_changes(new, old, rows=rows, shard=_SHARD, hour=_HOUR))

    return f"""
CREATE OR REPLACE FUNCTION failsafe_errors_group() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {body("r", None, " FROM new_rows r")};
    ELSIF TG_OP = 'DELETE' THEN
        {body(None, "o", " FROM old_rows o")};
    ELSE
        {body("r", "o", " FROM old_rows o JOIN new_rows r ON r.id = o.id")};
    END IF;
    RETURN NULL;
END $$"""


def _create_groups(conn: psycopg.Connection[Any]) -> None:
    """The failure groups' numbers, kept by statement triggers (`groups` reads them).

    Called inside the schema lock's transaction. A schema from before fingerprints gets
    the column, each record its fingerprint, and the groups their numbers, once.
    """
    column = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'failsafe_errors' AND column_name = 'fingerprint'"
    ).fetchone()
    if column is None:
        conn.execute("ALTER TABLE failsafe_errors ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''")
        fill_fingerprints(lambda statement, params: conn.execute(_pyformat(statement), params))
    exists = conn.execute("SELECT to_regclass('failsafe_error_groups')").fetchone()
    for statement in _sql.GROUP_SCHEMA:
        conn.execute(statement)
    conn.execute(_group_function())
    for event, tables in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ):
        conn.execute(
            f"CREATE OR REPLACE TRIGGER failsafe_errors_group_{event.lower()} AFTER {event}"
            f" ON failsafe_errors REFERENCING {tables} FOR EACH STATEMENT"
            " EXECUTE FUNCTION failsafe_errors_group()"
        )
    if exists is None or exists[0] is None:
        for statement in _sql.group_changes(
            "r", None, rows=" FROM failsafe_errors r", shard="0", hour=_HOUR
        ):
            conn.execute(statement)


def _gone(exc: psycopg.OperationalError) -> bool:
    """Whether ``exc`` says the connection was lost or refused (not a query's own failure)."""
    state = exc.sqlstate
    return state is None or state.startswith(_GONE_STATES)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _describe(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid dsn>"
    info.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in info.items())
