"""`ProcessedMessages`: apply a redelivered message's effect once.

Delivery is at-least-once: a consumer that dies after the handler's effect but before the ack
gets the message again. Keep the ids of processed messages in the same database transaction
as the effect, and a second delivery finds its id there and does nothing:

```python
import sqlite3

from failsafe.queue import Envelope, ProcessedMessages

db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT)")
db.execute("INSERT INTO orders VALUES ('o-1', 'reserved')")
processed = ProcessedMessages()
processed.create_table(db)

def handle(message: Envelope) -> None:
    with db:  # one transaction: the effect and the id commit together, or neither
        if not processed.claim(db, message.id):
            return  # applied before: a redelivered copy
        db.execute("UPDATE orders SET status = 'paid' WHERE id = 'o-1'")

message = Envelope(body=b'{"orderId": "o-1"}')
handle(message)
handle(message)  # the second time changes nothing
assert processed.seen(db, message.id)
```

It works with ``sqlite3`` and psycopg 3 connections (and other DB-API connections whose
parameter style is ``qmark`` or ``format``/``pyformat``).
"""

from __future__ import annotations

import re
import time
from typing import Any

from failsafe.exceptions import ConfigurationError

__all__ = ["ProcessedMessages"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _placeholder(connection: Any) -> str:
    module = type(connection).__module__.split(".", 1)[0]
    return "%s" if module in ("psycopg", "psycopg2", "pymysql", "MySQLdb") else "?"


class ProcessedMessages:
    """Processed message ids in a table of the handler's own database.

    Args:
        table: The table's name (letters, digits and underscores).
        consumer: Names the consumer, so several consumers of one message (different
            queues bound to the same events) each apply it once.

    Raises:
        ConfigurationError: If ``table`` is not a plain identifier, or ``consumer`` is empty.
    """

    def __init__(self, table: str = "failsafe_processed_messages", *, consumer: str = "") -> None:
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(
                "table", f"must be a plain SQL identifier (letters, digits, _), got {table!r}"
            )
        if not isinstance(consumer, str):
            raise ConfigurationError("consumer", f"must be a string, got {consumer!r}")
        self.table = table
        self.consumer = consumer

    def create_table(self, connection: Any) -> None:
        """Create the table if it does not exist (commit it yourself where needed)."""
        cursor = connection.cursor()
        try:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " consumer TEXT NOT NULL,"
                " message_id TEXT NOT NULL,"
                " processed_at DOUBLE PRECISION NOT NULL,"
                " PRIMARY KEY (consumer, message_id))"
            )
        finally:
            cursor.close()

    def claim(self, connection: Any, message_id: str, *, now: float | None = None) -> bool:
        """Record ``message_id`` as processed, inside the caller's open transaction.

        Returns:
            ``True`` the first time (apply the effect, then commit), ``False`` if the id was
            recorded before (skip the effect).
        """
        if not isinstance(message_id, str) or not message_id:
            raise ConfigurationError("message_id", f"must be a non-empty string: {message_id!r}")
        p = _placeholder(connection)
        cursor = connection.cursor()
        try:
            cursor.execute(
                f"INSERT INTO {self.table} (consumer, message_id, processed_at)"
                f" VALUES ({p}, {p}, {p}) ON CONFLICT DO NOTHING",
                (self.consumer, message_id, time.time() if now is None else now),
            )
            return bool(cursor.rowcount == 1)
        finally:
            cursor.close()

    def seen(self, connection: Any, message_id: str) -> bool:
        """Whether ``message_id`` was recorded (committed, or in this transaction)."""
        p = _placeholder(connection)
        cursor = connection.cursor()
        try:
            cursor.execute(
                f"SELECT 1 FROM {self.table} WHERE consumer = {p} AND message_id = {p}",
                (self.consumer, message_id),
            )
            return cursor.fetchone() is not None
        finally:
            cursor.close()

    def forget_before(self, connection: Any, before: float) -> int:
        """Delete ids processed before wall-clock time ``before``; return how many.

        Keep ids at least as long as a copy could still arrive: longer than the redelivery
        policy's whole series (every round's delay) plus the broker's lease.
        """
        p = _placeholder(connection)
        cursor = connection.cursor()
        try:
            cursor.execute(
                f"DELETE FROM {self.table} WHERE consumer = {p} AND processed_at < {p}",
                (self.consumer, before),
            )
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def __repr__(self) -> str:
        return f"ProcessedMessages(table={self.table!r}, consumer={self.consumer!r})"
