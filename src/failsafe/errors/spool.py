"""`Spool`: reports waiting for the Error-handling service, in a local SQLite file.

[`ErrorSink.report`][failsafe.errors.client.ErrorSink.report] writes a report here when it
cannot deliver it at once; the sink's deliverer sends the spooled reports later, oldest
first, and deletes each one only after the service acknowledged it.

Durability: the file is in WAL mode. Once [`put`][failsafe.errors.spool.Spool.put] returns,
the report is committed: it survives the process being killed (``kill -9``) at once. With
the default ``synchronous="NORMAL"`` the last commits can still be lost if the machine itself
crashes before the operating system writes them out; ``synchronous="FULL"`` closes that gap
with one ``fsync`` per report (0.5-10 ms here, which is why it is not the default: the
target for ``report()`` while the service is down is a p99 of 5 ms).

Several threads and several processes may share one spool file: every write is one
``BEGIN IMMEDIATE`` transaction, and a deliverer *claims* the reports it is about to send
(``due(..., lease=s)`` hides them from other deliverers for ``s`` seconds), so two processes
rarely send the same report. When they do (a deliverer killed mid-delivery, a lease that ran
out), the report id is the ``Idempotency-Key`` and the service counts it once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, Final, Literal, ParamSpec, TypeVar

import attrs

from failsafe.exceptions import ConfigurationError

__all__ = ["RECOVERIES_KEPT", "SpooledReport", "Spool"]

_log = logging.getLogger("failsafe.errors.spool")
T = TypeVar("T")
P = ParamSpec("P")
RECOVERIES_KEPT: Final = 16
"""How many recoveries `Spool.recovered` remembers (the oldest are forgotten)."""
_SALVAGE_FAILURES: Final = 48  # unreadable reads in a row before salvage gives up


def _corrupt(exc: BaseException) -> bool:
    """Whether an SQLite error says the file is damaged (not locked, not missing)."""
    if type(exc) is not sqlite3.DatabaseError:  # OperationalError and the rest: not damage
        return False
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc).lower()
    return (
        name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or "malformed" in text
        or "not a database" in text
        or "quick_check" in text
    )


def _heal(method: Callable[Concatenate[Spool, P], T]) -> Callable[Concatenate[Spool, P], T]:
    """A spool method that recovers from a corrupt file (see `Spool._healing`) and retries."""

    def healed(self: Spool, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._healing(lambda: method(self, *args, **kwargs))

    functools.update_wrapper(healed, method)
    return healed


def _create_private(path: str) -> None:
    """Create ``path`` readable by its owner only (0600), unless it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _salvage(path: str) -> Iterator[tuple[Any, ...]]:
    """The spooled reports that can still be read from a damaged file, oldest first.

    Reads a copy (0600, streamed, not held in memory) whose header no longer states the
    file's size (so that SQLite takes the size of what is left: a truncated file is
    otherwise refused whole), in rowid order. At a row it cannot read (a damaged or missing
    page) it skips ahead, twice as far at each failure in a row, and gives up after
    `_SALVAGE_FAILURES` failures in a row. The copy is removed when the rows are consumed.
    """
    copy = f"{path}.salvage"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(copy)  # a leftover of an earlier salvage that died
        _create_private(copy)
        with open(path, "rb") as source, open(copy, "r+b") as target:
            shutil.copyfileobj(source, target)
            if target.tell() >= 32:
                target.seek(28)
                target.write(b"\0\0\0\0")  # the "in-header database size": use the file's
        db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        with contextlib.suppress(OSError):
            os.remove(copy)
        return
    columns = "report_id, body, created_at, attempts, next_attempt_at, last_error, rejected"
    last, failures = 0, 0
    try:
        while failures < _SALVAGE_FAILURES:
            try:
                cursor = db.execute(
                    f"SELECT rowid, {columns} FROM failsafe_spool WHERE rowid > ? ORDER BY rowid",
                    (last,),
                )
                for row in cursor:
                    last, failures = row[0], 0
                    try:
                        json.loads(row[2])  # a body that no longer parses is not salvaged
                    except (ValueError, TypeError):
                        continue
                    yield tuple(row[1:])
                break  # read to the end
            except sqlite3.Error:
                last += 2**failures  # skip what cannot be read, further each time
                failures += 1
    finally:
        db.close()
        with contextlib.suppress(OSError):
            os.remove(copy)


_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS failsafe_spool (
        report_id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        rejected TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS failsafe_spool_due ON failsafe_spool (rejected, next_attempt_at)",
)
_COLUMNS = "rowid, report_id, body, created_at, attempts, next_attempt_at, last_error, rejected"


@attrs.frozen(kw_only=True)
class SpooledReport:
    """One report in the spool.

    Attributes:
        report_id: The client's id of the report (its ``Idempotency-Key``).
        body: The report's JSON object, as ``POST /v1/reports`` takes it.
        created_at: When it was spooled (wall-clock seconds since the epoch).
        attempts: Failed delivery attempts made from the spool so far.
        next_attempt_at: When a deliverer may try it next.
        last_error: What the last failed attempt said.
        rejected: Why the service refused it for good (then it is never sent again).
    """

    report_id: str
    body: dict[str, Any]
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None = None
    rejected: str | None = None


def _row(row: tuple[Any, ...]) -> SpooledReport:
    return SpooledReport(
        report_id=row[1],
        body=json.loads(row[2]),
        created_at=row[3],
        attempts=row[4],
        next_attempt_at=row[5],
        last_error=row[6],
        rejected=row[7],
    )


class Spool:
    """Reports waiting for delivery, in one SQLite file that survives ``kill -9``.

    Args:
        path: The spool file; its folder is created if missing. ``":memory:"`` gives a
            private spool that dies with the process (tests only).
        busy_timeout: Seconds to wait for another process's write lock.
        synchronous: ``"NORMAL"`` (default): a spooled report survives ``kill -9`` of the
            process; the last reports may be lost if the machine itself goes down.
            ``"FULL"`` syncs the disk on every write, so a report also survives an OS crash
            or a power loss, at the price of one ``fsync`` per report (0.5-10 ms).

    Thread-safe (one connection, used under a lock) and safe for several processes.

    Example:
        ```python
        spool = Spool(".failsafe/errors-spool.db")
        spool.put("4f1c...", {"kind": "stock.decrement", ...}, now=time.time())
        for item in spool.due(time.time(), 10):
            ...  # send it, then spool.done(item.report_id)
        ```
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 10.0,
        synchronous: Literal["FULL", "NORMAL"] = "NORMAL",
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigurationError("synchronous", f"must be FULL or NORMAL, got {synchronous!r}")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # only its owner may read it (0600), before SQLite writes a byte into it; the WAL
            # and shared-memory files SQLite adds take the same permissions
            _create_private(self.path)
        self._lock = threading.Lock()
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._closed = False
        self._generation = 0  # counts recoveries, so that concurrent callers recover once
        self.recovered: list[tuple[str, int]] = []
        """The last `RECOVERIES_KEPT` recoveries from a corrupt file: where the file was
        moved, and how many reports were salvaged."""
        try:
            self._db = self._connect()
            if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("PRAGMA quick_check found the file damaged")
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            with self._lock:
                self._recover(exc)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL by default, not NORMAL: in WAL mode NORMAL may lose the last commits on an
            # OS crash or a power loss, and a report whose report() returned must never be lost.
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _recover(self, error: BaseException) -> None:
        """The file is corrupt: move it aside, salvage what reads, go on with a fresh one.

        Called with the lock held (or before the spool is shared).
        """
        self._generation += 1
        old = getattr(self, "_db", None)
        if old is not None:
            with contextlib.suppress(sqlite3.Error):
                old.close()
        if self.path == ":memory:":
            self._db = self._connect()
            self.recovered.append((":memory:", 0))
            return
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path + suffix, aside + suffix)
        _create_private(self.path)
        self._db = self._connect()
        self._db.execute("BEGIN IMMEDIATE")
        salvaged = self._db.executemany(
            "INSERT OR IGNORE INTO failsafe_spool (report_id, body, created_at, attempts,"
            " next_attempt_at, last_error, rejected) VALUES (?, ?, ?, ?, ?, ?, ?)",
            _salvage(aside),
        ).rowcount
        self._db.execute("COMMIT")
        self.recovered.append((aside, salvaged))
        del self.recovered[:-RECOVERIES_KEPT]
        _log.error(
            "the error spool %s was corrupt (%s): moved it to %s, salvaged %d report(s) into"
            " a fresh spool; reporting goes on",
            self.path,
            error,
            aside,
            salvaged,
        )

    def _healing(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; if the file turns out corrupt, recover and run it once more."""
        generation = self._generation
        try:
            return operation()
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            with self._lock:
                if self._closed:
                    raise
                if self._generation == generation:  # nobody recovered meanwhile
                    self._recover(exc)
        return operation()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"spool {self.path!r} is closed")
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"spool {self.path!r} is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @_heal
    def put(self, report_id: str, body: Mapping[str, Any], *, now: float) -> bool:
        """Store a report, due at once; return ``False`` if its id was already spooled.

        When this returns, the report is on disk (committed and synced).

        Raises:
            TypeError: If ``body`` is not JSON-serialisable.
            sqlite3.Error: If the file cannot be written (disk full, read-only).
        """
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO failsafe_spool "
                "(report_id, body, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
                (report_id, text, now, now),
            )
            return cursor.rowcount == 1

    @_heal
    def due(self, now: float, limit: int, *, lease: float = 0.0) -> list[SpooledReport]:
        """The reports due at ``now``, oldest first, at most ``limit`` of them.

        Args:
            now: Wall-clock time; ``math.inf`` takes every report whatever its schedule.
            limit: The most reports to return.
            lease: If positive, claim the returned reports: no other ``due`` call returns
                them for ``lease`` seconds (unless it passes ``now=math.inf``). A
                deliverer that dies holding a claim only delays those reports.
        """
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM failsafe_spool "
                "WHERE rejected IS NULL AND next_attempt_at <= ? ORDER BY rowid LIMIT ?",
                (now, limit),
            ).fetchall()
            if lease > 0 and rows and math.isfinite(now):
                db.executemany(
                    "UPDATE failsafe_spool SET next_attempt_at = ? WHERE report_id = ?",
                    [(now + lease, row[1]) for row in rows],
                )
        return [_row(row) for row in rows]

    @_heal
    def done(self, report_id: str) -> bool:
        """Delete a delivered report; return whether it was still there."""
        with self._transaction() as db:
            return (
                db.execute("DELETE FROM failsafe_spool WHERE report_id = ?", (report_id,)).rowcount
                == 1
            )

    @_heal
    def done_many(self, report_ids: Iterable[str]) -> int:
        """Delete delivered reports in one transaction; return how many were still there."""
        with self._transaction() as db:
            return db.executemany(
                "DELETE FROM failsafe_spool WHERE report_id = ?", [(i,) for i in report_ids]
            ).rowcount

    @_heal
    def failed(self, report_id: str, next_at: float, *, error: str | None = None) -> None:
        """Count a failed delivery attempt and make the report due again at ``next_at``."""
        with self._transaction() as db:
            db.execute(
                "UPDATE failsafe_spool SET attempts = attempts + 1, next_attempt_at = ?, "
                "last_error = ? WHERE report_id = ?",
                (next_at, error, report_id),
            )

    @_heal
    def release(self, report_ids: Iterable[str], next_at: float) -> None:
        """Give back claimed reports that were not attempted, due again at ``next_at``."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE failsafe_spool SET next_attempt_at = ? WHERE report_id = ?",
                [(next_at, report_id) for report_id in report_ids],
            )

    @_heal
    def reject(self, report_id: str, reason: str) -> None:
        """Park a report the service refused for good (a 4xx): kept, never sent again.

        Parked reports stay in the file for a person to read
        ([`rejected`][failsafe.errors.spool.Spool.rejected]) instead of being dropped.
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE failsafe_spool SET attempts = attempts + 1, rejected = ?, "
                "last_error = ? WHERE report_id = ?",
                (reason, reason, report_id),
            )

    @_heal
    def rejected(self) -> list[SpooledReport]:
        """The reports the service refused for good, oldest first."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM failsafe_spool WHERE rejected IS NOT NULL ORDER BY rowid"
            ).fetchall()
        return [_row(row) for row in rows]

    @_heal
    def next_due(self) -> float | None:
        """When the earliest waiting report is due (``None`` if none is waiting)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT MIN(next_attempt_at) FROM failsafe_spool WHERE rejected IS NULL"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    @_heal
    def __len__(self) -> int:
        """How many reports wait for delivery (parked rejected ones not included)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM failsafe_spool WHERE rejected IS NULL"
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the file; later calls raise `RuntimeError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __repr__(self) -> str:
        return f"Spool({self.path!r})"
