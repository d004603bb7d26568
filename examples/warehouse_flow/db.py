"""The example's two databases: the Warehouse's stock, and the Products catalogue.

Each is a SQLite file in the run folder by default, or tables in a PostgreSQL schema when
the settings carry a DSN. Both Warehouse instances open the same stock database.

**Applied once.** The stock table and the table of applied idempotency keys change in one
transaction: the key is inserted first (a second transaction with the same key waits on the
key's unique index, then finds it), the components are read and decremented, and the
outcome is stored with the key. A request repeated by the Order service's retries or
failover, and a decrement retried by the Error-handling service, therefore find the key and
change nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from examples._support.postgres import schema_pool
from examples.warehouse_flow.domain import Decision, plan
from examples.warehouse_flow.settings import Settings

__all__ = [
    "APPLIED",
    "SHORT",
    "Database",
    "Outcome",
    "ProductsDB",
    "StockDB",
    "StockWriteFailed",
    "open_database",
]

APPLIED = "applied"
"""The outcome of a decrement that was written."""
SHORT = "short"
"""The outcome of an order line that found too little stock (the 202): nothing written."""


class Cursor(Protocol):
    """What both drivers' cursors offer here."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...


class Database:
    """One connection per thread to a SQLite file, or a small pool on PostgreSQL.

    SQL is written with ``?`` placeholders and ``FOR UPDATE`` markers (``{lock}``); the
    PostgreSQL side turns them into ``%s`` and real row locks.
    """

    def __init__(
        self, *, path: Path | None = None, dsn: str | None = None, schema: str = ""
    ) -> None:
        self.path = path
        self.dsn = dsn
        self.schema = schema
        self._local = threading.local()
        self._pool: Any = None
        if dsn is not None:
            import psycopg

            with psycopg.connect(dsn) as conn, conn.transaction():
                # both Warehouse instances start at once: concurrent CREATE ... IF NOT EXISTS
                # can fail on PostgreSQL, so they take turns
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self._pool = schema_pool(dsn, schema)

    @property
    def postgres(self) -> bool:
        """Whether this is PostgreSQL."""
        return self._pool is not None

    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self.path is not None
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(
        self, *, write: bool = True
    ) -> Iterator[Callable[[str, Sequence[Any]], Cursor]]:
        """Run statements in one transaction: commit at the end, roll back on an exception.

        Yields:
            ``run(sql, params)``, returning the cursor.
        """
        if self._pool is not None:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:

                def run_pg(sql: str, params: Sequence[Any] = ()) -> Cursor:
                    cur.execute(sql.replace("?", "%s").format(lock="FOR UPDATE"), params)
                    pg_cursor: Cursor = cur
                    return pg_cursor

                yield run_pg
            return
        conn = self._sqlite()
        # IMMEDIATE: take the write lock first, so two instances never both read then write
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        cursor = conn.cursor()

        def run_sqlite(sql: str, params: Sequence[Any] = ()) -> Cursor:
            cursor.execute(sql.format(lock=""), params)
            return cursor

        try:
            yield run_sqlite
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def take_turns(self, run: Callable[[str, Sequence[Any]], Cursor]) -> None:
        """Serialize the transaction ``run`` belongs to with others doing the same (set-up)."""
        if self.postgres:
            run("SELECT pg_advisory_xact_lock(hashtext(?))", (self.schema,))

    def drop_schema(self) -> None:
        """Drop this run's PostgreSQL schema (tests); nothing on SQLite."""
        if self.dsn is not None:
            import psycopg

            self.close()
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        """Close the pool (PostgreSQL) or this thread's connection (SQLite)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def open_database(settings: Settings, name: str) -> Database:
    """The database ``name`` (``stock`` or ``products``) of this run."""
    if settings.dsn is not None:
        return Database(dsn=settings.dsn, schema=f"{settings.schema}_{name}")
    settings.path.mkdir(parents=True, exist_ok=True)
    return Database(path=settings.path / f"{name}.db")


class StockWriteFailed(Exception):
    """Writing the new quantities failed (step 10); nothing was changed."""


class Outcome:
    """What a decrement did: ``applied``, ``short`` (the 202), and whether it was replayed."""

    def __init__(self, outcome: str, decision: Decision | None, *, replayed: bool) -> None:
        self.outcome = outcome
        self.decision = decision
        self.replayed = replayed

    def __repr__(self) -> str:
        return f"Outcome({self.outcome!r}, replayed={self.replayed})"


class StockDB:
    """The Warehouse's stock, by component, and its applied idempotency keys."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, initial: Mapping[str, int]) -> None:
        """Create the tables, and put ``initial`` in an empty stock table."""
        with self.db.transaction() as run:
            self.db.take_turns(run)
            run(
                "CREATE TABLE IF NOT EXISTS stock"
                " (component TEXT PRIMARY KEY, quantity INTEGER NOT NULL)",
                (),
            )
            run(
                "CREATE TABLE IF NOT EXISTS applied_keys"
                " (key TEXT PRIMARY KEY, outcome TEXT NOT NULL,"
                " product_id TEXT NOT NULL, quantity INTEGER NOT NULL)",
                (),
            )
            if run("SELECT COUNT(*) FROM stock", ()).fetchone()[0] == 0:
                for component, quantity in sorted(initial.items()):
                    run(
                        "INSERT INTO stock (component, quantity) VALUES (?, ?)",
                        (component, quantity),
                    )

    def levels(self) -> dict[str, int]:
        """Every component's quantity."""
        with self.db.transaction(write=False) as run:
            rows = run("SELECT component, quantity FROM stock ORDER BY component", ()).fetchall()
        return {str(c): int(q) for c, q in rows}

    def outcomes(self) -> dict[str, str]:
        """Every applied key's outcome (``applied`` or ``short``)."""
        with self.db.transaction(write=False) as run:
            rows = run("SELECT key, outcome FROM applied_keys", ()).fetchall()
        return {str(k): str(o) for k, o in rows}

    def decrement(
        self,
        key: str,
        product_id: str,
        quantity: int,
        take: Mapping[str, int],
        *,
        before_write: Callable[[], None],
        force: bool = False,
    ) -> Outcome:
        """Apply step 9 once for ``key``, in one transaction.

        Args:
            key: The request's idempotency key.
            product_id: The product (kept with the key).
            quantity: How many products (kept with the key).
            take: What to take from each component.
            before_write: Called once the decision to write is taken; raising there fails
                the write (the fault switch, or a real database failure), and the whole
                transaction is rolled back: nothing changes, the key included.
            force: Decrement even below zero: a retried write whose order line was already
                accepted (step 11) must be applied whatever the stock is now.

        Returns:
            What happened: ``applied`` or ``short``; ``replayed`` when the key was already
            there (then nothing changed now).

        Raises:
            StockWriteFailed: If the write failed (after the stock was found sufficient):
                nothing changed. Other database errors (before the decision) pass through.
        """
        with self.db.transaction() as run:
            inserted = run(
                "INSERT INTO applied_keys (key, outcome, product_id, quantity)"
                " VALUES (?, 'pending', ?, ?)"
                " ON CONFLICT (key) DO NOTHING",
                (key, product_id, quantity),
            ).rowcount
            if inserted == 0:
                row = run("SELECT outcome FROM applied_keys WHERE key = ?", (key,)).fetchone()
                return Outcome(str(row[0]), None, replayed=True)
            components = sorted(take)
            marks = ", ".join("?" for _ in components)
            rows = run(
                f"SELECT component, quantity FROM stock WHERE component IN ({marks})"
                " ORDER BY component {lock}",
                components,
            ).fetchall()
            decision = plan(take, {str(c): int(q) for c, q in rows})
            if not decision.enough and not force:
                run("UPDATE applied_keys SET outcome = ? WHERE key = ?", (SHORT, key))
                return Outcome(SHORT, decision, replayed=False)
            try:
                before_write()
                for component in components:
                    run(
                        "UPDATE stock SET quantity = quantity - ? WHERE component = ?",
                        (take[component], component),
                    )
                run("UPDATE applied_keys SET outcome = ? WHERE key = ?", (APPLIED, key))
            except Exception as exc:  # the write failed: the transaction is rolled back
                raise StockWriteFailed(f"{type(exc).__name__}: {exc}") from exc
            return Outcome(APPLIED, decision, replayed=False)


class ProductsDB:
    """The Products service's catalogue: each product's components."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, catalogue: Mapping[str, Mapping[str, int]]) -> None:
        """Create the table, and put ``catalogue`` in an empty one."""
        with self.db.transaction() as run:
            self.db.take_turns(run)
            run(
                "CREATE TABLE IF NOT EXISTS components (product_id TEXT NOT NULL,"
                " component TEXT NOT NULL, per_product INTEGER NOT NULL,"
                " PRIMARY KEY (product_id, component))",
                (),
            )
            if run("SELECT COUNT(*) FROM components", ()).fetchone()[0] == 0:
                for product, parts in sorted(catalogue.items()):
                    for component, per in sorted(parts.items()):
                        run(
                            "INSERT INTO components (product_id, component, per_product)"
                            " VALUES (?, ?, ?)",
                            (product, component, per),
                        )

    def components(self, product_id: str) -> dict[str, int] | None:
        """The product's components, or ``None`` if the product is unknown."""
        with self.db.transaction(write=False) as run:
            rows = run(
                "SELECT component, per_product FROM components WHERE product_id = ?", (product_id,)
            ).fetchall()
        return {str(c): int(n) for c, n in rows} or None
