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

Several threads and several processes may share one file: a claim is one
``UPDATE ... RETURNING`` statement, which takes the file's write lock before it reads, so two
consumers never reserve the same message; every settling call (``defer`` and ``park``
included) is one statement too, so it is atomic; the rest are ``BEGIN IMMEDIATE``
transactions. Each call commits once: publish, receive and ack are one commit each.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import attrs

from failsafe import _validators as _v
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError
from failsafe.queue.bridge import AsyncView
from failsafe.queue.broker import (
    BrokerError,
    BrokerUnavailable,
    DeadLetter,
    Delivery,
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
    # the DLQ tools: delayed and parked messages, oldest first
    "CREATE INDEX IF NOT EXISTS failsafe_messages_dead "
    "ON failsafe_messages (queue, since, seq) WHERE place <> 'ready'",
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

        They are received in the order given. Much faster than one ``publish`` each.

        Raises:
            ConfigurationError: If ``queue`` or ``delay`` is bad, or an item is not an
                `Envelope` (then nothing is enqueued).
        """
        check_queue_name(queue)
        _v.check("delay", delay, _AT_LEAST_0)
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
        _v.check("limit", limit, _ONE_OR_MORE)
        if place is None:
            places = (_DELAYED, _PARKED)
        else:
            try:
                places = (Place(place).value,) * 2
            except ValueError:
                raise ConfigurationError(
                    "place", f"must be Place.DELAYED, Place.PARKED or None, got {place!r}"
                ) from None
        with self._connection() as db:
            rows = db.execute(
                "SELECT seq, place, since, visible_at, message_id, envelope "
                f"FROM failsafe_messages WHERE {_DEAD} ORDER BY since, seq LIMIT ?",
                (queue, *places, limit),
            ).fetchall()
        now = self.clock.time()
        return [
            DeadLetter(
                queue=queue,
                message=_decoded(row, now)[0],
                place=Place(row[1]),
                since=row[2],
                due_at=row[3] if row[1] == _DELAYED else None,
            )
            for row in rows
        ]

    def replay(self, queue: str, ids: Sequence[str]) -> int:
        """Move the listed dead letters back to the work queue now, with fresh counts.

        Their attempt counts go to 0; ``last_error`` and ``first_seen`` are kept. Returns
        how many were moved (ids not found are ignored). One transaction.
        """
        moved = 0
        with self._transaction() as db:
            now = self.clock.time()
            for chunk in _chunks(ids):
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT seq, message_id, envelope FROM failsafe_messages "
                    f"WHERE {_DEAD} AND message_id IN ({marks})",
                    (queue, _DELAYED, _PARKED, *chunk),
                ).fetchall()
                updates = []
                for row in rows:
                    message, _ = _decoded(row, now)
                    fresh = attrs.evolve(message, immediate_attempts=0, delayed_attempts=0)
                    updates.append((encode(fresh), now, now, row[0]))
                db.executemany(
                    "UPDATE failsafe_messages SET place = 'ready', envelope = ?, visible_at = ?, "
                    "since = ?, deliveries = 0, token = NULL WHERE seq = ?",
                    updates,
                )
                moved += len(updates)
        return moved

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        """Delete the listed dead letters for good; return how many were deleted."""
        deleted = 0
        with self._transaction() as db:
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
