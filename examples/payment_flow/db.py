"""The Orders database: orders, their status history, and the processed message ids.

A SQLite file in the run folder by default (``orders.db``), or tables in a PostgreSQL schema
when the settings carry a DSN.

**Applied once, never backwards.** `OrdersDB.apply` changes an order's status in one
transaction that also claims the message's id in failsafe's
[`ProcessedMessages`][failsafe.queue.ProcessedMessages] table and adds one row to
``order_status_history``: a redelivered copy of a message finds its id and changes nothing,
and a status that is not later than the order's current one (`domain.decide`) is recorded as
processed but not applied. The history has a unique ``(order_id, to_status)`` pair, so even a
bug elsewhere could not write a second reserved-to-paid transition.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from examples._support.postgres import schema_pool
from examples.payment_flow.domain import RESERVED, StatusUpdate, decide
from examples.payment_flow.settings import Settings
from failsafe.queue import ProcessedMessages

__all__ = ["OrdersDB", "Outcome", "StatusWriteFailed"]


class Outcome(enum.StrEnum):
    """What `OrdersDB.apply` did."""

    APPLIED = "applied"
    """The status was written, with its history row."""
    DUPLICATE = "duplicate"
    """This message was applied (or found stale) before: nothing changed."""
    STALE = "stale"
    """The order already has this status or a later one: nothing changed."""
    NOT_FOUND = "not_found"
    """No such order: nothing changed, the message id is not claimed."""


class StatusWriteFailed(Exception):
    """The status could not be written (the database refused, or the injected fault)."""


_TABLES = (
    "CREATE TABLE IF NOT EXISTS orders ("
    " id TEXT PRIMARY KEY, status TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS order_status_history ("
    " id {serial}, order_id TEXT NOT NULL, from_status TEXT NOT NULL,"
    " to_status TEXT NOT NULL, message_id TEXT NOT NULL, source TEXT NOT NULL,"
    " at DOUBLE PRECISION NOT NULL, UNIQUE (order_id, to_status))",
)


class OrdersDB:
    """The Orders database, over one SQLite file or a PostgreSQL schema.

    Args:
        path: The SQLite file (created if missing).
        dsn: A PostgreSQL DSN instead (psycopg 3 and psycopg_pool).
        schema: The PostgreSQL schema holding the tables.

    Thread-safe: one SQLite connection per thread, or a pool of PostgreSQL connections.
    """

    def __init__(
        self, *, path: str | Path | None = None, dsn: str | None = None, schema: str = "orders"
    ) -> None:
        if (path is None) == (dsn is None):
            raise ValueError("give a SQLite path or a PostgreSQL dsn")
        self.path = None if path is None else str(path)
        self.dsn = dsn
        self.schema = schema
        self.processed = ProcessedMessages("processed_messages", consumer="orders")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool: Any = None
        if dsn is not None:
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self._pool = schema_pool(dsn, schema)
        self._create()

    @classmethod
    def open(cls, settings: Settings) -> OrdersDB:
        """The run's Orders database, as ``settings`` say."""
        if settings.dsn is not None:
            return cls(dsn=settings.dsn, schema=f"{settings.schema}_orders")
        return cls(path=settings.path / "orders.db")

    # -- connections -----------------------------------------------------------------------
    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self.path is not None
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction: a connection whose changes commit together, or roll back."""
        if self._pool is not None:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
            return
        conn = self._sqlite()
        conn.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock later
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pool is not None else sql

    def _create(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self._pool is not None else "INTEGER PRIMARY KEY"
        with self.transaction() as conn:
            for statement in _TABLES:
                conn.execute(statement.format(serial=serial))
            self.processed.create_table(conn)

    # -- orders ----------------------------------------------------------------------------
    def add_orders(self, order_ids: Iterable[str], status: str = RESERVED) -> int:
        """Create orders in ``status`` (those that exist are left alone); return how many."""
        now = time.time()
        added = 0
        with self.transaction() as conn:
            for order_id in order_ids:
                cursor = conn.execute(
                    self._sql(
                        "INSERT INTO orders (id, status, updated_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (id) DO NOTHING"
                    ),
                    (order_id, status, now),
                )
                added += cursor.rowcount
        return added

    def apply(
        self,
        update: StatusUpdate,
        *,
        source: str,
        before_write: Callable[[], None] | None = None,
    ) -> tuple[Outcome, str | None]:
        """Apply ``update`` once; return what happened and the order's status after it.

        Args:
            update: The order, its new status and the message id.
            source: Who applies it (``consumer`` or ``errors-retry``), kept in the history.
            before_write: Called inside the transaction before anything is written (the
                fault switch); what it raises rolls everything back.

        Raises:
            StatusWriteFailed: If the write failed; nothing was changed.
        """
        lock = " FOR UPDATE" if self._pool is not None else ""
        try:
            with self.transaction() as conn:
                row = conn.execute(
                    self._sql(f"SELECT status FROM orders WHERE id = ?{lock}"), (update.order_id,)
                ).fetchone()
                if row is None:
                    return Outcome.NOT_FOUND, None
                current: str = row[0]
                if before_write is not None:
                    before_write()
                if not self.processed.claim(conn, update.message_id):
                    return Outcome.DUPLICATE, current
                if decide(current, update.status) == "stale":
                    return Outcome.STALE, current
                now = time.time()
                conn.execute(
                    self._sql("UPDATE orders SET status = ?, updated_at = ? WHERE id = ?"),
                    (update.status, now, update.order_id),
                )
                conn.execute(
                    self._sql(
                        "INSERT INTO order_status_history"
                        " (order_id, from_status, to_status, message_id, source, at)"
                        " VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    (update.order_id, current, update.status, update.message_id, source, now),
                )
                return Outcome.APPLIED, update.status
        except StatusWriteFailed:
            raise
        except Exception as exc:  # the database refused: locked, unreachable, full...
            raise StatusWriteFailed(f"{type(exc).__name__}: {exc}") from exc

    def get(self, order_id: str) -> dict[str, Any] | None:
        """The order with its status history (oldest first), or ``None``."""
        with self.transaction() as conn:
            row = conn.execute(
                self._sql("SELECT status, updated_at FROM orders WHERE id = ?"), (order_id,)
            ).fetchone()
            if row is None:
                return None
            history = conn.execute(
                self._sql(
                    "SELECT from_status, to_status, message_id, source, at"
                    " FROM order_status_history WHERE order_id = ? ORDER BY id"
                ),
                (order_id,),
            ).fetchall()
        return {
            "orderId": order_id,
            "status": row[0],
            "updatedAt": row[1],
            "history": [
                {"from": h[0], "to": h[1], "messageId": h[2], "source": h[3], "at": h[4]}
                for h in history
            ],
        }

    def statuses(self) -> dict[str, str]:
        """Every order's status, by id."""
        with self.transaction() as conn:
            return dict(conn.execute("SELECT id, status FROM orders").fetchall())

    def transitions(self) -> list[tuple[str, str, str]]:
        """Every history row as ``(order_id, from_status, to_status)``, oldest first."""
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT order_id, from_status, to_status FROM order_status_history ORDER BY id"
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def reached_at(self, status: str) -> dict[str, float]:
        """When each order reached ``status`` (wall clock of its history row), by id."""
        with self.transaction() as conn:
            rows = conn.execute(
                self._sql("SELECT order_id, at FROM order_status_history WHERE to_status = ?"),
                (status,),
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def count(self, status: str) -> int:
        """How many orders are in ``status``."""
        with self.transaction() as conn:
            row = conn.execute(
                self._sql("SELECT COUNT(*) FROM orders WHERE status = ?"), (status,)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            self._pool.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(Exception):
                    conn.close()
            self._connections.clear()
