"""`SQLiteBroker`: the embedded default broker, one SQLite file shared by every process.

All messages of all queues live in one table, ``failsafe_messages``, one row per message:
its queue, its **place** (``ready``: in the work queue, visible or reserved; ``delayed``: in
the DLQ; ``parked``: in the parking queue), ``visible_at`` (when a ready message may be
received, when a reservation runs out, or when a delayed message is due), the broker's
delivery counter, the current reservation's token, ``since`` (when it got to its place) and
the envelope as `encode` writes it (JSON, never pickled). Messages are received in order of
``(visible_at, seq)``.

Reservations are **leases**: a received message is invisible for ``lease`` seconds. A
consumer that settles it in time owns the outcome; one that dies (even ``kill -9``) only
delays it: after the lease any consumer receives it again, its delivery counted. Settling
with a token the broker no longer holds (the lease ran out and someone else took it, or the
delivery was already settled) raises `SettleConflict` and changes nothing.

Durability: the file is in WAL mode. Once ``publish`` or a settling call returns, the change
is committed and survives the process being killed at once. With the default
``synchronous="NORMAL"`` the last commits can still be lost if the machine itself crashes
before the operating system writes them out; ``synchronous="FULL"`` closes that gap with one
``fsync`` per commit.

The DLQ tools read dead letters a page at a time, by keyset on ``(since, seq)`` over an
index (``dead_letter_page``): a page of 100 reads about 100 rows whatever the backlog, and
the filters are SQL (the error type through SQLite's JSON functions). ``replay`` and
``purge`` find their ids through an index on ``(queue, message_id)``, so a batch costs the
same with a million dead letters as with ten; a filter on an id prefix is a range of that
index. A file made by an older failsafe gets these indexes when it is first opened
(``CREATE INDEX IF NOT EXISTS``, in the opening transaction: a one-time cost of about a
second per million rows). The DLQ methods raise `NoSuchQueue` for a queue that was never
declared or published to in the file (``failsafe_queues`` records them), rather than
finding nothing.

Several threads and several processes may share one file: a claim is one
``UPDATE ... RETURNING`` statement, which takes the file's write lock before it reads, so two
consumers never reserve the same message; every settling call (``defer`` and ``park``
included) is one statement too, so it is atomic; the rest are ``BEGIN IMMEDIATE``
transactions. Each call commits once: publish, receive and ack are one commit each.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs

from failsafe import _tracing
from failsafe import _validators as _v
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError
from failsafe.queue import _trace
from failsafe.queue.bridge import AsyncView
from failsafe.queue.broker import (
    COUNT_LIMIT,
    BrokerError,
    BrokerUnavailable,
    DeadLetter,
    DeadLetterBatch,
    DeadLetterCount,
    DeadLetterCursor,
    DeadLetterFilter,
    DeadLetterPage,
    Delivery,
    NoSuchQueue,
    Place,
    SettleConflict,
)
from failsafe.queue.envelope import Envelope, ErrorInfo, MalformedMessage, decode, encode
from failsafe.queue.memory import check_queue_name

__all__ = ["AsyncSQLiteBroker", "SQLiteBroker"]

_log = logging.getLogger("failsafe.queue.sqlite")

_READY = "ready"
_DELAYED = Place.DELAYED.value
_PARKED = Place.PARKED.value
_AT_LEAST_0 = _v.number(at_least=0)  # built once: receive and publish are hot paths
_ONE_OR_MORE = _v.integer(1)
_CHUNK = 500  # ids per statement in replay / purge (well under SQLite's variable limit)

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS failsafe_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        place TEXT NOT NULL,
        visible_at REAL NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 0,
        token INTEGER,
        since REAL NOT NULL,
        envelope BLOB NOT NULL
    )
    """,
    # receive: ready and delayed messages, in the order they become visible
    "CREATE INDEX IF NOT EXISTS failsafe_messages_receive "
    "ON failsafe_messages (queue, visible_at, seq) WHERE place <> 'parked'",
    # the DLQ tools: delayed and parked messages, oldest first (keyset pages on since, seq);
    # place is in it so that counting by place reads the index alone (issue #15)
    "CREATE INDEX IF NOT EXISTS failsafe_messages_dead_since "
    "ON failsafe_messages (queue, since, seq, place) WHERE place <> 'ready'",
    # replay and purge by id: without it each batch scanned every dead letter of the
    # queue, and a replay of 100k cost O(n^2) (issue #15)
    "CREATE INDEX IF NOT EXISTS failsafe_messages_dead_id "
    "ON failsafe_messages (queue, message_id) WHERE place <> 'ready'",
    # files made before issue #15 have a DLQ index without place: the one above replaces it
    "DROP INDEX IF EXISTS failsafe_messages_dead",
    "CREATE TABLE IF NOT EXISTS failsafe_queues (name TEXT PRIMARY KEY)",
)
_INSERT = (
    "INSERT INTO failsafe_messages (queue, message_id, place, visible_at, since, envelope) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# the ``place <> '...'`` terms are spelled as in the partial indexes, so that they serve
_ANY_VISIBLE = (
    "SELECT 1 FROM failsafe_messages "
    "WHERE queue = ? AND place <> 'parked' AND visible_at <= ? LIMIT 1"
)
_NEXT_VISIBLE = (
    "SELECT visible_at FROM failsafe_messages "
    "WHERE queue = ? AND place <> 'parked' AND visible_at > ? ORDER BY visible_at LIMIT 1"
)
_DEAD = "queue = ? AND place <> 'ready' AND place IN (?, ?)"
# Whether a stored envelope can have its counts reset in SQL (json_set): JSON text of the
# envelope format's version 1 with both counts integers. Anything else (a corrupted or
# hand-edited row) is decoded in Python and replaced by a stand-in, as replay always did. A
# row that passes yet is no envelope (a field of the wrong type) goes back as stored, its
# counts reset, and receive parks it as malformed, as it parks any unreadable row.
_WELL_FORMED = (
    "CASE WHEN json_valid(CAST(envelope AS TEXT)) THEN "
    "json_extract(CAST(envelope AS TEXT), '$.v') IS 1 "
    "AND json_type(CAST(envelope AS TEXT), '$.immediate_attempts') IS 'integer' "
    "AND json_type(CAST(envelope AS TEXT), '$.delayed_attempts') IS 'integer' "
    "ELSE 0 END"
)
# the last error's type, NULL when there is none or the stored envelope is not JSON
_ERROR_TYPE = (
    "json_extract(CASE WHEN json_valid(CAST(envelope AS TEXT)) THEN CAST(envelope AS TEXT) END,"
    " '$.last_error.type')"
)
# The claim is one statement (so it needs no BEGIN / COMMIT of its own): it takes the write
# lock before it reads, so two connections never reserve the same message. Each row's token
# is the batch's random base plus its rank, which gives the order back after RETURNING.
_CLAIM = """
    UPDATE failsafe_messages
    SET place = 'ready', deliveries = deliveries + 1, token = ? + pick.rank, visible_at = ?
    FROM (
        SELECT seq, row_number() OVER (ORDER BY visible_at, seq) AS rank FROM (
            SELECT seq, visible_at FROM failsafe_messages
            WHERE queue = ? AND place <> 'parked' AND visible_at <= ?
            ORDER BY visible_at, seq LIMIT ?
        )
    ) AS pick
    WHERE failsafe_messages.seq = pick.seq
    RETURNING seq, token, deliveries, message_id, envelope
"""
_PARK_MALFORMED = (
    "UPDATE failsafe_messages SET place = 'parked', deliveries = 0, token = NULL, "
    "visible_at = ?, since = ?, message_id = ?, envelope = ? WHERE seq = ? AND token = ?"
)
_HELD = "seq = ? AND token = ? AND place = 'ready'"


def _unreadable(seq: int, message_id: object, raw: object, problem: str, now: float) -> Envelope:
    """An envelope standing in for a row whose stored envelope cannot be decoded.

    Its body is the stored bytes as they are, its last error says why they are unreadable.
    """
    if isinstance(raw, bytes):
        body = raw
    elif isinstance(raw, str):
        body = raw.encode("utf-8", "replace")
    else:
        body = repr(raw).encode()
    ident = message_id if isinstance(message_id, str) and message_id else f"seq-{seq}"
    kind = MalformedMessage
    error = ErrorInfo(
        type=f"{kind.__module__}.{kind.__qualname__}",
        message=f"the stored envelope of row {seq} is unreadable: {problem}"[:4096],
        at=now,
    )
    return Envelope(body=body, id=ident, content_type="application/octet-stream", last_error=error)


def _decoded(row: Sequence[Any], now: float) -> tuple[Envelope, str | None]:
    """Decode a row's ``(seq, ..., message_id, envelope)``; name the problem if it is bad."""
    seq, message_id, raw = row[0], row[-2], row[-1]
    try:
        if not isinstance(raw, bytes | str):
            raise MalformedMessage(f"not bytes but {type(raw).__name__}")
        return decode(raw), None
    except MalformedMessage as exc:
        return _unreadable(seq, message_id, raw, str(exc), now), str(exc)


def _token(delivery: Delivery) -> tuple[int, int]:
    token = delivery.token
    if (
        not isinstance(token, tuple)
        or len(token) != 2
        or not all(isinstance(part, int) for part in token)
    ):
        raise ConfigurationError(
            "delivery", f"was not received from a SQLiteBroker (token {token!r})"
        )
    return token[0], token[1]


def _key(after: DeadLetterCursor) -> tuple[float, int]:
    """The ``(since, seq)`` a cursor of this broker holds."""
    if (
        not isinstance(after, DeadLetterCursor)
        or after.adapter != "sqlite"
        or len(after.key) != 2
        or not all(isinstance(part, int | float) for part in after.key)
    ):
        raise ConfigurationError("after", f"must be a cursor from a SQLiteBroker, got {after!r}")
    return float(after.key[0]), int(after.key[1])


def _conditions(where: DeadLetterFilter | None) -> tuple[list[str], list[Any], str]:
    """The SQL conditions for ``where``, their parameters (after the queue's), and the index.

    The index clause names the message-id index when ids are given (a few rows found by
    id, then sorted), else it is empty (the planner takes the DLQ index, in order).
    """
    where = where if where is not None else DeadLetterFilter()
    places = (_DELAYED, _PARKED) if where.place is None else (where.place.value,) * 2
    conditions = [_DEAD]
    params: list[Any] = list(places)
    indexed = ""
    if where.until is not None:
        conditions.append("since <= ?")
        params.append(float(where.until))
    named = []  # the id conditions: any of them
    if where.ids:
        named.append("message_id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(where.ids))
    for prefix in where.id_prefixes:
        # a range on the id index: text compares as UTF-8 bytes (BINARY), which is code
        # point order, so the ids from the prefix up to `_prefix_end` are those beginning
        # with it
        end = _prefix_end(prefix)
        if end is None:
            named.append("(message_id >= ? AND substr(message_id, 1, ?) = ?)")
            params.extend((prefix, len(prefix), prefix))
        else:
            named.append("(message_id >= ? AND message_id < ?)")
            params.extend((prefix, end))
    if named:
        # one condition is a search of the id index; several (rare) a scan of the queue's
        # entries in it, a row at a time
        conditions.append(named[0] if len(named) == 1 else "(" + " OR ".join(named) + ")")
        indexed = "INDEXED BY failsafe_messages_dead_id"
    if where.error_types:
        terms = []
        for wanted in where.error_types:
            if "." in wanted:  # a full name: that name only
                terms.append(f"{_ERROR_TYPE} = ?")
                params.append(wanted)
            else:  # a full name without a dot, or the last dotted part of one
                terms.append(f"substr('.' || {_ERROR_TYPE}, ?) = ?")
                params.extend((-(len(wanted) + 1), "." + wanted))
        conditions.append("(" + " OR ".join(terms) + ")")
    return conditions, params, indexed


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that begins with ``prefix`` (``None``: none is)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates are no characters: step over them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


class SQLiteBroker:
    """A broker in one SQLite file: durable, safe for several threads and processes.

    Args:
        path: The database file (created with its tables, and its folder, if missing).
            ``":memory:"`` gives a private broker that dies with it (tests only).
        clock: Wall-clock time for delays, leases and ``since`` (``clock.time()``); a
            ``FakeClock`` in tests. Waiting in ``receive(wait=...)`` is always real.
        lease: Seconds a received message stays reserved for its consumer. A consumer
            that dies holding it only delays it: after the lease it is delivered again,
            its delivery counted. Settle well within it.
        poll_interval: Seconds between looks at the file while ``receive`` waits (a
            delayed message due sooner is looked for at its due time).
        synchronous: ``"NORMAL"`` (default): a committed message survives ``kill -9`` of
            any process; the last commits may be lost if the machine itself goes down.
            ``"FULL"`` syncs the disk on every commit, so they survive an OS crash or a
            power loss too, at the price of one ``fsync`` per commit.
        busy_timeout: Seconds to wait for another process's write lock before failing
            with `BrokerUnavailable`.

    Thread-safe: one connection, used under a lock only for the statement itself (a
    connection per thread measured no faster, and its threads would wait for each other
    in SQLite's sleeping busy handler). `close()` closes the file; messages it had handed
    out and not settled simply come back after their lease, like those of a consumer
    that died.

    Errors: a locked or unreadable file raises `BrokerUnavailable`, other SQLite errors
    `BrokerError`. A stored envelope that cannot be decoded (a corrupted or hand-edited
    file) does not stop ``receive``: its message is moved to the parking queue, with the
    stored bytes as its body and a ``last_error`` saying why, for a person to purge.

    Example:
        ```python
        from failsafe.queue import Envelope, SQLiteBroker

        broker = SQLiteBroker(".failsafe/queue.db")
        broker.publish("orders", Envelope(body=b'{"orderId": "o-1"}'))
        for delivery in broker.receive("orders", limit=10, wait=1.0):
            ...  # handle it, then:
            broker.ack(delivery)
        ```
    """

    #: The ``messaging.system`` of its spans.
    messaging_system: ClassVar[str] = "failsafe.sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease: float = 300.0,
        poll_interval: float = 0.02,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 10.0,
    ) -> None:
        if not isinstance(path, str | Path) or not str(path):
            raise ConfigurationError("path", f"must be a file path, got {path!r}")
        if not isinstance(clock, Clock):
            raise ConfigurationError("clock", f"must be a failsafe Clock, got {clock!r}")
        _v.check("lease", lease, _v.number(above=0))
        _v.check("poll_interval", poll_interval, _v.number(above=0))
        _v.check("busy_timeout", busy_timeout, _v.number(at_least=0))
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigurationError(
                "synchronous", f"must be 'NORMAL' or 'FULL', got {synchronous!r}"
            )
        self.path = str(path)
        self.clock = clock
        self.lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._known: set[str] = set()  # queues this instance has recorded
        self._db: sqlite3.Connection | None = None
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise BrokerUnavailable(f"cannot open the queue file {self.path!r}: {exc}") from exc
        try:
            with self._connection() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={synchronous}")
            with self._transaction() as db:
                for statement in _SCHEMA:
                    db.execute(statement)
        except BaseException:
            self.close()
            raise

    # -- connection ----------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            if db is None:
                raise BrokerError(f"{self!r} is closed")
            try:
                yield db
            except sqlite3.OperationalError as exc:  # locked, I/O error, read-only, ...
                raise BrokerUnavailable(f"{self!r}: {exc}") from exc
            except sqlite3.Error as exc:  # not a database, corrupt, ...
                raise BrokerError(f"{self!r}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _require(self, db: sqlite3.Connection, queue: str) -> None:
        """Raise `NoSuchQueue` unless ``queue`` was declared or published to in this file.

        A file may hold messages of a queue it has no record of (written before queues
        were recorded): those count too.
        """
        if queue in self._known:
            return
        found = db.execute(
            "SELECT 1 FROM failsafe_queues WHERE name = ? UNION ALL "
            "SELECT 1 FROM (SELECT 1 FROM failsafe_messages "
            "WHERE queue = ? AND place <> 'parked' LIMIT 1) UNION ALL "
            "SELECT 1 FROM (SELECT 1 FROM failsafe_messages "
            "WHERE queue = ? AND place <> 'ready' LIMIT 1) LIMIT 1",
            (queue, queue, queue),
        ).fetchone()
        if found is None:
            raise NoSuchQueue(queue, self.path)

    def _record_queue(self, db: sqlite3.Connection, queue: str) -> None:
        if queue not in self._known:
            db.execute("INSERT OR IGNORE INTO failsafe_queues (name) VALUES (?)", (queue,))
            self._known.add(queue)

    # -- publishing ----------------------------------------------------------------------
    def declare(self, queue: str) -> None:
        """Create ``queue`` (a no-op when it exists: every queue lives in the one table).

        Raises:
            ConfigurationError: If the name is not a non-empty printable string.
        """
        check_queue_name(queue)
        with self._connection() as db:
            db.execute("INSERT OR IGNORE INTO failsafe_queues (name) VALUES (?)", (queue,))
            self._known.add(queue)

    def publish(self, queue: str, message: Envelope, *, delay: float = 0.0) -> None:
        """Enqueue ``message``; when this returns it is committed to the file.

        ``delay`` > 0 puts it in the DLQ, due in the work queue after that many seconds.
        """
        self.publish_many(queue, (message,), delay=delay)

    def publish_many(self, queue: str, messages: Iterable[Envelope], *, delay: float = 0.0) -> int:
        """Enqueue several messages in one transaction (all or none); return how many.

        They are received in the order given. Much faster than one ``publish`` each. With
        tracing installed, the batch is published in one producer span, whose
        ``traceparent`` each message carries (unless it has one already).

        Raises:
            ConfigurationError: If ``queue`` or ``delay`` is bad, or an item is not an
                `Envelope` (then nothing is enqueued).
        """
        check_queue_name(queue)
        _v.check("delay", delay, _AT_LEAST_0)
        tracing = _tracing.installed()
        if tracing is None:
            return self._insert(queue, messages, delay)
        batch = list(messages)
        for message in batch:
            if not isinstance(message, Envelope):
                raise ConfigurationError("message", f"must be an Envelope, got {message!r}")
        if not batch:
            return 0
        with _trace.publishing(tracing, self.messaging_system, queue, batch) as traced:
            return self._insert(queue, traced, delay)

    def _insert(self, queue: str, messages: Iterable[Envelope], delay: float) -> int:
        now = self.clock.time()
        place = _DELAYED if delay > 0 else _READY
        visible_at = now + delay
        rows = []
        for message in messages:
            if not isinstance(message, Envelope):
                raise ConfigurationError("message", f"must be an Envelope, got {message!r}")
            rows.append((queue, message.id, place, visible_at, now, encode(message)))
        if not rows:
            return 0
        if len(rows) == 1 and queue in self._known:
            with self._connection() as db:
                db.execute(_INSERT, rows[0])  # one statement is one transaction
        else:
            with self._transaction() as db:
                self._record_queue(db, queue)
                db.executemany(_INSERT, rows)
        return len(rows)

    # -- receiving -----------------------------------------------------------------------
    def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        """Reserve up to ``limit`` ready messages for ``lease`` seconds, in order.

        The order is that in which they became visible (published, released, due, or
        their lease ran out), then publish order.

        If none is ready, looks again every ``poll_interval`` (or at the next due time,
        if sooner) for up to ``wait`` real seconds; returns ``[]`` if none came. Delayed
        messages whose time has come are ready; so are messages whose lease ran out.
        """
        check_queue_name(queue)
        _v.check("limit", limit, _ONE_OR_MORE)
        _v.check("wait", wait, _AT_LEAST_0)
        taken = self._claim(queue, limit)
        if taken or wait <= 0:
            return taken
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            now = self.clock.time()
            next_at = self._next_visible(queue, now)
            pause = min(self.poll_interval, remaining)
            if next_at is not None:
                pause = min(pause, max(next_at - now, 0.001))
            time.sleep(pause)
            if self._any_visible(queue):
                taken = self._claim(queue, limit)
                if taken:
                    return taken

    def _claim(self, queue: str, limit: int) -> list[Delivery]:
        base = secrets.randbits(62)
        with self._connection() as db:
            now = self.clock.time()
            rows = db.execute(_CLAIM, (base, now + self.lease, queue, now, limit)).fetchall()
        if not rows:
            return []
        rows.sort(key=lambda row: row[1])  # by token: the order they became visible
        out = []
        for row in rows:
            seq, token, deliveries = row[0], row[1], row[2]
            message, problem = _decoded(row, now)
            if problem is None:
                out.append(
                    Delivery(
                        queue=queue, message=message, deliveries=deliveries, token=(seq, token)
                    )
                )
            else:
                self._park_malformed(queue, seq, token, message, problem, now)
        return out

    def _park_malformed(
        self, queue: str, seq: int, token: int, message: Envelope, problem: str, now: float
    ) -> None:
        """Park a claimed row whose envelope is unreadable, as `_unreadable` describes it."""
        with self._connection() as db:
            db.execute(_PARK_MALFORMED, (now, now, message.id, encode(message), seq, token))
        _log.error(
            "queue %r: parked row %d of %s, its stored envelope is unreadable: %s",
            queue,
            seq,
            self.path,
            problem,
        )

    def _any_visible(self, queue: str) -> bool:
        now = self.clock.time()
        with self._connection() as db:
            return db.execute(_ANY_VISIBLE, (queue, now)).fetchone() is not None

    def _next_visible(self, queue: str, now: float) -> float | None:
        with self._connection() as db:
            row = db.execute(_NEXT_VISIBLE, (queue, now)).fetchone()
        return None if row is None else float(row[0])

    # -- settling ------------------------------------------------------------------------
    def _settle(self, delivery: Delivery, sql: str, params: tuple[Any, ...]) -> None:
        seq, token = _token(delivery)
        with self._connection() as db:
            changed = db.execute(sql, (*params, seq, token)).rowcount
        if changed != 1:
            raise SettleConflict(
                f"message {delivery.message.id} on {delivery.queue!r} is no longer reserved "
                "for this delivery (already settled, or its lease ran out and it was "
                "handed out again)"
            )

    def ack(self, delivery: Delivery) -> None:
        """Remove the delivered message.

        Raises:
            SettleConflict: If the broker no longer holds it for this delivery.
        """
        self._settle(delivery, f"DELETE FROM failsafe_messages WHERE {_HELD}", ())

    def release(self, delivery: Delivery) -> None:
        """Make the delivered message ready again at once, its delivery not counted.

        Raises:
            SettleConflict: If the broker no longer holds it for this delivery.
        """
        self._settle(
            delivery,
            "UPDATE failsafe_messages SET token = NULL, deliveries = MAX(deliveries - 1, 0), "
            f"visible_at = ? WHERE {_HELD}",
            (self.clock.time(),),
        )

    def defer(self, delivery: Delivery, message: Envelope, delay: float) -> None:
        """Move the delivered message, as ``message``, to the DLQ for ``delay`` seconds.

        One statement: the delivery is settled and ``message`` stored together, or not at
        all.

        Raises:
            SettleConflict: If the broker no longer holds it for this delivery.
            ConfigurationError: If ``message`` has another id, or ``delay`` is bad.
        """
        _v.check("delay", delay, _AT_LEAST_0)
        now = self.clock.time()
        self._move(delivery, message, _DELAYED, now, now + delay)

    def park(self, delivery: Delivery, message: Envelope) -> None:
        """Move the delivered message, as ``message``, to the parking queue (one statement).

        Raises:
            SettleConflict: If the broker no longer holds it for this delivery.
            ConfigurationError: If ``message`` has another id.
        """
        now = self.clock.time()
        self._move(delivery, message, _PARKED, now, now)

    def _move(
        self, delivery: Delivery, message: Envelope, place: str, now: float, visible_at: float
    ) -> None:
        if not isinstance(message, Envelope) or message.id != delivery.message.id:
            raise ConfigurationError(
                "message", f"must keep the delivered message's id {delivery.message.id!r}"
            )
        self._settle(
            delivery,
            "UPDATE failsafe_messages SET place = ?, visible_at = ?, since = ?, "
            f"deliveries = 0, token = NULL, envelope = ? WHERE {_HELD}",
            (place, visible_at, now, encode(message)),
        )

    # -- the DLQ -------------------------------------------------------------------------
    def dead_letters(
        self, queue: str, *, place: Place | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        """List delayed and parked messages of ``queue``, oldest first (by ``since``).

        A row whose stored envelope is unreadable is listed with a stand-in envelope: the
        stored bytes as body and a ``last_error`` saying why.
        """
        where = DeadLetterFilter(place=place)
        return list(self.dead_letter_page(queue, where=where, limit=limit).letters)

    def dead_letter_page(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """One page of ``queue``'s dead letters matching ``where``, oldest first.

        One indexed query: keyset on ``(since, seq)`` from ``after``, the filters in SQL,
        ``LIMIT limit``; only the rows returned are decoded. With ``where.ids`` or
        ``where.id_prefixes`` the rows are found through the message-id index (a prefix is
        a range of it). A row whose stored envelope is unreadable
        is listed with a stand-in envelope (the stored bytes as body, a ``last_error``
        saying why); it matches an error-type filter only as ``MalformedMessage`` when the
        row is not JSON at all.

        Raises:
            ConfigurationError: For ``limit`` < 1 or a cursor of another broker.
            NoSuchQueue: If the file has no queue ``queue``.
        """
        _v.check("limit", limit, _ONE_OR_MORE)
        conditions, params, indexed = _conditions(where)
        if after is not None:
            conditions.append("(since, seq) > (?, ?)")
            params.extend(_key(after))
        with self._connection() as db:
            self._require(db, queue)
            rows = db.execute(
                "SELECT seq, place, since, visible_at, message_id, envelope "
                f"FROM failsafe_messages {indexed} WHERE {' AND '.join(conditions)} "
                "ORDER BY since, seq LIMIT ?",
                (queue, *params, limit),
            ).fetchall()
        now = self.clock.time()
        letters = tuple(
            DeadLetter(
                queue=queue,
                message=_decoded(row, now)[0],
                place=Place(row[1]),
                since=row[2],
                due_at=row[3] if row[1] == _DELAYED else None,
            )
            for row in rows
        )
        cursor = None
        if len(rows) == limit:
            cursor = DeadLetterCursor("sqlite", (rows[-1][2], rows[-1][0]))
        return DeadLetterPage(letters=letters, cursor=cursor)

    def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        """Count ``queue``'s dead letters matching ``where``, by place, up to ``at_most``.

        Without an error-type filter it reads the DLQ index only (no row, no body); with
        one it reads each candidate row. Either way it stops after ``at_most`` matches.
        """
        _v.check("at_most", at_most, _ONE_OR_MORE)
        conditions, params, indexed = _conditions(where)
        with self._connection() as db:
            self._require(db, queue)
            rows = db.execute(
                "SELECT place, COUNT(*) FROM (SELECT place FROM failsafe_messages "
                f"{indexed} WHERE {' AND '.join(conditions)} LIMIT ?) GROUP BY place",
                (queue, *params, at_most + 1),
            ).fetchall()
        counts = {place: int(n) for place, n in rows}
        delayed, parked = counts.get(_DELAYED, 0), counts.get(_PARKED, 0)
        if delayed + parked <= at_most:
            return DeadLetterCount(delayed=delayed, parked=parked)
        if parked:  # one row past the bound was read to know there are more
            parked -= 1
        else:
            delayed -= 1
        return DeadLetterCount(delayed=delayed, parked=parked, exact=False)

    def replay(self, queue: str, ids: Sequence[str]) -> int:
        """Move the listed dead letters back to the work queue now, with fresh counts.

        Their attempt counts go to 0; ``last_error`` and ``first_seen`` are kept. Returns
        how many were moved (ids not found are ignored). One transaction; each id is found
        through the message-id index.
        """
        moved = 0
        with self._transaction() as db:
            self._require(db, queue)
            now = self.clock.time()
            for chunk in _chunks(ids):
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT seq, {_WELL_FORMED} FROM failsafe_messages "
                    f"WHERE {_DEAD} AND message_id IN ({marks})",
                    (queue, _DELAYED, _PARKED, *chunk),
                ).fetchall()
                moved += self._to_work_queue(db, rows, now)
        return moved

    def replay_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Replay the next ``limit`` dead letters matching ``where``, in one transaction.

        The rows are chosen as `dead_letter_page` chooses them and moved by one
        ``UPDATE``: the counts are reset inside SQLite (``json_set``), so no envelope is
        decoded in Python (a stored envelope that is not a failsafe envelope is replaced
        by a stand-in, as `replay` does).
        """
        with self._transaction() as db:
            now = self.clock.time()
            rows, cursor = self._choose(db, queue, where, after, limit, f", {_WELL_FORMED}")
            self._to_work_queue(db, [(row[0], row[3]) for row in rows], now)
        return DeadLetterBatch(ids=tuple(row[2] for row in rows), cursor=cursor)

    def purge_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Delete the next ``limit`` dead letters matching ``where``, in one transaction."""
        with self._transaction() as db:
            rows, cursor = self._choose(db, queue, where, after, limit, "")
            db.execute(
                "DELETE FROM failsafe_messages WHERE seq IN (SELECT value FROM json_each(?))",
                (json.dumps([row[0] for row in rows]),),
            )
        return DeadLetterBatch(ids=tuple(row[2] for row in rows), cursor=cursor)

    def _choose(
        self,
        db: sqlite3.Connection,
        queue: str,
        where: DeadLetterFilter | None,
        after: DeadLetterCursor | None,
        limit: int,
        extra: str,
    ) -> tuple[list[Any], DeadLetterCursor | None]:
        """``(seq, since, message_id, *extra)`` of the next ``limit`` matching rows."""
        _v.check("limit", limit, _ONE_OR_MORE)
        self._require(db, queue)
        conditions, params, indexed = _conditions(where)
        if after is not None:
            conditions.append("(since, seq) > (?, ?)")
            params.extend(_key(after))
        rows = db.execute(
            f"SELECT seq, since, message_id{extra} FROM failsafe_messages {indexed} "
            f"WHERE {' AND '.join(conditions)} ORDER BY since, seq LIMIT ?",
            (queue, *params, limit),
        ).fetchall()
        cursor = None
        if len(rows) == limit:
            cursor = DeadLetterCursor("sqlite", (rows[-1][1], rows[-1][0]))
        return rows, cursor

    def _to_work_queue(
        self, db: sqlite3.Connection, rows: Sequence[Sequence[Any]], now: float
    ) -> int:
        """Move rows ``(seq, well_formed)`` to the work queue with fresh counts; count them.

        A well-formed envelope has its counts set to 0 by ``json_set`` in SQLite (no
        decoding in Python: what made a replay of 100k cost 24 s, issue #15); any other is
        decoded here and replaced by the stand-in `_unreadable` describes, counts at 0.
        """
        good = [row[0] for row in rows if row[1]]
        db.execute(
            "UPDATE failsafe_messages SET place = 'ready', envelope = json_set("
            "CAST(envelope AS TEXT), '$.immediate_attempts', 0, '$.delayed_attempts', 0), "
            "visible_at = ?, since = ?, deliveries = 0, token = NULL "
            "WHERE seq IN (SELECT value FROM json_each(?))",
            (now, now, json.dumps(good)),
        )
        bad = [row[0] for row in rows if not row[1]]
        if bad:
            updates = []
            for row in db.execute(
                "SELECT seq, message_id, envelope FROM failsafe_messages "
                "WHERE seq IN (SELECT value FROM json_each(?))",
                (json.dumps(bad),),
            ):
                message, _ = _decoded(row, now)
                fresh = attrs.evolve(message, immediate_attempts=0, delayed_attempts=0)
                updates.append((encode(fresh), now, now, row[0]))
            db.executemany(
                "UPDATE failsafe_messages SET place = 'ready', envelope = ?, visible_at = ?, "
                "since = ?, deliveries = 0, token = NULL WHERE seq = ?",
                updates,
            )
        return len(rows)

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        """Delete the listed dead letters for good; return how many were deleted."""
        deleted = 0
        with self._transaction() as db:
            self._require(db, queue)
            for chunk in _chunks(ids):
                marks = ", ".join("?" * len(chunk))
                deleted += db.execute(
                    f"DELETE FROM failsafe_messages WHERE {_DEAD} AND message_id IN ({marks})",
                    (queue, _DELAYED, _PARKED, *chunk),
                ).rowcount
        return deleted

    def delivery_limit(self, queue: str) -> int | None:
        """``None``: this broker never caps deliveries (the redelivery policy does)."""
        return None

    # -- the rest ------------------------------------------------------------------------
    def queues(self) -> list[str]:
        """The names of the queues declared or published to in this file, sorted."""
        with self._connection() as db:
            return [row[0] for row in db.execute("SELECT name FROM failsafe_queues ORDER BY name")]

    def close(self) -> None:
        """Close the file (idempotent); later calls raise `BrokerError`.

        Deliveries handed out and not settled are not given back at once: like those of a
        consumer that died, they are received again once their lease runs out.
        """
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._db is None

    def __repr__(self) -> str:
        return f"SQLiteBroker({self.path!r})"


class AsyncSQLiteBroker(AsyncView):
    """The `AsyncBroker` over a `SQLiteBroker`: each call runs in a worker thread.

    Takes the same arguments as `SQLiteBroker` (opening the file blocks briefly). A
    ``receive`` that waits holds its worker thread while it polls the file.

    Attributes:
        sqlite: The blocking broker underneath.

    Example:
        ```python
        from failsafe.queue import AsyncSQLiteBroker

        broker = AsyncSQLiteBroker(".failsafe/queue.db")
        deliveries = await broker.receive("orders", limit=10, wait=1.0)
        ```
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease: float = 300.0,
        poll_interval: float = 0.02,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 10.0,
    ) -> None:
        self.sqlite = SQLiteBroker(
            path,
            clock=clock,
            lease=lease,
            poll_interval=poll_interval,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
        )
        super().__init__(self.sqlite)

    async def publish_many(
        self, queue: str, messages: Iterable[Envelope], *, delay: float = 0.0
    ) -> int:
        """See `SQLiteBroker.publish_many`."""
        return await self._run(self.sqlite.publish_many, queue, list(messages), delay=delay)

    def __repr__(self) -> str:
        return f"AsyncSQLiteBroker({self.sqlite.path!r})"
