"""The service's intake: reports arriving at once are stored together, by one writer thread.

Each ``POST /v1/reports`` hands its report to the intake and waits. The writer thread takes
every report waiting (at most `GROUP_MAX`), stores them with one call of the desk (one
transaction in the stores of this package) and answers all their requests with one call into
the event loop. A request is answered only once its report is committed, so a ``201`` still
means stored; a process killed before that answered nothing, and the client sends again.

Why a thread of its own rather than a worker thread per request: the store's work runs in
C with the interpreter lock released, beside the event loop that reads, checks and answers
the next requests; and one hand-over per group costs less than one per report.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Final

from failsafe.errors._sqlstore import GROUP_MAX
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import ErrorRecord, Report
from failsafe.errors.store import StoreUnavailable
from failsafe.exceptions import ConfigurationError

logger = logging.getLogger("failsafe.errors")

MAX_WAITING: Final = 4096
"""The most reports waiting to be stored; one more is refused with ``503`` + ``Retry-After``."""

Outcome = tuple[ErrorRecord, bool] | BaseException
_Future = asyncio.Future[tuple[ErrorRecord, bool]]
_Item = tuple[Report, str, "str | None", _Future]


IDLE_SECONDS: Final = 5.0
"""A writer thread ends after this long with nothing to store (the next report starts one)."""


class Intake:
    """Stores reports from many requests in groups (see the module's description).

    Args:
        desk: Redacts, schedules and stores (`ErrorDesk.report_each`).
        writers: Groups stored at once, each by a thread of its own: the store's
            ``writers`` (1 for a SQLite file, whose writes take turns; more for a server,
            which works on one group while the next one travels).
        max_waiting: The bound on reports waiting (`MAX_WAITING`).

    Raises:
        ConfigurationError: If ``writers`` (the store's) is not a positive integer.
    """

    def __init__(
        self, desk: ErrorDesk, *, writers: int | None = None, max_waiting: int = MAX_WAITING
    ) -> None:
        self._desk = desk
        if writers is None:
            writers = getattr(desk.store, "writers", 1)  # an optional part of a store
        if not isinstance(writers, int) or isinstance(writers, bool) or writers < 1:
            raise ConfigurationError(
                "writers", f"the store's writers must be a positive integer, got {writers!r}"
            )
        self._writers = writers
        self._max_waiting = max_waiting
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._waiting = 0  # changed in the event loop only
        self._running = 0
        self._lock = threading.Lock()  # a put and a writer's decision to end are one step

    async def report(
        self, report: Report, *, actor: str, report_id: str | None
    ) -> tuple[ErrorRecord, bool]:
        """Store ``report`` with the others waiting; return its record and whether it is new.

        Raises:
            StoreUnavailable: The store cannot be reached, or `MAX_WAITING` reports wait
                already (nothing of this one was written).
        """
        if self._waiting >= self._max_waiting:
            raise StoreUnavailable(
                f"{self._waiting} reports are waiting to be stored (the most is"
                f" {self._max_waiting})",
                retry_after=1.0,
            )
        loop = asyncio.get_running_loop()
        future: _Future = loop.create_future()
        self._waiting += 1
        try:
            with self._lock:
                self._queue.put((report, actor, report_id, future))
                if self._running < self._writers:
                    self._running += 1
                    threading.Thread(
                        target=self._write, name="failsafe-errors-intake", daemon=True
                    ).start()
            return await future
        finally:
            self._waiting -= 1

    def _write(self) -> None:
        """A writer thread: take what waits, store it, answer; end when idle."""
        while True:
            try:
                group = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running -= 1
                        return
                continue
            while len(group) < GROUP_MAX:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                outcomes = self._desk.report_each([(r, actor, rid) for r, actor, rid, _ in group])
            except Exception as exc:  # not one report's: every one of them failed with it
                outcomes = [exc] * len(group)
            # one call into each event loop that waits (an app may serve from more than one)
            answers: dict[asyncio.AbstractEventLoop, list[tuple[_Future, Outcome]]] = {}
            for item, outcome in zip(group, outcomes, strict=True):
                answers.setdefault(item[3].get_loop(), []).append((item[3], outcome))
            for loop, settled in answers.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:  # the loop closed: nobody waits for these answers
                    logger.warning(
                        "intake: %d reports stored after their event loop closed", len(settled)
                    )


def _settle(answers: Sequence[tuple[_Future, Outcome]]) -> None:
    for future, outcome in answers:
        if future.done():  # its request went away (the client hung up): stored all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
