"""`SQLiteStore`: error records in one SQLite file (WAL), safe for several processes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from failsafe.errors import _sql
from failsafe.errors._sqlstore import Run, SQLStore

__all__ = ["SQLiteStore"]


class SQLiteStore(SQLStore):
    """Error records in one SQLite file: the embedded default.

    The file is in WAL mode with a busy timeout, so several processes (the service, its
    worker, a CLI) can use it at once; every write is one ``BEGIN IMMEDIATE`` transaction.
    Thread-safe: one connection, used under a lock.

    Args:
        path: The database file (created with its tables if missing); ``":memory:"`` for
            a private in-memory store.
        busy_timeout: Seconds to wait for another process's write lock.

    Example:
        ```python
        from failsafe.errors import SQLiteStore

        store = SQLiteStore(":memory:")
        ```
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a killed process (kill -9); only an OS crash or power
        # loss can drop the last commits. FULL would fsync every commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as run:
            for statement in _sql.SCHEMA:
                run(statement.format(serial="INTEGER"), ())

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

    def _run(self, sql: str, params: Any) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"
