"""`ErrorDesk`: what the Error-handling service does with records, whoever asks.

The JSON API, the review pages, the CLI and the retry worker all act through one desk, so a
report is redacted, scheduled and audited the same way whichever door it came in by.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from failsafe._validators import integer, number
from failsafe.backoff import Backoff
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.errors.record import ErrorRecord, InvalidReport, Report, Status, check_payload
from failsafe.errors.redact import Redactor
from failsafe.errors.store import ErrorStore, Page, Query, StoreError, StoreUnavailable

__all__ = [
    "RETENTION_BATCH",
    "GROUP_ACTIONS",
    "GROUP_BATCH",
    "BulkResult",
    "ErrorDesk",
    "GroupAction",
    "RetrySchedule",
    "payload_changes",
]


@attrs.frozen(kw_only=True)
class RetrySchedule:
    """How the service retries one kind of record by itself.

    Attributes:
        attempts: Automatic attempts before the record goes to a person (needs_review).
        backoff: The delay before each attempt, the first included (default: 30 s, then
            doubling, at most an hour, with full jitter).
        lease: Seconds a worker may spend on one attempt before another worker may take
            the record over (it is then assumed dead).
    """

    attempts: int = attrs.field(default=5, validator=integer(1))
    backoff: Backoff = attrs.field(
        factory=lambda: Backoff.exponential(30.0, maximum=3600.0, jitter="full")
    )
    lease: float = attrs.field(default=60.0, validator=number(above=0))


@attrs.frozen
class BulkResult:
    """The outcome of a bulk action: the records changed, and the ids refused with why."""

    changed: tuple[ErrorRecord, ...]
    refused: dict[str, str]


@attrs.frozen(kw_only=True)
class GroupAction:
    """The outcome of an action on a failure group (or what it would be, on a dry run).

    Attributes:
        action: ``retry``, ``resolve`` or ``discard``.
        fingerprint: The group.
        dry_run: Whether nothing was changed (``changed`` is then 0).
        matched: The records the action applies to when asked: for ``retry`` those in
            ``needs_review``, for ``resolve`` and ``discard`` every open record.
        changed: The records changed (fewer than ``matched`` when some moved meanwhile).
    """

    action: str
    fingerprint: str
    dry_run: bool
    matched: int
    changed: int

    def to_json(self) -> dict[str, object]:
        """The outcome as the service's API returns it."""
        return {
            "action": self.action,
            "fingerprint": self.fingerprint,
            "dry_run": self.dry_run,
            "matched": self.matched,
            "changed": self.changed,
        }


GROUP_ACTIONS: Final[dict[str, tuple[Status, tuple[Status, ...]]]] = {
    "retry": (Status.PENDING_RETRY, (Status.NEEDS_REVIEW,)),
    "resolve": (Status.RESOLVED, (Status.NEEDS_REVIEW, Status.PENDING_RETRY, Status.RETRYING)),
    "discard": (Status.DISCARDED, (Status.NEEDS_REVIEW, Status.PENDING_RETRY, Status.RETRYING)),
}
"""Each group action: the status it moves records to, and the statuses it moves them from."""

RETENTION_BATCH: Final = 500
"""Closed records deleted per transaction by retention (`ErrorDesk.delete_closed`)."""

GROUP_BATCH: Final = 500
"""Records a group action moves per transaction (a group of any size, in bounded steps)."""


_SHOWN: Final = 60  # characters of a changed value a history entry shows
_CHANGES: Final = 20  # changes a history entry lists (then "and N more")


def payload_changes(old: Any, new: Any) -> str:
    """The differences between two payloads, for a person: ``qty: 2 -> 3; sku: added "A-1"``.

    Each changed place is named by its path (``items[0].qty``); values are compact JSON, cut
    at 60 characters; at most 20 changes are listed, then how many more. Empty when the
    payloads are equal.
    """
    found: list[str] = []
    _changes(old, new, "", found)
    if len(found) > _CHANGES:
        found = [*found[:_CHANGES], f"and {len(found) - _CHANGES} more"]
    return "; ".join(found)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _changes(old: Any, new: Any, path: str, found: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            place = f"{path}.{key}" if path else str(key)
            if key not in new:
                found.append(f"{place}: removed")
            elif key not in old:
                found.append(f"{place}: added {_shown(new[key])}")
            else:
                _changes(old[key], new[key], place, found)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            _changes(a, b, f"{path}[{index}]", found)
    elif old != new or type(old) is not type(new):
        found.append(f"{path or '(payload)'}: {_shown(old)} -> {_shown(new)}")


class ErrorDesk:
    """The service's operations on records: report, list, resolve, retry, discard, schedule.

    Args:
        store: Where records live.
        clock: Wall-clock time for records and schedules (a fake one in tests).
        redactor: Removes secrets before a report is stored.
        schedules: A retry schedule per kind; others use ``default_schedule``.
        default_schedule: The schedule of kinds not listed.
        rng: Randomness for jitter.

    Thread-safe: the desk holds no state of its own beyond its configuration.
    """

    def __init__(
        self,
        store: ErrorStore,
        *,
        clock: Clock = SYSTEM_CLOCK,
        redactor: Redactor | None = None,
        schedules: Mapping[str, RetrySchedule] | None = None,
        default_schedule: RetrySchedule | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.redactor = redactor if redactor is not None else Redactor()
        self.schedules = dict(schedules or {})
        self.default_schedule = default_schedule or RetrySchedule()
        self.rng = rng if rng is not None else random.Random()

    def schedule_for(self, kind: str) -> RetrySchedule:
        """The retry schedule of a kind."""
        return self.schedules.get(kind, self.default_schedule)

    def _delay(self, kind: str, attempt: int) -> float:
        return self.schedule_for(kind).backoff.delay(attempt, 0.0, self.rng)

    # -- reports ------------------------------------------------------------------------------
    def report(
        self, report: Report, *, actor: str, report_id: str | None = None
    ) -> tuple[ErrorRecord, bool]:
        """Redact and store a report; return the record and whether it is new.

        ``report_id`` (the client's idempotency key) makes a redelivered report count once.
        """
        now = self.clock.time()
        clean = self.redactor.report(report)
        due = now + self._delay(report.kind, 1)
        return self.store.add(clean, now=now, next_attempt_at=due, actor=actor, report_id=report_id)

    def report_each(
        self, reports: Sequence[tuple[Report, str, str | None]]
    ) -> list[tuple[ErrorRecord, bool] | BaseException]:
        """Redact and store each ``(report, actor, report_id)``, as `report` would each.

        One report's failure is its own: its exception is its outcome, in its place. The
        stores of this package store them all in one transaction (``add_each``); another
        store, one at a time.
        """
        now = self.clock.time()
        given = [
            (self.redactor.report(r), now, now + self._delay(r.kind, 1), actor, report_id)
            for r, actor, report_id in reports
        ]
        add_each = getattr(self.store, "add_each", None)
        if add_each is not None:
            outcomes: list[tuple[ErrorRecord, bool] | BaseException] = add_each(given)
            return outcomes
        outcomes = []
        for clean, at, due, actor, report_id in given:
            try:
                outcomes.append(
                    self.store.add(
                        clean, now=at, next_attempt_at=due, actor=actor, report_id=report_id
                    )
                )
            except Exception as exc:  # this report's outcome; the others go on
                outcomes.append(exc)
        return outcomes

    def report_many(self, reports: Sequence[tuple[Report, str | None]]) -> list[tuple[str, bool]]:
        """Redact and store many ``(report, report_id)`` pairs in one transaction.

        All are stored or none (a failure stores nothing). Returns each one's record id and
        whether the record is new. The actor of each is its source.
        """
        now = self.clock.time()
        clean = [(self.redactor.report(r), rid) for r, rid in reports]
        return self.store.add_many(
            clean,
            now=now,
            next_attempt_at=[now + self._delay(r.kind, 1) for r, _ in reports],
            actor=[r.source for r, _ in reports],
        )

    def get(self, record_id: str) -> ErrorRecord:
        """Return one record (raises `RecordNotFound`); ``record_id`` as `lookup_id` takes it."""
        return self.store.get(self.lookup_id(record_id))

    def lookup_id(self, given: str) -> str:
        """The record id that ``given`` names.

        ``given`` may be a record's id, a report's id (what ``ErrorSink.report`` returns:
        the record it made, for `RECEIPT_SECONDS` after it was stored), or the first
        `ID_PREFIX` (8) or more characters of a record's id when they begin only one (the
        review pages show 12). With a store that does not offer ``lookup_id``, only a
        record's id.

        Raises:
            RecordNotFound: If nothing has this id; `AmbiguousId` (a `RecordNotFound`)
                for a prefix that begins more than one record's id.
        """
        lookup = getattr(self.store, "lookup_id", None)
        return given if lookup is None else str(lookup(given))

    def find(self, query: Query) -> Page:
        """Return one page of records matching ``query``."""
        return self.store.find(query)

    # -- a person's actions -----------------------------------------------------------------
    def resolve(self, record_id: str, *, actor: str, note: str | None = None) -> ErrorRecord:
        """Close a record as dealt with."""
        return self.store.move(
            self.lookup_id(record_id),
            Status.RESOLVED,
            now=self.clock.time(),
            actor=actor,
            note=self.redactor.text(note),
        )

    def discard(self, record_id: str, *, actor: str, note: str | None = None) -> ErrorRecord:
        """Close a record as not worth acting on."""
        return self.store.move(
            self.lookup_id(record_id),
            Status.DISCARDED,
            now=self.clock.time(),
            actor=actor,
            note=self.redactor.text(note),
        )

    def retry(self, record_id: str, *, actor: str, note: str | None = None) -> ErrorRecord:
        """Queue a record for an automatic attempt now."""
        now = self.clock.time()
        return self.store.move(
            self.lookup_id(record_id),
            Status.PENDING_RETRY,
            now=now,
            actor=actor,
            note=self.redactor.text(note),
            next_attempt_at=now,
        )

    def bulk(
        self, action: str, record_ids: Iterable[str], *, actor: str, note: str | None = None
    ) -> BulkResult:
        """Apply ``resolve``, ``retry`` or ``discard`` to many records, each on its own.

        A record that cannot take the action is listed in ``refused`` with the reason; the
        others change. If the store becomes unreachable midway, the records not yet changed
        are refused with the reason, untried.

        Raises:
            ValueError: If ``action`` is not one of the three.
            StoreUnavailable: If the store is unreachable before any record changed.
        """
        operations = {"resolve": self.resolve, "retry": self.retry, "discard": self.discard}
        if action not in operations:
            raise ValueError(f"action must be resolve, retry or discard, got {action!r}")
        changed: list[ErrorRecord] = []
        refused: dict[str, str] = {}
        ids = list(record_ids)
        for n, record_id in enumerate(ids):
            try:
                changed.append(operations[action](record_id, actor=actor, note=note))
            except StoreUnavailable as exc:
                if not changed:
                    raise  # nothing done: the caller hears 503 and asks again later
                # some were done: say which, and refuse the rest untried
                for rest in ids[n:]:
                    refused.setdefault(rest, str(exc))
                break
            except StoreError as exc:
                refused[record_id] = str(exc)
        return BulkResult(tuple(changed), refused)

    def group_action(
        self,
        fingerprint: str,
        action: str,
        *,
        actor: str,
        note: str | None = None,
        dry_run: bool = False,
    ) -> GroupAction:
        """Retry, resolve or discard every open record of a failure group (see `GROUP_ACTIONS`).

        Acts on the records there when asked (a record reported after it is left alone),
        `GROUP_BATCH` records per transaction, each with its own audit entry. With
        ``dry_run``, changes nothing and says how many records it would change.

        Raises:
            ValueError: If ``action`` is not one of the three.
            GroupNotFound: If no record has this fingerprint.
            StoreUnavailable: If the store cannot be reached (records already moved stay
                moved; asking again moves the rest).
        """
        if action not in GROUP_ACTIONS:
            raise ValueError(f"action must be resolve, retry or discard, got {action!r}")
        to, statuses = GROUP_ACTIONS[action]
        group = self.store.group(fingerprint)
        matched = sum(group.statuses[s.value] for s in statuses)
        if dry_run or matched == 0:
            return GroupAction(
                action=action, fingerprint=fingerprint, dry_run=dry_run, matched=matched, changed=0
            )
        now = self.clock.time()
        clean = self.redactor.text(note)
        changed = 0
        while changed < matched:
            moved = self.store.move_group(
                fingerprint,
                to,
                statuses=statuses,
                created_until=now,
                now=now,
                actor=actor,
                note=clean,
                next_attempt_at=now if to is Status.PENDING_RETRY else None,
                limit=min(GROUP_BATCH, matched - changed),
            )
            changed += len(moved)
            if not moved:
                break
        return GroupAction(
            action=action, fingerprint=fingerprint, dry_run=False, matched=matched, changed=changed
        )

    def edit_and_retry(
        self,
        record_id: str,
        payload: Any,
        *,
        actor: str,
        note: str,
        max_payload_bytes: int = 64 * 1024,
    ) -> ErrorRecord:
        """Correct a record's payload and queue it for a retry now.

        The payload is checked as a report's is and redacted as a report's is; the record's
        history gets "payload edited" with who, the ``note`` (why: required) and the
        changes (`payload_changes`). The service offers this only when started with it
        (off by default).

        An unchanged payload is saved all the same (the history says "changes: none"):
        the record is retried.

        Raises:
            InvalidReport: If the payload is invalid (``field`` names its place), or the
                note is empty (``note``).
            RecordNotFound: If no record has this id (`lookup_id` reads it).
            InvalidMove: If the record does not need review nor wait for a retry.
        """
        if not isinstance(note, str) or not note.strip():
            raise InvalidReport("note", "say why the payload is changed")
        check_payload(payload, max_payload_bytes=max_payload_bytes)
        record = self.get(record_id)
        clean = self.redactor.value(payload)
        changes = payload_changes(record.payload, clean) or "none"
        why = self.redactor.text(note.strip()) or ""
        now = self.clock.time()
        return self.store.edit_payload(
            record.id,
            clean,
            now=now,
            actor=actor,
            note=f"{why} (changes: {changes})",
            next_attempt_at=now,
        )

    def delete_closed(self, *, older_than: float, limit: int = RETENTION_BATCH) -> int:
        """Delete up to ``limit`` resolved or discarded records unchanged for ``older_than`` s.

        The oldest first, with their attempts, history and receipts, in one transaction.
        Open records are never deleted. Returns how many were deleted.
        """
        return self.store.delete_closed(before=self.clock.time() - older_than, limit=limit)

    # -- the worker's side ----------------------------------------------------------------------
    def claim_due(self, *, limit: int = 10) -> list[ErrorRecord]:
        """Take records due for an automatic attempt.

        Each is leased for the longest ``lease`` among the schedules (the store claims in
        one statement, before it knows the kinds).
        """
        lease = max(s.lease for s in (self.default_schedule, *self.schedules.values()))
        return self.store.claim_due(now=self.clock.time(), lease=lease, limit=limit)

    def attempted(self, record: ErrorRecord, *, ok: bool, detail: str) -> ErrorRecord:
        """Record an automatic attempt's outcome and schedule what follows.

        A success resolves the record; a failure schedules the next attempt with the kind's
        backoff, or, once the kind's attempts are used up, sends the record to review. The
        attempts count from the last time a person asked for a retry. The detail is redacted.
        """
        now = self.clock.time()
        made = 1 + _attempts_in_series(record)
        detail = self.redactor.text(detail) or ""
        if ok:
            to, due = Status.RESOLVED, None
        elif made >= self.schedule_for(record.kind).attempts:
            to, due = Status.NEEDS_REVIEW, None
        else:
            to, due = Status.PENDING_RETRY, now + self._delay(record.kind, made + 1)
        return self.store.record_attempt(
            record.id,
            ok=ok,
            detail=detail,
            now=now,
            to=to,
            next_attempt_at=due,
            actor="worker",
            lease=record.next_attempt_at,  # as claimed: the lease this worker holds
        )


def _attempts_in_series(record: ErrorRecord) -> int:
    """Attempts made since a person last asked for a retry (all of them if nobody did).

    Counted from the history, which interleaves attempts and moves in order, so that an
    attempt and a person's retry at the same instant are still told apart.
    """
    count = 0
    for entry in reversed(record.history):
        if entry.action == "pending_retry" and entry.actor != "worker":
            break
        if entry.action.startswith("attempt "):
            count += 1
    return count
