"""failsafe.errors: the Error-handling service, its client, its stores and manual review.

Services report failures (``ErrorSink.report``); the service keeps them as records, retries
those that ask for it by its own logic, and shows the others to a person for review.
"""

from failsafe.errors.client import AsyncErrorSink, ErrorSink, ReportRejected, SinkClosed
from failsafe.errors.desk import BulkResult, ErrorDesk, GroupAction, RetrySchedule
from failsafe.errors.record import (
    KIND_PATTERN,
    OPEN_STATUSES,
    Action,
    Attempt,
    AuditEntry,
    ErrorRecord,
    InvalidReport,
    Report,
    Status,
)
from failsafe.errors.redact import Redactor
from failsafe.errors.spool import Spool, SpooledReport
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import (
    AmbiguousId,
    ErrorStore,
    Group,
    GroupNotFound,
    GroupPage,
    GroupQuery,
    InvalidMove,
    Page,
    Query,
    RecordNotFound,
    StoreError,
    StoreUnavailable,
)
from failsafe.errors.worker import Handler, Handlers, RetryWorker

__all__ = [
    "AsyncErrorSink",
    "ErrorSink",
    "ReportRejected",
    "SinkClosed",
    "Spool",
    "SpooledReport",
    "KIND_PATTERN",
    "OPEN_STATUSES",
    "Action",
    "AmbiguousId",
    "Attempt",
    "AuditEntry",
    "BulkResult",
    "ErrorDesk",
    "ErrorRecord",
    "ErrorStore",
    "Group",
    "GroupAction",
    "GroupNotFound",
    "GroupPage",
    "GroupQuery",
    "Handler",
    "Handlers",
    "InvalidMove",
    "InvalidReport",
    "Page",
    "Query",
    "Redactor",
    "RecordNotFound",
    "Report",
    "RetrySchedule",
    "RetryWorker",
    "SQLiteStore",
    "Status",
    "StoreError",
    "StoreUnavailable",
]
