"""The `ErrorStore` protocol every store implements, with the rules all stores share.

Stores: [`SQLiteStore`][failsafe.errors.SQLiteStore] (the embedded default) and
[`PostgresStore`][failsafe.errors.postgres.PostgresStore] (the ``postgres`` extra). Every
store passes one contract test suite. A store is thread-safe; every method is one
transaction, so a record is never written in part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Protocol

import attrs

from failsafe.errors.record import OPEN_STATUSES, ErrorRecord, Report, Status
from failsafe.exceptions import FailsafeError

__all__ = [
    "COUNT_LIMIT",
    "EDITABLE",
    "MOVES",
    "RECEIPT_SECONDS",
    "REPEAT_SAMPLE",
    "GROUP_ORDERS",
    "ID_PREFIX",
    "AmbiguousId",
    "GROUP_SOURCES",
    "ErrorStore",
    "Group",
    "GroupNotFound",
    "GroupPage",
    "GroupQuery",
    "InvalidMove",
    "Page",
    "Query",
    "RecordNotFound",
    "StoreError",
    "StoreUnavailable",
    "check_move",
    "cursor_text",
    "parse_cursor",
]


class StoreError(FailsafeError):
    """The root of the stores' own errors."""


class RecordNotFound(StoreError, KeyError):
    """No record has this id."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id
        super().__init__(f"no error record with id {record_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class AmbiguousId(RecordNotFound):
    """An id prefix that begins more than one record's id: give more of it."""

    def __init__(self, prefix: str, found: Sequence[str]) -> None:
        super().__init__(prefix)
        self.found = tuple(found)
        self.args = (
            f"id {prefix[:80]!r} begins more than one record's id"
            f" ({', '.join(found)}, ...): give more of it",
        )


ID_PREFIX: Final = 8
"""The fewest characters of a record's id that name it (the review pages show 12)."""


class GroupNotFound(StoreError, KeyError):
    """No record has this fingerprint."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__(fingerprint)

    def __str__(self) -> str:
        return f"no failure group with fingerprint {self.fingerprint[:200]!r}"


class InvalidMove(StoreError):
    """The record's status does not allow this change (for example resolving a discarded one)."""

    def __init__(self, record_id: str, current: Status, wanted: Status) -> None:
        self.record_id = record_id
        self.current = current
        self.wanted = wanted
        super().__init__(f"record {record_id} is {current.value}; it cannot become {wanted.value}")


class StoreUnavailable(StoreError):
    """The store cannot be reached now (its database refuses connections, or is overloaded).

    Nothing was written. The service answers ``503`` with a ``Retry-After`` header, and a
    client's spool keeps the report until then.

    Attributes:
        retry_after: Seconds after which asking again may succeed.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def retry_after_header(self) -> str:
        """``retry_after`` as an HTTP ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))

    @property
    def public(self) -> str:
        """What an HTTP answer says: no host, user or database name (the log has those)."""
        return f"the store is unavailable, try again in {self.retry_after_header} s"


REPEAT_SAMPLE: Final = 10
"""The repeats of a failure a record's history lists ("reported again"): the first ten.

Later repeats only raise the record's ``count`` and ``updated_at`` (when it was last
reported; ``created_at`` is when first), so a failure reported a million times costs the
same to store, read and show as one reported eleven times."""

RECEIPT_SECONDS: Final = 7 * 24 * 3600.0
"""How long a report's id is remembered (7 days), so a report delivered again is applied once.

A client that lost the answer to a delivery sends the same report again (the client's spool
does, with its ``report_id``); within this time the store answers with the record it made
the first time, without counting the report twice. Each report stored retires at most two
expired ids, so the ids kept stay bounded by the reports of the last seven days."""

MOVES: Final[dict[Status, frozenset[Status]]] = {
    Status.PENDING_RETRY: frozenset(
        {Status.RETRYING, Status.NEEDS_REVIEW, Status.RESOLVED, Status.DISCARDED}
    ),
    Status.RETRYING: frozenset(
        {Status.PENDING_RETRY, Status.NEEDS_REVIEW, Status.RESOLVED, Status.DISCARDED}
    ),
    Status.NEEDS_REVIEW: frozenset({Status.PENDING_RETRY, Status.RESOLVED, Status.DISCARDED}),
    Status.RESOLVED: frozenset(),
    Status.DISCARDED: frozenset(),
}
"""Which status may follow which. Resolved and discarded records are closed for good."""


EDITABLE: Final = frozenset({Status.NEEDS_REVIEW, Status.PENDING_RETRY})
"""The statuses in which a record's payload may be corrected (and the record retried)."""


def check_move(record_id: str, current: Status, wanted: Status) -> None:
    """Raise `InvalidMove` unless ``current`` may become ``wanted``."""
    if wanted not in MOVES[current]:
        raise InvalidMove(record_id, current, wanted)


def _limit(inst: object, attr: object, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 500:
        raise ValueError(f"limit must be an integer from 1 to 500, got {value!r}")


def _offset(inst: object, attr: object, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10**9:
        raise ValueError(f"offset must be an integer from 0 to 1000000000, got {value!r}")


def _after(inst: object, attr: object, value: tuple[float, str] | None) -> None:
    if value is None:
        return
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not isinstance(value[0], int | float)
        or isinstance(value[0], bool)
        or not math.isfinite(value[0])
        or not isinstance(value[1], str)
    ):
        raise ValueError(f"after must be a (created_at, record id) pair, got {value!r}")


def cursor_text(after: tuple[float, str]) -> str:
    """A page's cursor as text (for a URL): ``<created_at>_<record id>``."""
    return f"{float(after[0])!r}_{after[1]}"


def parse_cursor(text: str) -> tuple[float, str]:
    """The inverse of `cursor_text`. Raises ``ValueError`` naming the problem."""
    moment, sep, record_id = text.partition("_")
    try:
        at = float(moment)
    except ValueError:
        at = math.nan
    if not sep or not record_id or not math.isfinite(at):
        raise ValueError(f"not a page cursor: {text[:80]!r}")
    return at, record_id


@attrs.frozen(kw_only=True)
class Query:
    """Filters for listing records; every filter given must hold. Newest first.

    Attributes:
        statuses: Only these statuses (empty: all).
        kind: Only this kind.
        source: Only this source service.
        since: Created at or after (epoch seconds).
        until: Created before (epoch seconds).
        text: A substring of the kind, error type, error message or payload (any case).
        fingerprint: Only the records of this failure group.
        trace_id: Only the records whose trace id is this one (read off an index).
        limit: Records per page (1-500).
        offset: Records to skip (costs as many index steps: prefer ``after``).
        after: Only records older than this one: the ``(created_at, id)`` of the last
            record of the previous page (`Page.next_after`). Keyset pagination: a page
            costs the same however deep it is.
    """

    statuses: tuple[Status, ...] = ()
    kind: str | None = None
    source: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    fingerprint: str | None = None
    trace_id: str | None = None
    limit: int = attrs.field(default=50, validator=_limit)
    offset: int = attrs.field(default=0, validator=_offset)
    after: tuple[float, str] | None = attrs.field(default=None, validator=_after)


GROUP_ORDERS: Final = ("newest", "largest")
"""How groups may be listed: last seen first, or most records in the chosen statuses first."""


def _order(inst: object, attr: object, value: str) -> None:
    if value not in GROUP_ORDERS:
        raise ValueError(f"order must be one of {', '.join(GROUP_ORDERS)}, got {value!r}")


@attrs.frozen(kw_only=True)
class GroupQuery:
    """Filters for listing failure groups; every filter given must hold.

    Attributes:
        statuses: Only groups with at least one record in one of these statuses (empty:
            every group); the open ones by default.
        kind: Only this kind.
        source: Only groups with a record from this source service.
        text: A substring of the kind, the error type or the title (any case).
        order: ``newest`` (last seen first) or ``largest`` (most records in ``statuses``
            first).
        limit: Groups per page (1-500).
        offset: Groups to skip.
        hours: Give each group its reports per hour over the last seven days (at most
            192 numbers a group), as `ErrorStore.group` does.
    """

    statuses: tuple[Status, ...] = attrs.field(
        factory=lambda: tuple(sorted(OPEN_STATUSES, key=lambda s: s.value))
    )
    kind: str | None = None
    source: str | None = None
    text: str | None = None
    order: str = attrs.field(default="newest", validator=_order)
    limit: int = attrs.field(default=50, validator=_limit)
    offset: int = attrs.field(default=0, validator=_offset)
    hours: bool = False


@attrs.frozen(kw_only=True)
class Group:
    """A failure group: the records with one fingerprint, and their numbers.

    Attributes:
        fingerprint: The group's fingerprint (see
            [`fingerprint`][failsafe.errors.fingerprint.fingerprint]).
        kind: The records' kind.
        error_type: Their error type.
        title: The message of the group's first stored record (its first 300 characters;
            of several stored at once, the least in text order).
        first_seen: When the first of its reports came (epoch seconds).
        last_seen: When the last came.
        reports: Its reports, repeats included.
        records: Its records (repeats of an open record are one record).
        statuses: Records per status (every status present, zero included).
        sources: Records per source service, the most first (at most `GROUP_SOURCES`).
        hours: Reports per hour, ``(hour start, reports)`` oldest first, over the seven days
            up to its last report (only hours with reports; filled by `ErrorStore.group`,
            and in a listing asked with ``GroupQuery.hours``).
    """

    fingerprint: str
    kind: str
    error_type: str | None
    title: str | None
    first_seen: float
    last_seen: float
    reports: int
    records: int
    statuses: dict[str, int]
    sources: tuple[tuple[str, int], ...] = ()
    hours: tuple[tuple[float, int], ...] = ()

    @property
    def open(self) -> int:
        """Records in an open status (they still need something)."""
        return sum(self.statuses[s.value] for s in OPEN_STATUSES)

    def to_json(self) -> dict[str, Any]:
        """The group as the service's API returns it."""
        return {
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "error_type": self.error_type,
            "title": self.title,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "reports": self.reports,
            "records": self.records,
            "open": self.open,
            "statuses": dict(self.statuses),
            "sources": [{"source": s, "records": n} for s, n in self.sources],
            "hours": [{"at": at, "reports": n} for at, n in self.hours],
        }


GROUP_SOURCES: Final = 10
"""The sources a group lists, the most records first (a group reported by more lists these)."""


@attrs.frozen
class GroupPage:
    """One page of failure groups and how many match in all."""

    groups: tuple[Group, ...]
    total: int


COUNT_LIMIT: Final = 10_000
"""How far a listing counts the records that match: a count costs at most this many index
entries, whatever the store's size. Past it, `Page.total` is ``COUNT_LIMIT`` and
`Page.total_exact` is false (shown as "10,000+")."""


@attrs.frozen
class Page:
    """One page of a listing: the records and how many match in all.

    Attributes:
        records: This page's records, newest first.
        total: How many records match, counted up to `COUNT_LIMIT`.
        total_exact: False when more than `COUNT_LIMIT` match (``total`` is then the limit).
        next_after: When the page is full, the ``after`` of the next page (`Query.after`);
            ``None`` when this page is the last.
    """

    records: tuple[ErrorRecord, ...]
    total: int
    total_exact: bool = True
    next_after: tuple[float, str] | None = None


class ErrorStore(Protocol):
    """Where error records live. Every method is atomic; the store is thread-safe.

    Two optional parts, which the stores of this package have and the service uses when a
    store offers them: ``add_each(reports)``, storing many ``(report, now,
    next_attempt_at, actor, report_id)`` in one transaction with one outcome each (a
    record and whether it is new, or the exception of that report alone); and ``writers``,
    how many such groups the store takes at once (a positive integer, default 1; another
    value is refused with `ConfigurationError` when the app is built). Without them the service
    stores reports one `add` at a time.
    """

    def add(
        self,
        report: Report,
        *,
        now: float,
        next_attempt_at: float | None,
        actor: str,
        report_id: str | None = None,
    ) -> tuple[ErrorRecord, bool]:
        """Store a report; return the record and whether it is new.

        When an open record (see `OPEN_STATUSES`) has the report's dedupe key, that record's
        count goes up by one instead, with an audit entry, and ``False`` is returned. When
        ``report_id`` (the client's idempotency key) was stored before, nothing changes and
        that report's record is returned: a report delivered twice counts once.
        """
        ...

    def add_many(
        self,
        reports: Sequence[tuple[Report, str | None]],
        *,
        now: float,
        next_attempt_at: Sequence[float | None],
        actor: Sequence[str],
    ) -> list[tuple[str, bool]]:
        """Store many ``(report, report_id)`` pairs in one transaction: all or none.

        Each is stored as `add` would; returns each one's record id and whether it is new.
        """
        ...

    def get(self, record_id: str) -> ErrorRecord:
        """Return one record. Raises `RecordNotFound`."""
        ...

    def find(self, query: Query) -> Page:
        """Return the records matching ``query``, newest first, and their total."""
        ...

    def move(
        self,
        record_id: str,
        to: Status,
        *,
        now: float,
        actor: str,
        note: str | None = None,
        next_attempt_at: float | None = None,
    ) -> ErrorRecord:
        """Change a record's status with an audit entry. Raises `RecordNotFound`, `InvalidMove`."""
        ...

    def claim_due(self, *, now: float, lease: float, limit: int) -> list[ErrorRecord]:
        """Atomically take records due for an automatic retry and mark them ``retrying``.

        Due: ``pending_retry`` with ``next_attempt_at <= now``, or ``retrying`` whose lease
        (``next_attempt_at``) ran out because a worker died. Each claimed record's lease
        ends at ``now + lease``. Two workers never claim the same record at once.
        """
        ...

    def record_attempt(
        self,
        record_id: str,
        *,
        ok: bool,
        detail: str,
        now: float,
        to: Status,
        next_attempt_at: float | None,
        actor: str,
        lease: float | None = None,
    ) -> ErrorRecord:
        """Append an attempt and move the record to ``to``, in one transaction.

        The record is not moved if it is no longer ``retrying`` (a person closed it) or, when
        ``lease`` is given, if its lease is no longer that one (another worker took it over
        after this worker's lease ran out). The attempt is recorded in any case.
        """
        ...

    def counts(self) -> dict[str, int]:
        """Records per status (every status present, zero included)."""
        ...

    def groups(self, query: GroupQuery) -> GroupPage:
        """Return the failure groups matching ``query``, with their numbers and sources."""
        ...

    def group(self, fingerprint: str) -> Group:
        """Return one failure group, its hours included. Raises `GroupNotFound`."""
        ...

    def edit_payload(
        self,
        record_id: str,
        payload: Any,
        *,
        now: float,
        actor: str,
        note: str,
        next_attempt_at: float,
    ) -> ErrorRecord:
        """Replace a record's payload and make it ``pending_retry``, due at ``next_attempt_at``.

        With an audit entry "payload edited" carrying ``note``, in one transaction. Raises
        `RecordNotFound`, or `InvalidMove` unless its status is one of `EDITABLE`.
        """
        ...

    def delete_closed(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` resolved or discarded records last changed before ``before``.

        With their attempts, history and receipts, in one transaction; the oldest first.
        Open records are never deleted. Returns how many were deleted.
        """
        ...

    def move_group(
        self,
        fingerprint: str,
        to: Status,
        *,
        statuses: Sequence[Status],
        created_until: float,
        now: float,
        actor: str,
        note: str | None = None,
        next_attempt_at: float | None = None,
        limit: int,
    ) -> list[str]:
        """Move up to ``limit`` of a group's records, in one transaction; return their ids.

        The records moved are those in ``statuses`` created at or before
        ``created_until``, oldest first; each gets an audit entry, as `move` gives.
        """
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...


def open_statuses() -> Sequence[Status]:
    """The open statuses in a stable order (for SQL ``IN`` lists)."""
    return sorted(OPEN_STATUSES, key=lambda s: s.value)
