"""ProcessedMessages on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from failsafe.exceptions import ConfigurationError
from failsafe.queue import Envelope, ProcessedMessages

DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_db() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, paid INTEGER DEFAULT 0)")
    db.execute("INSERT INTO orders (id, status) VALUES ('o-1', 'reserved')")
    db.commit()
    yield db
    db.close()


def pay(db: Any, processed: ProcessedMessages, message: Envelope, *, fail: bool = False) -> bool:
    """The handler's effect and the id in one transaction; returns whether it applied."""
    with db:
        if not processed.claim(db, message.id):
            return False
        db.execute("UPDATE orders SET status = 'paid', paid = paid + 1 WHERE id = 'o-1'")
        if fail:
            raise ConnectionError("lost the database mid-write")
    return True


def test_second_delivery_changes_nothing(sqlite_db: sqlite3.Connection) -> None:
    """The same message handled twice applies its effect once."""
    processed = ProcessedMessages()
    processed.create_table(sqlite_db)
    message = Envelope(body=b"{}")
    assert pay(sqlite_db, processed, message)
    assert not pay(sqlite_db, processed, message)
    assert sqlite_db.execute("SELECT paid FROM orders").fetchone() == (1,)


def test_failed_effect_leaves_no_id(sqlite_db: sqlite3.Connection) -> None:
    """A rolled-back effect rolls back the id too: the redelivery applies it."""
    processed = ProcessedMessages()
    processed.create_table(sqlite_db)
    message = Envelope(body=b"{}")
    with pytest.raises(ConnectionError):
        pay(sqlite_db, processed, message, fail=True)
    assert not processed.seen(sqlite_db, message.id)
    assert pay(sqlite_db, processed, message)
    assert sqlite_db.execute("SELECT status, paid FROM orders").fetchone() == ("paid", 1)


def test_consumers_are_apart(sqlite_db: sqlite3.Connection) -> None:
    """Two consumers of one message each claim it once."""
    a = ProcessedMessages(consumer="billing")
    b = ProcessedMessages(consumer="shipping")
    a.create_table(sqlite_db)
    assert a.claim(sqlite_db, "m-1")
    assert b.claim(sqlite_db, "m-1")
    assert not a.claim(sqlite_db, "m-1")


def test_forget_before(sqlite_db: sqlite3.Connection) -> None:
    """Old ids are deleted; recent ones kept."""
    processed = ProcessedMessages()
    processed.create_table(sqlite_db)
    processed.claim(sqlite_db, "old", now=100.0)
    processed.claim(sqlite_db, "new", now=200.0)
    assert processed.forget_before(sqlite_db, 150.0) == 1
    assert not processed.seen(sqlite_db, "old")
    assert processed.seen(sqlite_db, "new")


@pytest.mark.parametrize("table", ["", "orders; DROP TABLE x", "1abc", "a-b"])
def test_bad_table_names_are_refused(table: str) -> None:
    """Only plain identifiers are accepted as the table name (no SQL injection)."""
    with pytest.raises(ConfigurationError, match="table"):
        ProcessedMessages(table)


@pytest.mark.postgres
def test_postgres_applies_once() -> None:
    """On PostgreSQL (psycopg 3, ``%s`` parameters) the effect applies once too."""
    table = f"processed_{uuid.uuid4().hex[:12]}"
    orders = f"orders_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg.connect(DSN, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {DSN} ({exc}); these tests never skip.")
    processed = ProcessedMessages(table)
    try:
        with conn.transaction():
            processed.create_table(conn)
            conn.execute(f"CREATE TABLE {orders} (id TEXT PRIMARY KEY, paid INTEGER)")
            conn.execute(f"INSERT INTO {orders} VALUES ('o-1', 0)")
        message = Envelope(body=b"{}")
        applied = []
        for _ in range(2):
            with conn.transaction():
                if processed.claim(conn, message.id):
                    conn.execute(f"UPDATE {orders} SET paid = paid + 1 WHERE id = 'o-1'")
                    applied.append(True)
        assert applied == [True]
        assert conn.execute(f"SELECT paid FROM {orders}").fetchone() == (1,)
        assert processed.seen(conn, message.id)
    finally:
        with conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP TABLE IF EXISTS {orders}")
        conn.close()
