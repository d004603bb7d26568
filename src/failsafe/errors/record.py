"""The error record: what failed, where, with what payload, and what happens next.

A service reports a [`Report`][failsafe.errors.Report]; the Error-handling service keeps it
as an [`ErrorRecord`][failsafe.errors.ErrorRecord] with a status, every attempt, and an
audit trail of every change.

Statuses and their moves:

```text
report(action="retry")  -> pending_retry --claim--> retrying --ok--> resolved
                                ^                     |--failed, attempts left--> pending_retry
                                |                     '--failed, none left-----> needs_review
report(action="review") -> needs_review --resolve--> resolved
                                |        --discard--> discarded
                                '--------retry------> pending_retry
```
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from failsafe.errors.fingerprint import FINGERPRINT_PATTERN
from failsafe.exceptions import FailsafeError

__all__ = [
    "KIND_PATTERN",
    "OPEN_STATUSES",
    "SPAN_ID_PATTERN",
    "TRACE_ID_PATTERN",
    "Action",
    "Attempt",
    "AuditEntry",
    "ErrorRecord",
    "InvalidReport",
    "Report",
    "Status",
]


class Status(enum.StrEnum):
    """Where a record is in its life."""

    PENDING_RETRY = "pending_retry"
    RETRYING = "retrying"
    NEEDS_REVIEW = "needs_review"
    RESOLVED = "resolved"
    DISCARDED = "discarded"


OPEN_STATUSES: Final = frozenset({Status.PENDING_RETRY, Status.RETRYING, Status.NEEDS_REVIEW})
"""Statuses of records that still need something; a repeated report joins an open record."""


class Action(enum.StrEnum):
    """What the reporting service asks for: an automatic retry, or a person's review."""

    RETRY = "retry"
    REVIEW = "review"


class InvalidReport(FailsafeError, ValueError):
    """A report (or an API request) is malformed; ``field`` names the problem's place."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


KIND_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""What a report's ``kind`` may be (matched whole: no line break after it either)."""
_KIND = re.compile(KIND_PATTERN)
_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)

TRACE_ID_PATTERN: Final = r"^(?!0{32})[0-9a-f]{32}$"
"""What a report's ``trace_id`` may be: a W3C trace id, 32 lower-case hex digits, not all zero."""
SPAN_ID_PATTERN: Final = r"^(?!0{16})[0-9a-f]{16}$"
"""What a report's ``span_id`` may be: a W3C span id, 16 lower-case hex digits, not all zero."""
_TRACE_ID = re.compile(TRACE_ID_PATTERN)
_SPAN_ID = re.compile(SPAN_ID_PATTERN)
_MAX_TEXT = 64 * 1024
# json.dumps(value, separators=...) builds an encoder per call; these are built once (the
# encoders keep no state between calls, so threads may share them)
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))
_SORTED_COMPACT: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"))

REPORT_FIELDS: Final = (
    "kind",
    "action",
    "source",
    "payload",
    "error_type",
    "error_message",
    "traceback",
    "correlation_id",
    "dedupe_key",
    "fingerprint",
    "trace_id",
    "span_id",
)
_REPORT_FIELD_SET: Final = frozenset(REPORT_FIELDS)


@attrs.frozen(kw_only=True)
class Report:
    """One failure, as a service reports it.

    Attributes:
        kind: What failed, such as ``stock.decrement`` or ``order.not_found``.
        action: ``retry`` (the service retries it by its own logic) or ``review``.
        source: The reporting service, such as ``warehouse``.
        payload: JSON data needed to act on it (what to decrement, which order).
        error_type: The exception's class name.
        error_message: The exception's message.
        traceback: The traceback text.
        correlation_id: The request or message id that ties logs together.
        dedupe_key: Reports with the same key, while a record is open, are one record with
            a count. Default: a hash of kind, source, error type and payload (computed
            again from the redacted report when it is stored, see `Redactor.report`).
        fingerprint: The failure group this report belongs to, if the service chooses it
            (1-128 letters, digits, ``._:-``). Default: the one
            [`fingerprint`][failsafe.errors.fingerprint.fingerprint] makes from the kind,
            error type, message and traceback when the report is stored.
        trace_id: The trace the failure happened in (a W3C trace id: 32 lower-case hex
            digits, not all zero), so the record can be found from a trace and the
            service's retries of it join that trace. The sinks fill it from the current
            span when a tracing system is installed.
        span_id: The span that reported the failure (16 lower-case hex digits, not all
            zero), within ``trace_id``'s trace: the parent of the retries' spans.

    Raises:
        InvalidReport: If ``fingerprint``, ``trace_id`` or ``span_id`` is malformed
            (``field`` names it).
    """

    kind: str
    action: Action = attrs.field(converter=Action)
    source: str
    payload: Any = attrs.field(factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    correlation_id: str | None = None
    dedupe_key: str = ""
    fingerprint: str | None = None
    trace_id: str | None = None
    span_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.fingerprint is not None and not _FINGERPRINT.fullmatch(self.fingerprint):
            raise InvalidReport(
                "fingerprint",
                "must be 1-128 letters, digits, '.', '_', ':' or '-',"
                f" got {str(self.fingerprint)[:80]!r}",
            )
        if self.trace_id is not None:
            check_trace_id(self.trace_id)
        if self.span_id is not None:
            check_span_id(self.span_id)
        if not self.dedupe_key:
            object.__setattr__(self, "dedupe_key", default_dedupe_key(self))

    @classmethod
    def from_json(cls, data: object, *, max_payload_bytes: int = 64 * 1024) -> Report:
        """Validate a decoded JSON object into a report.

        Raises:
            InvalidReport: Naming the field: a missing or unknown field, a wrong type, a
                kind that is not a short identifier, a payload over ``max_payload_bytes``.
        """
        if not isinstance(data, Mapping):
            raise InvalidReport("body", "must be a JSON object")
        if not _REPORT_FIELD_SET.issuperset(data):
            unknown = sorted(set(data) - _REPORT_FIELD_SET)
            raise InvalidReport(unknown[0], f"unknown field (known: {', '.join(REPORT_FIELDS)})")
        for name in ("kind", "action", "source"):
            if name not in data:
                raise InvalidReport(name, "is required")
        kind = _text(data, "kind", required=True)
        if not _KIND.fullmatch(kind):
            raise InvalidReport(
                "kind", f"must be 1-128 letters, digits, '.', '_', ':' or '-', got {kind[:80]!r}"
            )
        action_text = _text(data, "action", required=True)
        try:
            action = Action(action_text)
        except ValueError:
            raise InvalidReport("action", "must be 'retry' or 'review'") from None
        source = _text(data, "source", required=True, limit=200)
        payload = data.get("payload", {})
        check_payload(payload, max_payload_bytes=max_payload_bytes)
        return cls(
            kind=kind,
            action=action,
            source=source,
            payload=payload,
            error_type=_text(data, "error_type", limit=200),
            error_message=_text(data, "error_message"),
            traceback=_text(data, "traceback"),
            correlation_id=_text(data, "correlation_id", limit=200),
            dedupe_key=_text(data, "dedupe_key", limit=200) or "",
            fingerprint=_text(data, "fingerprint", limit=128),
            trace_id=_text(data, "trace_id", limit=32),
            span_id=_text(data, "span_id", limit=16),
        )

    def to_json(self) -> dict[str, Any]:
        """The report as the JSON object the service's API accepts."""
        data = attrs.asdict(self)
        data["action"] = self.action.value
        return {k: v for k, v in data.items() if v is not None}


def check_trace_id(value: object, field: str = "trace_id") -> None:
    """Refuse what is not a W3C trace id (`TRACE_ID_PATTERN`), naming ``field``.

    Raises:
        InvalidReport: If ``value`` is not 32 lower-case hex digits, or is all zero.
    """
    if not isinstance(value, str) or not _TRACE_ID.fullmatch(value):
        raise InvalidReport(
            field, f"must be 32 lower-case hex digits, not all zero, got {str(value)[:80]!r}"
        )


def check_span_id(value: object, field: str = "span_id") -> None:
    """Refuse what is not a W3C span id (`SPAN_ID_PATTERN`), naming ``field``.

    Raises:
        InvalidReport: If ``value`` is not 16 lower-case hex digits, or is all zero.
    """
    if not isinstance(value, str) or not _SPAN_ID.fullmatch(value):
        raise InvalidReport(
            field, f"must be 16 lower-case hex digits, not all zero, got {str(value)[:80]!r}"
        )


def check_payload(payload: Any, *, max_payload_bytes: int = 64 * 1024) -> None:
    """Refuse a payload a record cannot hold, naming the problem's place.

    Raises:
        InvalidReport: If ``payload`` is not a JSON object or array, holds what JSON or
            the stores cannot keep (NaN, a NUL, an unpaired surrogate, a non-string key,
            nesting deeper than 64 levels), or is over ``max_payload_bytes`` as compact
            JSON.
    """
    if not isinstance(payload, dict | list):
        raise InvalidReport("payload", "must be a JSON object or array")
    if not _storable(payload, 1):
        _check_json(payload, "payload", 1)  # raises, naming the first problem's place
    # ensure_ascii (the default) writes only ASCII: characters are bytes
    size = len(_COMPACT.encode(payload))
    if size > max_payload_bytes:
        raise InvalidReport(
            "payload", f"is {size} bytes, over the limit of {max_payload_bytes} bytes"
        )


def default_dedupe_key(report: Report) -> str:
    """The dedupe key of a report that gives none: a hash of kind, source, error type, payload."""
    return hashlib.sha256(
        _SORTED_COMPACT.encode(
            [report.kind, report.source, report.error_type, report.payload]
        ).encode()
    ).hexdigest()[:32]


_MAX_DEPTH = 64


def _check_json(value: Any, where: str, depth: int) -> None:
    """Refuse what JSON or the stores cannot keep.

    That is NaN and infinities, NUL characters and unpaired surrogates in strings, and
    nesting deeper than 64 levels.
    """
    if depth > _MAX_DEPTH:
        raise InvalidReport(where, f"nests deeper than {_MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidReport(where, f"{value!r} is not a JSON number")
    if isinstance(value, str):
        _check_string(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidReport(where, f"has a non-string key {key!r}")
            _check_string(key, where)
            _check_json(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)


def _storable(value: Any, depth: int) -> bool:
    """Whether `_check_json` accepts ``value``: the same rules, but no place names built.

    Most payloads pass; `_check_json` (which names the place of the first problem, a string
    built per item) then runs only for one that does not.
    """
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, str):
        return _plain(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not _plain(key) or not _storable(item, depth + 1):
                return False
        return True
    if isinstance(value, list):
        return all(_storable(item, depth + 1) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


def _plain(value: str) -> bool:
    """Whether `_check_string` accepts ``value``: no NUL, no unpaired surrogate."""
    if "\x00" in value:
        return False
    if value.isascii():  # a flag CPython keeps: no surrogate, no encoding needed
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_string(value: str, where: str) -> None:
    if "\x00" in value:
        raise InvalidReport(where, "contains a NUL character")
    if value.isascii():  # a flag CPython keeps: no surrogate, no encoding needed
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidReport(where, "contains an unpaired surrogate (not UTF-8)") from None


def _text(
    data: Mapping[str, Any], name: str, *, required: bool = False, limit: int = _MAX_TEXT
) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidReport(name, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidReport(name, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidReport(name, "must not be empty")
    if len(value) > limit:
        raise InvalidReport(name, f"is {len(value)} characters, over the limit of {limit}")
    _check_string(value, name)
    return value


@attrs.frozen(kw_only=True)
class Attempt:
    """One automatic retry of a record: when, whether it worked, and what it said."""

    at: float
    ok: bool
    detail: str


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One change to a record: who, when, what, and their note."""

    at: float
    actor: str
    action: str
    note: str | None = None


@attrs.frozen(kw_only=True)
class ErrorRecord:
    """A reported failure as the Error-handling service keeps it.

    Attributes:
        id: The record's id (also the idempotency key of its retries).
        count: How many times the same failure (same dedupe key) was reported while open.
        status: See [`Status`][failsafe.errors.Status].
        attempts: Every automatic retry, oldest first.
        history: Every change, oldest first (the audit trail).
        created_at: Wall-clock seconds since the epoch, as are the other times.
        next_attempt_at: When the next automatic retry is due (``pending_retry``), or when
            a running retry's lease ends (``retrying``); otherwise ``None``.
        fingerprint: The failure group (see
            [`fingerprint`][failsafe.errors.fingerprint.fingerprint]): the report's own, or
            the one made when it was first stored.
        trace_id: The trace the failure happened in, if its report said: that of the
            latest report carrying one (a repeat with a trace id replaces it).
        span_id: The span that reported it, within ``trace_id``'s trace.
    """

    id: str
    kind: str
    source: str
    action: Action
    payload: Any
    error_type: str | None
    error_message: str | None
    traceback: str | None
    correlation_id: str | None
    dedupe_key: str
    count: int
    status: Status
    attempts: tuple[Attempt, ...]
    history: tuple[AuditEntry, ...]
    created_at: float
    updated_at: float
    next_attempt_at: float | None
    fingerprint: str = ""
    trace_id: str | None = None
    span_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as the service's API returns it.

        Written out rather than made by ``attrs.asdict`` (a fifth of the time): the same keys
        in the same order, the payload copied as ``asdict`` copies it (`_as_plain`).
        """
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "action": self.action.value,
            "payload": _as_plain(self.payload),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "traceback": self.traceback,
            "correlation_id": self.correlation_id,
            "dedupe_key": self.dedupe_key,
            "count": self.count,
            "status": self.status.value,
            "attempts": [{"at": a.at, "ok": a.ok, "detail": a.detail} for a in self.attempts],
            "history": [
                {"at": h.at, "actor": h.actor, "action": h.action, "note": h.note}
                for h in self.history
            ],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "next_attempt_at": self.next_attempt_at,
            "fingerprint": self.fingerprint,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }


# the types attrs.asdict keeps as they are
_ATOMIC: Final = frozenset(
    {type(None), bool, int, float, str, complex, bytes, type(...), type, range, property}
)


def _as_plain(value: Any, *, attribute: bool = True) -> Any:
    """``value`` copied as ``attrs.asdict`` copies it.

    As an attribute's value (``attribute``), or as something such a value holds. Dicts (of
    any dict class) become new dicts, lists, tuples and sets new ones of the same class,
    *attrs* instances dicts; anything else is kept. A JSON payload is thus copied whole, so
    a caller changing the answer cannot change the record.
    """
    kind = type(value)
    if kind in _ATOMIC:
        return value
    if getattr(kind, "__attrs_attrs__", None) is not None:
        return attrs.asdict(value)
    if issubclass(kind, tuple | list | set | frozenset):
        items = [_as_plain(item, attribute=False) for item in value]
        if not attribute:
            return kind(items)
        try:
            return kind(items)
        except TypeError:
            # asdict's way with an attribute holding a named tuple (not with one inside)
            if not issubclass(kind, tuple):
                raise
            return kind(*items)
    if issubclass(kind, dict):
        return {
            _as_plain(k, attribute=False): _as_plain(v, attribute=False) for k, v in value.items()
        }
    return value
