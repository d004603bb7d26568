"""The retry worker: the Error-handling service retries records "by its own logic".

A service that reports a failure with ``action="retry"`` (the Warehouse's failed stock
decrement, the Order service's failed status write) expects the Error-handling service to
redo the action later, by itself. The service cannot know how to decrement stock, so the
reporting service registers, per kind, how to retry it:

- an **in-process callable** ``fn(record) -> str | None`` (when `failsafe.errors` runs
  inside the reporting service): it returns on success (optionally a detail to record) and
  raises on failure;
- an **HTTP callback URL**: the worker POSTs ``{"record": <record JSON>}`` to it. The
  Warehouse example registers ``http://127.0.0.1:<port>/warehouse/v1/retry/stock-decrement``
  for the kind ``stock.decrement``. A 2xx answer is a success; any other status, or a
  transport error, is a failed attempt.

Each round, the [`RetryWorker`][failsafe.errors.worker.RetryWorker]:

1. **claims** the due records (``ErrorDesk.claim_due``): each becomes ``retrying`` under a
   lease (``RetrySchedule.lease``). A worker that dies mid-attempt does not lose the record:
   when the lease ends, another worker (or the same one, restarted) claims it again;
2. **calls** the kind's handler, with the record's id as the idempotency key (the HTTP
   callback receives it as the ``Idempotency-Key`` header), so that the target applies a
   retried action once even when an attempt is repeated after a lost answer or a lease
   that ran out;
3. **records** the attempt (``ErrorDesk.attempted``), and the kind's
   [`RetrySchedule`][failsafe.errors.RetrySchedule] decides what follows: success resolves
   the record; a failure schedules the next attempt after the kind's backoff, or, once the
   kind's attempts are used up, sends the record to a person (``needs_review``).

A kind with no handler fails each attempt with ``no handler registered for kind '<kind>'``,
so its records reach review after the kind's attempts rather than waiting forever.

With a tracing system installed (``failsafe.opentelemetry.instrument()``), each attempt is a
span, `RETRY_SPAN`, continuing the trace the record's report was made in (its ``trace_id``,
under its ``span_id``), so a retry made hours later shows in the original trace; an HTTP
callback request carries the span's ``traceparent``, so the handler's own spans join it too.
The span's attributes are ``failsafe.errors.record_id``, ``failsafe.errors.kind``,
``failsafe.errors.source``, ``failsafe.errors.attempt`` (this attempt's number, all
attempts counted), ``failsafe.errors.outcome`` (``succeeded`` or ``failed``) and
``failsafe.errors.status`` (the record's status after it); never the payload or a message.
Without a tracing system, nothing of this runs.

One attempt per claim: the HTTP callback is sent once, with a short timeout (10 s by
default), not through a retrying transport, because the worker's schedule *is* the retry.
A handler that raises, or a callback that fails, never stops the worker, and one bad
record never blocks the others: each record is handled on its own.

Example:
    ```python
    from failsafe.errors.desk import ErrorDesk
    from failsafe.errors.sqlite import SQLiteStore
    from failsafe.errors.worker import Handlers, RetryWorker

    handlers = Handlers()
    url = "http://127.0.0.1:8001/warehouse/v1/retry/stock-decrement"
    handlers.register_url("stock.decrement", url)
    worker = RetryWorker(ErrorDesk(SQLiteStore("errors.db")), handlers)
    worker.start_thread()  # or: await worker.run_forever(stop_event)
    ...
    worker.stop()
    ```
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, TypeAlias
from urllib.parse import urlsplit

from failsafe import _tracing
from failsafe.errors.desk import RETENTION_BATCH, ErrorDesk
from failsafe.errors.record import (
    KIND_PATTERN,
    SPAN_ID_PATTERN,
    ErrorRecord,
    InvalidReport,
    Status,
)
from failsafe.errors.store import StoreUnavailable
from failsafe.exceptions import ConfigurationError

if TYPE_CHECKING:
    # httpx (the ``http`` extra) is imported only when a callback URL is used, so that
    # failsafe.errors and in-process handlers work without it
    import httpx

    from failsafe.errors.alerts import Alerts

__all__ = [
    "DEFAULT_CALLBACK_HOSTS",
    "RETENTION_DAYS",
    "RETENTION_EVERY",
    "RETENTION_PER_PASS",
    "RETRY_SPAN",
    "UNHANDLED_KINDS_LOGGED",
    "Handler",
    "HandlerPinned",
    "Handlers",
    "RetryWorker",
]

_log = logging.getLogger("failsafe.errors.worker")

RETENTION_DAYS: Final = 14.0
"""How long the service keeps a resolved or discarded record by default (then deletes it)."""

RETENTION_EVERY: Final = 60.0
"""Seconds between the worker's retention passes (on the desk's clock)."""

RETENTION_PER_PASS: Final = 20
"""Batches of `RETENTION_BATCH` (500) records one retention pass deletes at most: 10,000 a
pass, so a large backlog of old records is worked off without holding the store long."""

UNHANDLED_KINDS_LOGGED: Final = 1024
"""Kinds without a handler the worker remembers having logged (each is logged once)."""

RETRY_SPAN: Final = "failsafe.errors retry"
"""The name of the span of one automatic attempt (with a tracing system installed)."""

Handler: TypeAlias = Callable[[ErrorRecord], str | None]
"""An in-process retry: returns on success (optionally a detail to record), raises on failure."""

# the same rule as a report's kind (record.Report.from_json), so every reportable kind can
# have a handler and a handler's kind is always one a report could carry
_KIND = re.compile(KIND_PATTERN)
_SPAN_ID = re.compile(SPAN_ID_PATTERN)
_MAX_URL = 2000
_MAX_DETAIL = 2000
_BODY_IN_DETAIL = 200


DEFAULT_CALLBACK_HOSTS: Final = ("127.0.0.1", "::1", "localhost")
"""The hosts a callback registered over HTTP may point at, unless others are given."""


class HandlerPinned(Exception):
    """A kind's handler was registered in code or at start: HTTP cannot change it."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"kind: the handler of {kind!r} was set when the service started; it cannot be"
            " changed over HTTP"
        )
        self.kind = kind


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _host_key(host: str) -> str:
    """A host as compared: lower case, IPv6 without brackets, no trailing dot."""
    return host.strip().strip("[]").rstrip(".").lower()


class Handlers:
    """The registry of how each kind of record is retried: a callable or a callback URL.

    One handler per kind: registering a kind again (either way) replaces its handler.
    Thread-safe: the service may register a URL (``PUT /v1/handlers/{kind}``) while the
    worker reads the registry.

    What arrives over HTTP goes through `offer_url`, which cannot change a kind registered
    here in code (or with ``--callback`` at start) and accepts only URLs whose host is one
    of ``callback_hosts``: so a token holder cannot redirect another kind's retries, nor
    make the worker send records to a host of its choosing.

    Args:
        callback_hosts: The hosts a URL registered over HTTP may point at (default
            `DEFAULT_CALLBACK_HOSTS`: loopback). Names are compared as written, in lower
            case: ``localhost`` does not admit ``127.0.0.1``.

    Raises:
        ConfigurationError: If a callback host is not a host name or address (a port,
            a path or a user part is refused).

    Example:
        ```python
        handlers = Handlers()
        handlers.register("order.status", lambda record: write_status(record.payload))
        url = "http://127.0.0.1:8001/warehouse/v1/retry/stock-decrement"
        handlers.register_url("stock.decrement", url)
        ```
    """

    def __init__(self, *, callback_hosts: Iterable[str] = DEFAULT_CALLBACK_HOSTS) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, Handler | str] = {}
        # kinds registered in code (or with --callback): never changed over HTTP
        self._pinned: set[str] = set()
        hosts = [callback_hosts] if isinstance(callback_hosts, str) else list(callback_hosts)
        for host in hosts:
            if (
                not isinstance(host, str)
                or not host.strip()
                or any(c in host for c in "/@?# ")
                or (":" in host and not _is_ipv6(host))
            ):
                raise ConfigurationError(
                    "callback_hosts", f"must be host names or addresses (no port), got {host!r}"
                )
        self.callback_hosts: frozenset[str] = frozenset(_host_key(h) for h in hosts)

    def register(self, kind: str, fn: Handler) -> None:
        """Retry records of ``kind`` by calling ``fn(record)`` in this process.

        ``fn`` returns on success (a string it returns becomes the attempt's detail) and
        raises on failure (the exception becomes the detail). It runs in the worker's
        thread; it should apply the action once per record id (the idempotency key).

        Raises:
            InvalidReport: If ``kind`` is not a valid kind (``field`` is ``"kind"``).
            TypeError: If ``fn`` is not callable.
        """
        _check_kind(kind)
        if not callable(fn):
            raise TypeError(f"the handler of {kind!r} must be callable, got {fn!r}")
        with self._lock:
            self._handlers[kind] = fn
            self._pinned.add(kind)

    def register_url(self, kind: str, url: str) -> None:
        """Retry records of ``kind`` by POSTing them to ``url`` (an HTTP callback).

        The worker sends ``{"record": <record JSON>}`` with the header
        ``Idempotency-Key: <record id>``; a 2xx answer is a success.

        Raises:
            InvalidReport: If ``kind`` is not a valid kind (``field`` is ``"kind"``), or
                ``url`` is not an absolute ``http://`` or ``https://`` URL (``field`` is
                ``"url"``).
        """
        _check_kind(kind)
        _check_url(url)
        with self._lock:
            self._handlers[kind] = url
            self._pinned.add(kind)

    def offer_url(self, kind: str, url: str) -> None:
        """Register a callback URL that arrived over HTTP (``PUT /v1/handlers/{kind}``).

        Unlike `register_url`, which is the operator's (code, or ``--callback`` at start),
        this refuses what would let the sender redirect retries or reach other hosts: a
        kind registered in code or at start cannot be changed this way, and the URL's host
        must be one of ``callback_hosts`` (loopback by default).

        Raises:
            InvalidReport: If ``kind`` or ``url`` is invalid, or the URL's host is not an
                allowed callback host (``field`` is ``"url"``).
            HandlerPinned: If ``kind``'s handler was registered in code or at start.
        """
        _check_kind(kind)
        _check_url(url)
        host = _host_key(urlsplit(url).hostname or "")
        if host not in self.callback_hosts:
            allowed = ", ".join(sorted(self.callback_hosts)) or "none"
            raise InvalidReport(
                "url",
                f"host {host!r} is not one of the callback hosts allowed at start ({allowed})",
            )
        with self._lock:
            if kind in self._pinned:
                raise HandlerPinned(kind)
            self._handlers[kind] = url

    def urls(self) -> dict[str, str]:
        """The registered callback URLs by kind (in-process handlers are not listed)."""
        with self._lock:
            return {k: h for k, h in sorted(self._handlers.items()) if isinstance(h, str)}

    def get(self, kind: str) -> Handler | str | None:
        """The handler of ``kind``: a callable, a callback URL, or ``None`` if there is none."""
        with self._lock:
            return self._handlers.get(kind)

    def __repr__(self) -> str:
        with self._lock:
            kinds = sorted(self._handlers)
        return f"Handlers({kinds!r})"


def _check_kind(kind: object) -> None:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InvalidReport("kind", "must be 1-128 letters, digits, '.', '_', ':' or '-'")


def _check_url(url: object) -> None:
    if not isinstance(url, str):
        raise InvalidReport("url", f"must be a string, got {type(url).__name__}")
    if len(url) > _MAX_URL:
        raise InvalidReport("url", f"is {len(url)} characters, over the limit of {_MAX_URL}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise InvalidReport("url", f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidReport("url", f"must be an absolute http:// or https:// URL, got {url!r}")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidReport("url", "must not contain spaces or control characters")


class RetryWorker:
    """Claims due records, runs their kind's handler, and records each attempt.

    Args:
        desk: The desk whose records are retried; its clock times the rounds and its
            schedules decide what follows each attempt.
        handlers: How each kind is retried.
        batch: Records claimed per round (at most).
        poll_interval: Seconds between rounds, on the desk's clock.
        http: The client for HTTP callbacks (default: one of the worker's own, created on
            first use, with a 10 s timeout; close it with `close`). Callback URLs need
            httpx (the ``http`` extra); in-process handlers do not.
        retention_days: Resolved and discarded records unchanged for this many days are
            deleted (`clean_up`, every `RETENTION_EVERY` seconds while `run_forever`
            runs); ``None`` keeps them forever. Open records are never deleted.
        alerts: Told of each record whose attempts ran out (escalated to review), and run
            (`Alerts.run_once`) after each round of `run_forever`.

    Raises:
        ConfigurationError: If ``batch`` is not an integer from 1 to 500,
            ``poll_interval`` is not a positive number, or ``retention_days`` is neither
            ``None`` nor a positive number.

    Run it one of three ways: `run_once` (one round, in the caller's thread),
    ``await run_forever(stop)`` (in an asyncio service, for example in its lifespan), or
    `start_thread` / `stop` (a daemon thread, for a sync service). Several workers, in one
    process or several, may share a store: a record is claimed by one worker at a time.
    """

    def __init__(
        self,
        desk: ErrorDesk,
        handlers: Handlers,
        *,
        batch: int = 10,
        poll_interval: float = 1.0,
        http: httpx.Client | None = None,
        retention_days: float | None = RETENTION_DAYS,
        alerts: Alerts | None = None,
    ) -> None:
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 500:
            raise ConfigurationError("batch", f"must be an integer from 1 to 500, got {batch!r}")
        if (
            not isinstance(poll_interval, int | float)
            or isinstance(poll_interval, bool)
            or not poll_interval > 0
            or poll_interval == float("inf")
        ):
            raise ConfigurationError(
                "poll_interval", f"must be a positive number of seconds, got {poll_interval!r}"
            )
        if retention_days is not None and (
            not isinstance(retention_days, int | float)
            or isinstance(retention_days, bool)
            or not 0 < retention_days < float("inf")
        ):
            raise ConfigurationError(
                "retention_days",
                f"must be a positive number of days, or None to keep records, got"
                f" {retention_days!r}",
            )
        self.desk = desk
        self.handlers = handlers
        self.batch = batch
        self.poll_interval = float(poll_interval)
        self.retention_days = None if retention_days is None else float(retention_days)
        self._unhandled: set[str] = set()
        self.alerts = alerts
        self._http = http
        self._owns_http = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- one round ------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim the due records (up to ``batch``), attempt each once, and record the outcomes.

        Returns:
            How many records were claimed and attempted.

        Raises:
            StoreError: Or the store's own errors, if claiming fails (nothing was claimed).
                A failure while attempting or recording one record is logged, not raised:
                the record's lease brings it back later.
        """
        records = self.desk.claim_due(limit=self.batch)
        for record in records:
            self._attempt(record)
        return len(records)

    def _attempt(self, record: ErrorRecord) -> None:
        handler = self.handlers.get(record.kind)
        tracing = _tracing.installed()
        if tracing is None:
            ok, detail, _ = self._try(record, handler, None)
            self._book(record, ok, detail)
            return
        # the record's trace, continued: a retry made later shows in the original trace
        with tracing.span(
            RETRY_SPAN,
            kind="client" if isinstance(handler, str) else "internal",
            attributes={
                "failsafe.errors.record_id": record.id,
                "failsafe.errors.kind": record.kind,
                "failsafe.errors.source": record.source,
                "failsafe.errors.attempt": len(record.attempts) + 1,
            },
            carrier=_parent(record),
        ) as span:
            ok, detail, error = self._try(record, handler, (tracing, span))
            after = self._book(record, ok, detail)
            span.set("failsafe.errors.outcome", "succeeded" if ok else "failed")
            if after is not None:
                span.set("failsafe.errors.status", after.status.value)
            if error is not None:
                span.failed(error)

    def _try(
        self,
        record: ErrorRecord,
        handler: Handler | str | None,
        traced: tuple[_tracing.Tracing, _tracing.Span] | None,
    ) -> tuple[bool, str, BaseException | str | None]:
        """Run the attempt: whether it worked, its detail, and what failed (for a span)."""
        try:
            return self._call(record, handler, traced)
        except Exception as exc:  # a handler's own failure: the attempt failed, go on
            return False, _describe(exc), exc

    def _book(self, record: ErrorRecord, ok: bool, detail: str) -> ErrorRecord | None:
        """Record the attempt; the record after it (``None`` if that failed: it is logged)."""
        # a detail carries exception messages and response bodies: redact like a report
        detail = self.desk.redactor.text(detail) or ""
        if len(detail) > _MAX_DETAIL:
            detail = detail[: _MAX_DETAIL - 3] + "..."
        try:
            after = self.desk.attempted(record, ok=ok, detail=detail)
            if self.alerts is not None and after.status is Status.NEEDS_REVIEW:
                self.alerts.escalated(after)  # its attempts ran out: a person must look
        except Exception:
            # the store failed (or a person deleted the record): the lease ends and the
            # record is claimed again; the other records of this round still get their turn
            _log.exception("could not record the attempt on error record %s", record.id)
            return None
        return after

    def _call(
        self,
        record: ErrorRecord,
        handler: Handler | str | None,
        traced: tuple[_tracing.Tracing, _tracing.Span] | None,
    ) -> tuple[bool, str, BaseException | str | None]:
        if handler is None:
            self._said_unhandled(record.kind)
            return False, f"no handler registered for kind {record.kind!r}", "no_handler"
        if isinstance(handler, str):
            return self._post(handler, record, traced)
        result = handler(record)
        return True, result if isinstance(result, str) and result else "ok", None

    def _said_unhandled(self, kind: str) -> None:
        """Log, once per kind, that records of ``kind`` have no handler to retry them."""
        with self._lock:
            if kind in self._unhandled or len(self._unhandled) >= UNHANDLED_KINDS_LOGGED:
                return
            self._unhandled.add(kind)
        _log.warning(
            "no handler for kind %r: its records fail every automatic attempt, then wait for"
            " review; register one (PUT /v1/handlers/%s, or --callback at start) or report"
            " it with action 'review'",
            kind,
            kind,
        )

    # -- retention --------------------------------------------------------------------------------
    def clean_up(self) -> int:
        """One retention pass: delete closed records older than ``retention_days``.

        At most `RETENTION_PER_PASS` batches of `RETENTION_BATCH`, each its own
        transaction; says how many in the log. Does nothing when ``retention_days`` is
        ``None``.

        Returns:
            How many records were deleted.
        """
        if self.retention_days is None:
            return 0
        older_than = self.retention_days * 86400.0
        deleted = 0
        for _ in range(RETENTION_PER_PASS):
            done = self.desk.delete_closed(older_than=older_than, limit=RETENTION_BATCH)
            deleted += done
            if done < RETENTION_BATCH:
                break
        if deleted:
            _log.info(
                "retention: deleted %d resolved or discarded records unchanged for %g days",
                deleted,
                self.retention_days,
            )
        return deleted

    def _post(
        self,
        url: str,
        record: ErrorRecord,
        traced: tuple[_tracing.Tracing, _tracing.Span] | None = None,
    ) -> tuple[bool, str, BaseException | str | None]:
        import httpx

        headers = {"Idempotency-Key": record.id}
        if traced is not None:
            tracing, span = traced
            tracing.inject(headers)  # the handler's spans join the retry's trace
            parts = urlsplit(url)
            span.set("http.request.method", "POST")
            if parts.hostname:
                span.set("server.address", parts.hostname)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            span.set("server.port", port)
        try:
            response = self._client().post(url, json={"record": record.to_json()}, headers=headers)
        except httpx.HTTPError as exc:
            return False, _describe(exc), exc
        if traced is not None:
            traced[1].set("http.response.status_code", response.status_code)
        if response.is_success:
            return True, f"HTTP {response.status_code}", None
        body = response.text[:_BODY_IN_DETAIL]
        return False, f"HTTP {response.status_code}: {body}", str(response.status_code)

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                import httpx

                self._http = httpx.Client(timeout=10.0)
                self._owns_http = True
            return self._http

    def close(self) -> None:
        """Stop the worker's thread (if started); close its HTTP client and its alerts'."""
        self.stop()
        if self.alerts is not None:
            self.alerts.close()
        with self._lock:
            client, owned = self._http, self._owns_http
            if owned:
                self._http, self._owns_http = None, False
        if owned and client is not None:
            client.close()

    # -- asyncio ----------------------------------------------------------------------------------
    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run rounds until ``stop`` is set, waiting ``poll_interval`` between them.

        Each round runs `run_once` in a thread (the store blocks). The wait is on the
        desk's clock, so a `FakeClock` drives it in tests; setting ``stop`` ends the wait
        at once (a round already running finishes first). A round that fails (the store is
        down) is logged and the next round tries again.
        """
        store_down = False
        clean_at = self.desk.clock.time()  # the first pass at once, then every RETENTION_EVERY
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
                if self.retention_days is not None and self.desk.clock.time() >= clean_at:
                    clean_at = self.desk.clock.time() + RETENTION_EVERY
                    await asyncio.to_thread(self.clean_up)
                if self.alerts is not None:
                    await asyncio.to_thread(self.alerts.run_once)
            except StoreUnavailable as exc:  # said once per outage, not once per round
                if not store_down:
                    _log.warning("retry worker: %s; trying again every round", exc)
                store_down = True
            except Exception:
                _log.exception("retry worker round failed; trying again next round")
            else:
                if store_down:
                    _log.warning("retry worker: the store is reachable again")
                store_down = False
            if stop.is_set():
                break
            await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        sleeper = asyncio.ensure_future(self.desk.clock.sleep_async(self.poll_interval))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    # -- a thread, for sync services -----------------------------------------------------------
    def start_thread(self) -> threading.Thread:
        """Run `run_forever` in a daemon thread of its own (with its own event loop).

        Returns:
            The started thread.

        Raises:
            RuntimeError: If the worker's thread is already running.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError("the retry worker's thread is already running")
            loop = asyncio.new_event_loop()
            stop = asyncio.Event()
            thread = threading.Thread(
                target=self._serve, args=(loop, stop), name="failsafe-retry-worker", daemon=True
            )
            self._thread, self._loop, self._stop = thread, loop, stop
            thread.start()
            return thread

    def _serve(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        try:
            loop.run_until_complete(self.run_forever(stop))
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread started by `start_thread` and wait for it (at most ``timeout`` s).

        The current round finishes first; the wait between rounds ends at once. Does
        nothing if no thread runs.
        """
        with self._lock:
            thread, loop, stop = self._thread, self._loop, self._stop
            self._thread = self._loop = self._stop = None
        if thread is None or loop is None or stop is None:
            return
        # RuntimeError: the loop is closed, so the thread has ended already
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)

    def __repr__(self) -> str:
        return (
            f"RetryWorker({self.handlers!r}, batch={self.batch}, "
            f"poll_interval={self.poll_interval:g})"
        )


def _parent(record: ErrorRecord) -> dict[str, str] | None:
    """The carrier naming the span a record's report was made in (``None``: no trace).

    A record with a trace id but no span id (its reporter gave only the trace) continues
    that trace under a stand-in parent id: the first 16 hex digits of the record's id.
    """
    if record.trace_id is None:
        return None
    span_id = record.span_id or record.id[:16]
    if not _SPAN_ID.fullmatch(span_id):
        return None
    return _tracing.traceparent(record.trace_id, span_id)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
