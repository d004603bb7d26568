"""`SQLiteStore`: error records in one SQLite file (WAL), safe for several processes."""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from failsafe import _validators as _v
from failsafe._validators import integer
from failsafe.errors import _sql
from failsafe.errors._sqlstore import Run, SQLStore, fill_fingerprints
from failsafe.errors.store import StoreUnavailable
from failsafe.exceptions import ConfigurationError

__all__ = ["READERS", "SQLiteStore"]

READERS: Final = 4
"""Read connections a file store keeps at most: reads (a record, a listing, a search, the
counts) run on them beside the writer (WAL), never waiting for a write."""


class SQLiteStore(SQLStore):
    """Error records in one SQLite file: the embedded default.

    The file is in WAL mode with a busy timeout, so several processes (the service, its
    worker, a CLI) can use it at once; every write is one ``BEGIN IMMEDIATE`` transaction
    on the store's write connection, and reports arriving together from several threads
    share one (a group commit; each still answered only once it is committed). Reads run on
    up to ``readers`` connections of their own, so a search never waits for a write nor
    holds one up. Thread-safe.

    Args:
        path: The database file (created with its tables if missing); ``":memory:"`` for
            a private in-memory store (one connection for everything).
        busy_timeout: Seconds to wait for another process's write lock.
        readers: Read connections kept at most (more concurrent reads wait for one, up
            to ``busy_timeout``; then `StoreUnavailable`).

    Raises:
        ConfigurationError: If ``path`` is a directory, its directory is missing or not
            writable (for a new file), or it is a file but not a SQLite database.

    Example:
        ```python
        from failsafe.errors import SQLiteStore

        store = SQLiteStore(":memory:")
        ```
    """

    #: Groups of reports the service stores at once: one, since a file's writes take turns.
    writers: int = 1

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, readers: int = READERS
    ) -> None:
        _v.check("readers", readers, integer(1))
        self.path = str(path)
        _check_path(self.path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        # a private in-memory database cannot be opened twice: it reads on the writer
        self._memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self._readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._reader_slots = threading.BoundedSemaphore(readers)
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()  # not the writer's: a read never waits on it
        self._closed = False
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if "not a database" in str(exc):
                raise ConfigurationError(
                    "path", f"{self.path} is not a SQLite database (is it the right file?)"
                ) from None
            raise
        # WAL + NORMAL: a commit survives a killed process (kill -9); only an OS crash or power
        # loss can drop the last commits. FULL would fsync every commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as run:
            for statement in _sql.SCHEMA:
                run(statement.format(serial="INTEGER"), ())
            _add_trace_columns(run)
            _create_text_index(run)
            _create_counts(run)
            _create_groups(run)

    @contextmanager
    def _transaction(self) -> Iterator[Run]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._run
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _text_clause(self, text: str) -> tuple[str, list[Any]]:
        # three characters or more: the trigram index; shorter ones cannot use it
        if len(text) < 3:
            return _sql.text_like(text)
        phrase = '"' + text.replace('"', '""') + '"'
        return (
            "rowid IN (SELECT rowid FROM failsafe_errors_text WHERE failsafe_errors_text MATCH ?)",
            [phrase],
        )

    def _run(self, sql: str, params: Any) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    @contextmanager
    def _reading(self) -> Iterator[Run]:
        if self._memory:
            with self._transaction() as run:
                yield run
            return
        # a bound on the wait for a read connection, like the writer's busy timeout
        if not self._reader_slots.acquire(timeout=self._busy_timeout):
            raise StoreUnavailable(
                f"every read connection of {self!r} stayed busy for {self._busy_timeout:g} s",
                retry_after=1.0,
            )
        try:
            try:
                db = self._readers.get_nowait()
            except queue.Empty:
                db = self._open_reader()
            try:
                db.execute("BEGIN")  # a snapshot: the listing and its count agree
                try:
                    yield db.execute
                finally:
                    db.execute("COMMIT")
            except BaseException:
                self._give_back(db)
                raise
            self._readers.put(db)
        finally:
            self._reader_slots.release()

    def _give_back(self, db: sqlite3.Connection) -> None:
        """After an error: keep ``db`` if it is out of its transaction, else close it.

        Out of its transaction, the error was its caller's (a record not found); in it,
        the connection is in an unknown state and is never handed on.
        """
        try:
            clean = not db.in_transaction
        except sqlite3.Error:
            clean = False
        if clean:
            self._readers.put(db)
            return
        db.close()
        with self._readers_lock:
            if db in self._all_readers:
                self._all_readers.remove(db)

    def _open_reader(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA query_only=ON")
        with self._readers_lock:
            if self._closed:
                db.close()
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            self._all_readers.append(db)
        return db

    def close(self) -> None:
        """Close the database connections."""
        with self._lock, self._readers_lock:
            self._closed = True
            self._db.close()
            for db in self._all_readers:
                db.close()
            self._all_readers.clear()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


_TEXT_COLUMNS = "kind, error_type, error_message, payload"

_ADD_ONE = (
    "INSERT INTO failsafe_error_counts (status, shard, n) VALUES ({row}.status, 0, {sign}1)"
    " ON CONFLICT (status, shard) DO UPDATE SET n = n {sign} 1"
)


def _create_counts(run: Run) -> None:
    """The records per status, kept by triggers (`counts` reads them, not the records)."""
    exists = run(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'failsafe_error_counts'", ()
    ).fetchone()
    run(_sql.COUNTS_TABLE, ())
    plus, minus = _ADD_ONE.format(row="new", sign="+"), _ADD_ONE.format(row="old", sign="-")
    for statement in (
        f"""CREATE TRIGGER IF NOT EXISTS failsafe_errors_count_insert AFTER INSERT
            ON failsafe_errors BEGIN {plus}; END""",
        f"""CREATE TRIGGER IF NOT EXISTS failsafe_errors_count_update AFTER UPDATE OF status
            ON failsafe_errors WHEN old.status <> new.status BEGIN {minus}; {plus}; END""",
        f"""CREATE TRIGGER IF NOT EXISTS failsafe_errors_count_delete AFTER DELETE
            ON failsafe_errors BEGIN {minus}; END""",
    ):
        run(statement, ())
    if exists is None:
        run(_sql.FILL_COUNTS, ())


_HOUR = "CAST({t} / 3600 AS INTEGER)"


def _check_path(path: str) -> None:
    """Refuse a file path whose directory is missing, or a directory, naming the problem."""
    if path == ":memory:" or path.startswith("file:"):
        return
    where = Path(path)
    if where.is_dir():
        raise ConfigurationError("path", f"{path} is a directory, not a database file")
    parent = where.absolute().parent
    if not parent.is_dir():
        raise ConfigurationError(
            "path", f"cannot create {path}: the directory {parent} does not exist"
        )
    if not where.exists() and not os.access(parent, os.W_OK):
        raise ConfigurationError(
            "path", f"cannot create {path}: the directory {parent} is not writable"
        )


def _create_groups(run: Run) -> None:
    """The failure groups' numbers, kept by triggers (`groups` reads them, not the records).

    A file from before fingerprints gets the column, each record its fingerprint, and the
    groups their numbers, once, when it is opened.
    """
    columns = {row[1] for row in run("PRAGMA table_info(failsafe_errors)", ()).fetchall()}
    if "fingerprint" not in columns:
        run("ALTER TABLE failsafe_errors ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''", ())
        fill_fingerprints(run)
    exists = run(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'failsafe_error_groups'", ()
    ).fetchone()
    for statement in _sql.GROUP_SCHEMA:
        run(statement, ())
    for name, event, new, old in (
        ("insert", "INSERT", "new", None),
        ("update", "UPDATE OF status, count", "new", "old"),
        ("delete", "DELETE", None, "old"),
    ):
        body = "; ".join(_sql.group_changes(new, old, rows="", shard="0", hour=_HOUR))
        run(
            f"CREATE TRIGGER IF NOT EXISTS failsafe_errors_group_{name} AFTER {event}"
            f" ON failsafe_errors BEGIN {body}; END",
            (),
        )
    if exists is None:
        for statement in _sql.group_changes(
            "r", None, rows=" FROM failsafe_errors r", shard="0", hour=_HOUR
        ):
            run(statement, ())


def _add_trace_columns(run: Run) -> None:
    """A file from before traces gets the (empty) trace columns and their index, once."""
    columns = {row[1] for row in run("PRAGMA table_info(failsafe_errors)", ()).fetchall()}
    for column in _sql.TRACE_COLUMNS:
        if column not in columns:
            run(f"ALTER TABLE failsafe_errors ADD COLUMN {column} TEXT", ())
    for statement in _sql.TRACE_SCHEMA:
        run(statement, ())


def _create_text_index(run: Run) -> None:
    """The text search's index: FTS5 with trigrams (any substring of 3+ characters, any case).

    Kept in step with the records by triggers; built from the records already there when a
    file from before it is opened. The indexed columns never change once a record exists.
    """
    exists = run(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'failsafe_errors_text'", ()
    ).fetchone()
    new = ", ".join(f"new.{c}" for c in _TEXT_COLUMNS.split(", "))
    old = ", ".join(f"old.{c}" for c in _TEXT_COLUMNS.split(", "))
    for statement in (
        f"""CREATE VIRTUAL TABLE IF NOT EXISTS failsafe_errors_text USING fts5(
            {_TEXT_COLUMNS}, content='failsafe_errors', content_rowid='rowid',
            tokenize='trigram')""",
        f"""CREATE TRIGGER IF NOT EXISTS failsafe_errors_text_insert AFTER INSERT
            ON failsafe_errors BEGIN
            INSERT INTO failsafe_errors_text (rowid, {_TEXT_COLUMNS}) VALUES (new.rowid, {new});
            END""",
        f"""CREATE TRIGGER IF NOT EXISTS failsafe_errors_text_delete AFTER DELETE
            ON failsafe_errors BEGIN
            INSERT INTO failsafe_errors_text (failsafe_errors_text, rowid, {_TEXT_COLUMNS})
            VALUES ('delete', old.rowid, {old});
            END""",
        f"""CREATE TRIGGER IF NOT EXISTS failsafe_errors_text_update AFTER UPDATE
            OF {_TEXT_COLUMNS} ON failsafe_errors BEGIN
            INSERT INTO failsafe_errors_text (failsafe_errors_text, rowid, {_TEXT_COLUMNS})
            VALUES ('delete', old.rowid, {old});
            INSERT INTO failsafe_errors_text (rowid, {_TEXT_COLUMNS}) VALUES (new.rowid, {new});
            END""",
    ):
        run(statement, ())
    if exists is None:
        run("INSERT INTO failsafe_errors_text (failsafe_errors_text) VALUES ('rebuild')", ())
