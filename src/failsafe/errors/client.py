"""`ErrorSink` and `AsyncErrorSink`: how a service reports a failure without ever losing it.

``report()`` tries one quick delivery to the Error-handling service (``POST /v1/reports``).
If that does not succeed (the service is down, slow, answers 5xx, or its circuit breaker
is open) the report goes to a local [`Spool`][failsafe.errors.spool.Spool] (an SQLite file
synced on every write) and ``report()`` returns; a background deliverer sends the spooled
reports later, oldest first, with backoff, and deletes each one only after the service
acknowledged it. Hence the guarantee: **once ``report()`` returns, the report is never
lost**, even if the process is killed the next instant.

A report made inside a span (once a tracing system is installed, see
``failsafe.opentelemetry.instrument()``) carries that span's trace and span ids, so its
record can be found from the trace and the service's retries of it join the trace; the
request to the service carries the W3C ``traceparent`` header, so the service's spans join
it too. Without a tracing system, nothing of this runs.

Each report gets an id (a uuid4 hex) which ``report()`` returns and sends as the
``Idempotency-Key`` header: when an answer is lost and the report is sent again, the
service counts it once. The report's id finds its record for seven days
(``failsafe errors show <report id>``).

A report the service refuses (a 4xx, such as 422 for a malformed report or 401 for a bad
token) raises [`ReportRejected`][failsafe.errors.client.ReportRejected] at once: retrying
would not help, and spooling it would keep garbage forever. Reports are validated locally
first, so a malformed report is refused without a network call.

Example:
    ```python
    from failsafe.errors.client import ErrorSink

    sink = ErrorSink("http://errors.internal:8080", source="warehouse")
    try:
        decrement(stock)
    except DatabaseError as exc:
        sink.report("stock.decrement", "retry", payload={"sku": "A1", "by": 2}, error=exc)
    ```
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import threading
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from failsafe import _tracing
from failsafe._extras import missing_extra

try:
    import httpx
except ImportError as exc:
    raise missing_extra("errors", "failsafe.errors", exc) from exc

from failsafe.backoff import Backoff
from failsafe.circuit_breaker import CircuitBreaker, CircuitState, ConsecutiveFailures
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Action, InvalidReport, Report
from failsafe.errors.redact import Redactor
from failsafe.errors.spool import Spool, SpooledReport
from failsafe.exceptions import CircuitOpenError, ConfigurationError, FailsafeError

__all__ = ["DEFAULT_SPOOL_PATH", "AsyncErrorSink", "ErrorSink", "ReportRejected", "SinkClosed"]

DEFAULT_SPOOL_PATH: Final = ".failsafe/errors-spool.db"
"""Where a sink spools reports unless told otherwise (relative to the working directory)."""

_log = logging.getLogger("failsafe.errors.client")
_MAX_TEXT = 64 * 1024
# Statuses that mean "try again later" rather than "this report is bad".
_TRANSIENT = frozenset({408, 425, 429})
# What the deliverer parks for good: the report itself is malformed or too big. Other 4xx
# from the deliverer (401, 403, 404) are configuration faults that a restart with the right
# token or URL fixes, so those reports wait, with backoff, instead of being parked.
_BAD_REPORT = frozenset({400, 413, 415, 422})
# the spool is delivered through POST /v1/reports/batch, at most this many bytes (the service
# reads a batch of up to 8 times its body limit, 2 MiB by default) or _BATCH_MOST reports
_BATCH_BYTES = 1024 * 1024
_BATCH_MOST = 500


class ReportRejected(FailsafeError, ValueError):
    """The report was refused and will not be spooled: sending it again would not help.

    Raised by ``report()`` when the report fails local validation (``status`` is ``None``)
    or the service answers a 4xx (422 malformed, 413 too big, 401 bad token, ...).

    Attributes:
        status: The service's HTTP status, or ``None`` for local validation.
        field: The field the service (or the validation) named, if any.
        message: The service's own message.
    """

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None):
        self.status = status
        self.field = field
        self.message = message
        where = "locally" if status is None else f"by the service (HTTP {status})"
        super().__init__(f"report rejected {where}: {message}")


class SinkClosed(FailsafeError, RuntimeError):
    """``report()`` or ``flush()`` was called on a closed sink."""


class _Unavailable(Exception):
    """A 5xx (or 408/429) answer: the service is unwell; counted by the circuit breaker."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        super().__init__(f"HTTP {response.status_code}: {response.text[:200]}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _service_message(response: httpx.Response) -> tuple[str, str | None]:
    """The service's error message and field, from its JSON answer or its text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        field = data.get("field")
        return data["error"], field if isinstance(field, str) else None
    return response.text[:200] or response.reason_phrase, None


def _rejection(response: httpx.Response) -> ReportRejected:
    message, field = _service_message(response)
    return ReportRejected(message, status=response.status_code, field=field)


def _clip(text: str, *, keep_end: bool = False) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    marker = "...[clipped]..."
    room = _MAX_TEXT - len(marker)
    return marker + text[-room:] if keep_end else text[:room] + marker


def _timeout(value: httpx.Timeout | float, option: str) -> tuple[httpx.Timeout, float]:
    """An ``httpx.Timeout`` and the total it allows (what the async sink enforces)."""
    if isinstance(value, httpx.Timeout):
        phases = (value.connect, value.write, value.read)
        return value, sum(p for p in phases if p is not None) or math.inf
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(option, f"must be a positive number of seconds, got {value!r}")
    return httpx.Timeout(float(value), connect=min(float(value), 0.5)), float(value)


@attrs.define
class _Pacing:
    """The deliverer's pure state: consecutive failures and the pause they impose."""

    backoff: Backoff
    rng: random.Random
    failures: int = 0
    previous: float = 0.0
    paused_until: float = -math.inf

    def delivered(self) -> bool:
        """Record a success; return whether it ends a run of failures."""
        recovered = self.failures > 0
        self.failures, self.previous, self.paused_until = 0, 0.0, -math.inf
        return recovered

    def failed(self, now: float) -> float:
        """Record a failure; return when the next attempt may happen."""
        self.failures += 1
        self.previous = self.backoff.delay(self.failures, self.previous, self.rng)
        self.paused_until = now + self.previous
        return self.paused_until


@attrs.frozen
class _Outcome:
    """How one delivery of a spooled report ended."""

    kind: Literal["delivered", "rejected", "failed", "open"]
    detail: str = ""
    wait: float = 0.0


class _SinkBase:
    """What both sinks share: options, building reports, and the pure delivery decisions."""

    _desk: ErrorDesk | None
    _spool: Spool | None

    def _setup(
        self,
        *,
        source: str,
        clock: Clock,
        max_payload_bytes: int,
        desk: ErrorDesk | None,
        redactor: Redactor | None = None,
    ) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ConfigurationError("source", f"must be a non-empty string, got {source!r}")
        self.source = source
        self._clock = clock
        self._max_payload_bytes = max_payload_bytes
        # the desk redacts what it stores; a remote sink redacts before spooling or sending
        self._redactor = redactor if redactor is not None else Redactor()
        self._desk = desk
        self._spool = None
        self._closed = False

    def _setup_remote(
        self,
        url: str | Sequence[str],
        *,
        token: str | None,
        spool: str | Path | Spool,
        timeout: httpx.Timeout | float,
        deliver_timeout: httpx.Timeout | float,
        breaker: CircuitBreaker | None,
        backoff: Backoff | None,
        rng: random.Random | None,
        batch: int,
        lease: float,
        poll_interval: float,
    ) -> None:
        given = [url] if isinstance(url, str) else list(url)
        if not given:
            raise ConfigurationError("url", "give at least one URL")
        for one in given:
            try:
                parsed = httpx.URL(one)
            except (httpx.InvalidURL, TypeError) as exc:
                raise ConfigurationError("url", f"is not a URL: {exc}") from None
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ConfigurationError("url", f"must be an http(s) URL with a host, got {one!r}")
        self.urls = tuple(one.rstrip("/") for one in given)
        self._active = 0  # the instance that answered last: tried first
        if token is None:
            token = Tokens.from_env(
                {k: v for k, v in os.environ.items() if k.startswith("FAILSAFE_ERRORS_REPORT_")}
            ).report
        elif not token.strip():
            raise ConfigurationError("token", "is empty")
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout, self._timeout_total = _timeout(timeout, "timeout")
        self._deliver_timeout, self._deliver_total = _timeout(deliver_timeout, "deliver_timeout")
        if batch < 1:
            raise ConfigurationError("batch", f"must be >= 1, got {batch!r}")
        if lease <= 0 or poll_interval <= 0:
            raise ConfigurationError("lease", "lease and poll_interval must be positive")
        self._batch, self._lease, self._poll_interval = batch, lease, poll_interval
        self._owns_spool = not isinstance(spool, Spool)
        self._spool = spool if isinstance(spool, Spool) else Spool(spool)
        self.breaker = (
            breaker
            if breaker is not None
            else CircuitBreaker(
                name="failsafe.errors.client",
                trip=ConsecutiveFailures(threshold=3),
                reset_timeout=5.0,
                clock=self._clock,
            )
        )
        self._pacing = _Pacing(
            backoff or Backoff.exponential(0.5, maximum=30.0, jitter="full"),
            rng if rng is not None else random.Random(),
        )

    @property
    def spool(self) -> Spool:
        """The sink's spool (raises `SinkClosed` in local mode, which has none)."""
        if self._spool is None:
            raise SinkClosed("a local sink has no spool")
        return self._spool

    # -- building a report ---------------------------------------------------------------
    def _build(
        self,
        kind: str,
        action: Action | str,
        *,
        payload: Any,
        error: BaseException | None,
        source: str | None,
        dedupe_key: str | None,
        correlation_id: str | None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        if self._closed:
            raise SinkClosed("this error sink is closed")
        if trace_id is None:
            if span_id is not None:
                raise ReportRejected("a span id needs its trace id", field="span_id")
            tracing = _tracing.installed()
            ids = None if tracing is None else tracing.current_ids()
            if ids is not None:
                trace_id, span_id = ids
        body: dict[str, Any] = {
            "kind": kind,
            "action": action.value if isinstance(action, Action) else action,
            "source": self.source if source is None else source,
        }
        if payload is not None:
            body["payload"] = payload
        if error is not None:
            body["error_type"] = type(error).__name__
            message = str(error)
            if message:
                body["error_message"] = _clip(message)
            body["traceback"] = _clip("".join(traceback.format_exception(error)), keep_end=True)
        if dedupe_key is not None:
            body["dedupe_key"] = dedupe_key
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        if trace_id is not None:
            body["trace_id"] = trace_id
            if span_id is not None:
                body["span_id"] = span_id
        try:
            json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ReportRejected(f"not JSON-serialisable: {exc}", field="payload") from None
        try:
            Report.from_json(body, max_payload_bytes=self._max_payload_bytes)
        except InvalidReport as exc:
            raise ReportRejected(exc.problem, field=exc.field) from None
        if self._desk is None:  # redacted before the spool or the network sees it
            body = self._redactor.body(body)
        return uuid.uuid4().hex, body

    @property
    def url(self) -> str:
        """The service instance the sink sends to first: the last one that answered."""
        return self.urls[self._active]

    @property
    def _shown_url(self) -> str:
        """`url` for logs and reprs, a password in it redacted."""
        return self._redactor.text(self.url) or self.url

    def _order(self) -> list[int]:
        """The instances in the order to try them: the last one that answered, then the rest."""
        first = self._active
        return [(first + n) % len(self.urls) for n in range(len(self.urls))]

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        """The response, or `_Unavailable` if the instance could not take the report now."""
        if response.status_code >= 500 or response.status_code in _TRANSIENT:
            raise _Unavailable(response)
        if response.status_code < 200 or 300 <= response.status_code < 400:
            raise _Unavailable(response)  # a redirect: a wrong URL, not a bad report
        return response

    @staticmethod
    def _batch_of(items: list[SpooledReport]) -> tuple[list[SpooledReport], bytes]:
        """The longest prefix of ``items`` that fits one batch request, and its body."""
        parts: list[bytes] = []
        size = 2
        taken: list[SpooledReport] = []
        for item in items[:_BATCH_MOST]:
            part = json.dumps(
                {"id": item.report_id, "report": item.body}, separators=(",", ":")
            ).encode()
            if taken and size + len(part) + 1 > _BATCH_BYTES:
                break
            taken.append(item)
            parts.append(part)
            size += len(part) + 1
        return taken, b'{"reports":[' + b",".join(parts) + b"]}"

    def _request_headers(
        self, report_id: str, body: dict[str, Any], *, spooled: bool
    ) -> dict[str, str]:
        """A report's request headers (``spooled``: sent later, from the spool).

        With a tracing system installed, the request carries a ``traceparent``: the current
        span's (``report()``'s own attempt), or the one the spooled report was made in.
        """
        headers = {**self._headers, "Idempotency-Key": report_id}
        tracing = _tracing.installed()
        if tracing is None:
            return headers
        if not spooled:
            tracing.inject(headers)
        elif isinstance(body.get("trace_id"), str) and isinstance(body.get("span_id"), str):
            headers.update(_tracing.traceparent(body["trace_id"], body["span_id"]))
        return headers

    @staticmethod
    def _judge(response: httpx.Response) -> _Outcome:
        """What a delivered answer means for a spooled report."""
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome("delivered")
        message, _ = _service_message(response)
        if status in _BAD_REPORT:
            return _Outcome("rejected", f"HTTP {status}: {message}")
        return _Outcome("failed", f"HTTP {status}: {message}")

    def _after_round(self, outcome: _Outcome, item: SpooledReport, now: float) -> float:
        """Book one spooled report's failure or refusal; return how long to pause."""
        spool = self.spool
        if outcome.kind == "rejected":
            _log.error(
                "the Error-handling service refused spooled report %s for good (%s); "
                "it stays parked in %s",
                item.report_id,
                outcome.detail,
                spool.path,
            )
            spool.reject(item.report_id, outcome.detail)
            return 0.0
        if outcome.kind == "open":
            return max(outcome.wait, 0.01)
        if self._pacing.failures == 0:
            _log.warning(
                "cannot deliver reports to %s (%s); they wait in %s",
                self._shown_url,
                outcome.detail,
                spool.path,
            )
        next_at = self._pacing.failed(now)
        spool.failed(item.report_id, next_at, error=outcome.detail)
        return next_at - now

    def _waiting(self, now: float) -> float:
        """Seconds the deliverer must still wait: backing off, or the circuit is open.

        Checked before touching the spool, so that while the service is down each
        report() waking the deliverer costs no spool write (which would slow report()).
        """
        return max(self._pacing.paused_until - now, self.breaker.retry_after)

    def _delivered(self) -> None:
        if self._pacing.delivered():
            _log.info("delivering spooled reports to %s again", self._shown_url)


class ErrorSink(_SinkBase):
    """Report failures to the Error-handling service; never lose one.

    Args:
        url: The service's base URL, such as ``http://127.0.0.1:8080``, or the URLs of
            several instances sharing one PostgreSQL store: each delivery tries the
            instance that answered last, then the others in turn, before it counts as
            failed (the report is then spooled, as with one instance).
        source: The reporting service's name (each report's default ``source``).
        token: The bearer token of the service's ``report`` door (default: the
            ``FAILSAFE_ERRORS_REPORT_TOKEN`` environment variable, or the file
            ``FAILSAFE_ERRORS_REPORT_TOKEN_FILE`` names; none: no ``Authorization``).
        spool: The spool file (or a [`Spool`][failsafe.errors.spool.Spool]) for reports
            that cannot be delivered at once.
        timeout: The one quick attempt inside ``report()``: a number (seconds per phase,
            connect capped at 0.5 s) or an ``httpx.Timeout``.
        deliver_timeout: Timeout of each delivery from the spool.
        clock: Time source (a ``FakeClock`` in tests).
        http: An ``httpx.Client`` to send with (tests pass one on a ``MockTransport``); the
            sink does not close a client it was given.
        breaker: The circuit breaker on the service (default: opens after 3 failures in a
            row, probes after 5 s). While it is open, ``report()`` spools without trying.
        backoff: The deliverer's pause after each failed delivery (default: exponential
            from 0.5 s to 30 s, full jitter).
        rng: Randomness for the backoff's jitter.
        background: Run the deliverer thread (started at construction, so reports left
            by an earlier process are delivered at once). ``False``: only ``flush()``
            delivers spooled reports (tests).
        batch: Reports the deliverer takes from the spool at a time.
        lease: Seconds other processes sharing the spool leave a claimed report alone.
        poll_interval: Seconds between looks at a spool with nothing due (other processes
            may add to it).
        max_payload_bytes: The payload size limit checked before sending (the service's).
        redactor: Removes secrets from every report before it is spooled or sent (default
            [`Redactor()`][failsafe.errors.Redactor]: the same rules as the service's), so
            a secret never reaches the spool file, the network or the service.

    Raises:
        ConfigurationError: On a bad URL, an empty token, or another bad option.

    Thread-safe: any number of threads may call ``report()`` at once.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        source: str,
        token: str | None = None,
        spool: str | Path | Spool = DEFAULT_SPOOL_PATH,
        timeout: httpx.Timeout | float = 2.0,
        deliver_timeout: httpx.Timeout | float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        http: httpx.Client | None = None,
        breaker: CircuitBreaker | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        background: bool = True,
        batch: int = 50,
        lease: float = 30.0,
        poll_interval: float = 5.0,
        max_payload_bytes: int = 64 * 1024,
        redactor: Redactor | None = None,
    ) -> None:
        self._setup(
            source=source,
            clock=clock,
            max_payload_bytes=max_payload_bytes,
            desk=None,
            redactor=redactor,
        )
        self._setup_remote(
            url,
            token=token,
            spool=spool,
            timeout=timeout,
            deliver_timeout=deliver_timeout,
            breaker=breaker,
            backoff=backoff,
            rng=rng,
            batch=batch,
            lease=lease,
            poll_interval=poll_interval,
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()
        self._round_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self.start()

    @classmethod
    def local(
        cls, desk: ErrorDesk, *, source: str, max_payload_bytes: int = 64 * 1024
    ) -> ErrorSink:
        """A sink with no service: each report goes straight into ``desk``'s store.

        For a service that embeds the Error-handling desk, and for tests. ``report()``
        returns once the store has it; a store failure raises from ``report()``.
        """
        sink = cls.__new__(cls)
        sink._setup(source=source, clock=desk.clock, max_payload_bytes=max_payload_bytes, desk=desk)
        sink._thread = None
        return sink

    # -- reporting ---------------------------------------------------------------------------
    def report(
        self,
        kind: str,
        action: Action | str,
        *,
        payload: Any = None,
        error: BaseException | None = None,
        source: str | None = None,
        dedupe_key: str | None = None,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> str:
        """Report one failure; return its id. Once this returns, the report is never lost.

        Args:
            kind: What failed, such as ``stock.decrement``.
            action: ``"retry"`` (the service retries it by its own logic) or ``"review"``.
            payload: JSON data needed to act on it.
            error: The exception: its class name, message and traceback are sent.
            source: Overrides the sink's ``source`` for this report.
            dedupe_key: Reports with the same key, while a record is open, are counted on
                one record (default: the service derives one).
            correlation_id: The request or message id that ties logs together.
            trace_id: The trace the failure happened in (32 lower-case hex digits). Default:
                the current span's, when a tracing system is installed and a span is current.
            span_id: The span that reported it (16 lower-case hex digits), with
                ``trace_id`` only. Default: the current span's, as ``trace_id``.

        Returns:
            The report's id (also its ``Idempotency-Key``). It is not the record's id (a
            repeat of an open failure joins that record), but it finds the record: the
            service, the review pages and ``failsafe errors show`` take it for seven days
            after the report is stored (`RECEIPT_SECONDS`).

        Raises:
            ReportRejected: If the report is malformed (a ``trace_id`` or ``span_id`` that
                is not a W3C id, a ``span_id`` without a ``trace_id``) or the service
                refuses it (4xx).
            SinkClosed: If the sink is closed.
            sqlite3.Error: If the report could be neither delivered nor spooled (the
                spool's disk is full or read-only): then it was not recorded.
        """
        report_id, body = self._build(
            kind,
            action,
            payload=payload,
            error=error,
            source=source,
            dedupe_key=dedupe_key,
            correlation_id=correlation_id,
            trace_id=trace_id,
            span_id=span_id,
        )
        if self._desk is not None:
            self._desk.report(Report.from_json(body), actor=body["source"], report_id=report_id)
            return report_id
        try:
            response = self.breaker.call(self._post, report_id, body, self._timeout)
        except CircuitOpenError:
            reason = "circuit open"
        except Exception as exc:  # any failure to deliver: spool it, never lose it
            reason = _describe(exc)
        else:
            if response.is_success:
                if self._pacing.failures:
                    self._delivered()  # the service is back: resume the deliverer now
                    self._wake.set()
                return report_id
            raise _rejection(response)
        self.spool.put(report_id, body, now=self._clock.time())
        _log.debug("report %s spooled (%s)", report_id, reason)
        self._wake.set()
        return report_id

    def _post(
        self,
        report_id: str,
        body: dict[str, Any],
        timeout: httpx.Timeout,
        spooled: bool = False,
    ) -> httpx.Response:
        content = json.dumps(body, separators=(",", ":")).encode()
        headers = self._request_headers(report_id, body, spooled=spooled)
        return self._failover("/v1/reports", content, headers, timeout)

    def _post_batch(self, content: bytes) -> httpx.Response:
        return self._failover("/v1/reports/batch", content, self._headers, self._deliver_timeout)

    def _failover(
        self, path: str, content: bytes, headers: dict[str, str], timeout: httpx.Timeout
    ) -> httpx.Response:
        """POST to each instance in turn until one takes it; raise the last failure."""
        failure: Exception | None = None
        for index in self._order():
            try:
                response = self._check(
                    self._http.post(
                        self.urls[index] + path, content=content, headers=headers, timeout=timeout
                    )
                )
            except (httpx.TransportError, _Unavailable) as exc:
                failure = exc
                continue
            self._active = index
            return response
        assert failure is not None
        raise failure

    # -- delivering the spool --------------------------------------------------------------
    def _send_batch(self, content: bytes, *, force: bool) -> _Outcome:
        try:
            if force and self.breaker.state is not CircuitState.CLOSED:
                response = self._post_batch(content)
                if response.is_success:
                    self.breaker.close()
            else:
                response = self.breaker.call(self._post_batch, content)
        except CircuitOpenError as exc:
            return _Outcome("open", wait=exc.retry_after)
        except Exception as exc:
            return _Outcome("failed", _describe(exc))
        return self._judge(response)

    def _send(self, item: SpooledReport, *, force: bool) -> _Outcome:
        try:
            if force and self.breaker.state is not CircuitState.CLOSED:
                response = self._post(item.report_id, item.body, self._deliver_timeout, True)
                if response.is_success:
                    self.breaker.close()  # the service answered: let report() try it again
            else:
                response = self.breaker.call(
                    self._post, item.report_id, item.body, self._deliver_timeout, True
                )
        except CircuitOpenError as exc:
            return _Outcome("open", wait=exc.retry_after)
        except Exception as exc:
            return _Outcome("failed", _describe(exc))
        return self._judge(response)

    def _round(self, *, force: bool, deadline: float | None) -> tuple[float | None, int]:
        """One delivery round: send what is due, oldest first, until something fails.

        Returns the seconds to pause before the next round (``None``: go on at once, more
        may be due; ``math.inf``: nothing is due) and how many reports were delivered.
        """
        spool = self.spool
        delivered = 0
        with self._round_lock:
            now = self._clock.time()
            if not force and (wait := self._waiting(now)) > 0:
                return wait, 0
            items = spool.due(math.inf if force else now, self._batch, lease=self._lease)
            if len(items) > 1:
                batch, content = self._batch_of(items)
                outcome = self._send_batch(content, force=force)
                if outcome.kind == "delivered":
                    spool.done_many(x.report_id for x in batch)
                    spool.release([x.report_id for x in items[len(batch) :]], now)
                    self._delivered()
                    more = len(items) == self._batch or len(batch) < len(items)
                    return (None if more else math.inf), len(batch)
                if outcome.kind != "rejected":  # down, or the circuit is open: as one report
                    now = self._clock.time()
                    pause = self._after_round(outcome, items[0], now)
                    rest = items[1:] if outcome.kind == "failed" else items
                    spool.release([x.report_id for x in rest], now + pause)
                    return pause, 0
                # refused as a whole (one report in it is bad): one at a time, below
            for i, item in enumerate(items):
                if self._stop.is_set() or (
                    deadline is not None and self._clock.monotonic() >= deadline
                ):
                    spool.release([x.report_id for x in items[i:]], now)
                    return 0.0, delivered
                outcome = self._send(item, force=force)
                if outcome.kind == "delivered":
                    spool.done(item.report_id)
                    self._delivered()
                    delivered += 1
                    continue
                now = self._clock.time()
                pause = self._after_round(outcome, item, now)
                if outcome.kind != "rejected":
                    rest = items[i + 1 :] if outcome.kind == "failed" else items[i:]
                    spool.release([x.report_id for x in rest], now + pause)
                    return pause, delivered
            return (None if len(items) == self._batch else math.inf), delivered

    def deliver_due(self) -> int:
        """Run one round of the deliverer now; return how many reports it delivered.

        Sends the reports that are due (their backoff has passed), oldest first, until one
        fails; does nothing while the deliverer is pausing after a failure. This is what
        the background thread does; call it yourself with ``background=False``.
        """
        if self._closed:
            raise SinkClosed("this error sink is closed")
        if self._desk is not None:
            return 0
        return self._round(force=False, deadline=None)[1]

    def flush(self, timeout: float = 10.0) -> int:
        """Deliver every spooled report now, oldest first; return how many are left.

        Ignores the backoff schedule and an open circuit breaker (a success closes it).
        Stops at the first delivery that fails (the service is still down) or once
        ``timeout`` seconds have passed (checked between deliveries). Reports the service
        refuses for good are parked, not counted as left (see `Spool.rejected`).

        Raises:
            SinkClosed: If the sink is closed.
        """
        if self._closed:
            raise SinkClosed("this error sink is closed")
        if self._desk is not None:
            return 0
        deadline = self._clock.monotonic() + timeout
        while True:
            pause, _ = self._round(force=True, deadline=deadline)
            if pause is not None or self._clock.monotonic() >= deadline:
                return len(self.spool)

    def start(self) -> None:
        """Start the deliverer thread (done at construction unless ``background=False``)."""
        if self._desk is not None or (self._thread is not None and self._thread.is_alive()):
            return
        if self._closed:
            raise SinkClosed("this error sink is closed")
        self._thread = threading.Thread(
            target=self._run, name="failsafe-errors-deliverer", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                pause, _ = self._round(force=False, deadline=None)
                if pause is None:
                    continue
                if math.isinf(pause):
                    upcoming = self.spool.next_due()
                    if upcoming is not None:
                        pause = upcoming - self._clock.time()
            except Exception:
                _log.exception("the error-report deliverer failed; it goes on")
                pause = self._poll_interval
            # waiting on the event, not the clock: report() wakes it when it spools
            self._wake.wait(min(max(pause, 0.0), self._poll_interval))

    def close(self, timeout: float | None = None) -> None:
        """Stop the deliverer and release the spool and the HTTP client.

        Spooled reports stay in the spool file: the next sink on it delivers them.

        Args:
            timeout: Seconds to wait for a delivery in flight (default: the delivery
                timeout); the deliverer is a daemon thread and never blocks exit.
        """
        if self._closed:
            return
        self._closed = True
        if self._desk is not None:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._deliver_total if timeout is None else timeout)
        # a deliverer still stuck in a request keeps its client and spool; it is a daemon
        # thread, and its report stays spooled (claimed for ``lease`` seconds) if it dies
        if self._round_lock.acquire(timeout=0.1):
            try:
                if self._owns_spool:
                    self.spool.close()
                if self._owns_http:
                    self._http.close()
            finally:
                self._round_lock.release()

    def __enter__(self) -> ErrorSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "local" if self._desk is not None else self._shown_url
        return f"ErrorSink({where!r}, source={self.source!r})"


class AsyncErrorSink(_SinkBase):
    """The asyncio twin of [`ErrorSink`][failsafe.errors.client.ErrorSink].

    Same options and guarantee; ``http`` is an ``httpx.AsyncClient``, ``timeout`` also
    bounds the whole quick attempt (on the clock), and the deliverer is an asyncio task,
    started by ``start()``, ``async with``, or the first ``report()``; it first delivers
    the reports an earlier process left in the spool. Spool writes run in a worker thread
    so that a disk sync never blocks the event loop. Use ``aclose()`` to stop it.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        source: str,
        token: str | None = None,
        spool: str | Path | Spool = DEFAULT_SPOOL_PATH,
        timeout: httpx.Timeout | float = 2.0,
        deliver_timeout: httpx.Timeout | float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        http: httpx.AsyncClient | None = None,
        breaker: CircuitBreaker | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        background: bool = True,
        batch: int = 50,
        lease: float = 30.0,
        poll_interval: float = 5.0,
        max_payload_bytes: int = 64 * 1024,
        redactor: Redactor | None = None,
    ) -> None:
        self._setup(
            source=source,
            clock=clock,
            max_payload_bytes=max_payload_bytes,
            desk=None,
            redactor=redactor,
        )
        self._setup_remote(
            url,
            token=token,
            spool=spool,
            timeout=timeout,
            deliver_timeout=deliver_timeout,
            breaker=breaker,
            backoff=backoff,
            rng=rng,
            batch=batch,
            lease=lease,
            poll_interval=poll_interval,
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient()
        self._background = background
        self._round_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def local(
        cls, desk: ErrorDesk, *, source: str, max_payload_bytes: int = 64 * 1024
    ) -> AsyncErrorSink:
        """A sink with no service: each report goes straight into ``desk``'s store."""
        sink = cls.__new__(cls)
        sink._setup(source=source, clock=desk.clock, max_payload_bytes=max_payload_bytes, desk=desk)
        sink._background = False
        sink._task = None
        return sink

    async def report(
        self,
        kind: str,
        action: Action | str,
        *,
        payload: Any = None,
        error: BaseException | None = None,
        source: str | None = None,
        dedupe_key: str | None = None,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> str:
        """Report one failure; return its id. Once this returns, the report is never lost.

        See [`ErrorSink.report`][failsafe.errors.client.ErrorSink.report]. If the
        coroutine is cancelled, the report may or may not have been recorded.

        Raises:
            ReportRejected: If the report is malformed or the service refuses it (4xx).
            SinkClosed: If the sink is closed.
        """
        report_id, body = self._build(
            kind,
            action,
            payload=payload,
            error=error,
            source=source,
            dedupe_key=dedupe_key,
            correlation_id=correlation_id,
            trace_id=trace_id,
            span_id=span_id,
        )
        if self._desk is not None:
            desk = self._desk
            await asyncio.to_thread(
                desk.report, Report.from_json(body), actor=body["source"], report_id=report_id
            )
            return report_id
        if self._background:
            self.start()
        try:
            response = await self.breaker.call_async(self._post, report_id, body, self._timeout)
        except CircuitOpenError:
            reason = "circuit open"
        except Exception as exc:  # any failure to deliver: spool it, never lose it
            reason = _describe(exc)
        else:
            if response.is_success:
                if self._pacing.failures:
                    self._delivered()
                    self._wake.set()
                return report_id
            raise _rejection(response)
        await asyncio.to_thread(self.spool.put, report_id, body, now=self._clock.time())
        _log.debug("report %s spooled (%s)", report_id, reason)
        self._wake.set()
        return report_id

    async def _post(
        self,
        report_id: str,
        body: dict[str, Any],
        limits: httpx.Timeout,
        spooled: bool = False,
    ) -> httpx.Response:
        total = self._timeout_total if limits is self._timeout else self._deliver_total
        content = json.dumps(body, separators=(",", ":")).encode()
        headers = self._request_headers(report_id, body, spooled=spooled)
        return await self._failover("/v1/reports", content, headers, limits, total)

    async def _post_batch(self, content: bytes) -> httpx.Response:
        return await self._failover(
            "/v1/reports/batch",
            content,
            self._headers,
            self._deliver_timeout,
            self._deliver_total,
        )

    async def _failover(
        self,
        path: str,
        content: bytes,
        headers: dict[str, str],
        limits: httpx.Timeout,
        total: float,
    ) -> httpx.Response:
        """POST to each instance in turn until one takes it; raise the last failure."""
        failure: Exception | None = None
        for index in self._order():
            try:
                async with self._clock.timeout_async(total):
                    response = await self._http.post(
                        self.urls[index] + path, content=content, headers=headers, timeout=limits
                    )
                self._check(response)
            except (httpx.TransportError, _Unavailable, TimeoutError) as exc:
                failure = exc
                continue
            self._active = index
            return response
        assert failure is not None
        raise failure

    async def _send_batch(self, content: bytes, *, force: bool) -> _Outcome:
        try:
            if force and self.breaker.state is not CircuitState.CLOSED:
                response = await self._post_batch(content)
                if response.is_success:
                    self.breaker.close()
            else:
                response = await self.breaker.call_async(self._post_batch, content)
        except CircuitOpenError as exc:
            return _Outcome("open", wait=exc.retry_after)
        except Exception as exc:
            return _Outcome("failed", _describe(exc))
        return self._judge(response)

    async def _send(self, item: SpooledReport, *, force: bool) -> _Outcome:
        try:
            if force and self.breaker.state is not CircuitState.CLOSED:
                response = await self._post(item.report_id, item.body, self._deliver_timeout, True)
                if response.is_success:
                    self.breaker.close()
            else:
                response = await self.breaker.call_async(
                    self._post, item.report_id, item.body, self._deliver_timeout, True
                )
        except CircuitOpenError as exc:
            return _Outcome("open", wait=exc.retry_after)
        except Exception as exc:
            return _Outcome("failed", _describe(exc))
        return self._judge(response)

    async def _round(self, *, force: bool, deadline: float | None) -> tuple[float | None, int]:
        """One delivery round; see `ErrorSink._round`."""
        spool = self.spool
        delivered = 0
        async with self._round_lock:
            now = self._clock.time()
            if not force and (wait := self._waiting(now)) > 0:
                return wait, 0
            items = await asyncio.to_thread(
                spool.due, math.inf if force else now, self._batch, lease=self._lease
            )
            if len(items) > 1:
                batch, content = self._batch_of(items)
                outcome = await self._send_batch(content, force=force)
                if outcome.kind == "delivered":
                    await asyncio.to_thread(spool.done_many, [x.report_id for x in batch])
                    await asyncio.to_thread(
                        spool.release, [x.report_id for x in items[len(batch) :]], now
                    )
                    self._delivered()
                    more = len(items) == self._batch or len(batch) < len(items)
                    return (None if more else math.inf), len(batch)
                if outcome.kind != "rejected":
                    now = self._clock.time()
                    pause = await asyncio.to_thread(self._after_round, outcome, items[0], now)
                    rest = items[1:] if outcome.kind == "failed" else items
                    await asyncio.to_thread(spool.release, [x.report_id for x in rest], now + pause)
                    return pause, 0
            for i, item in enumerate(items):
                if self._stopping or (deadline is not None and self._clock.monotonic() >= deadline):
                    await asyncio.to_thread(spool.release, [x.report_id for x in items[i:]], now)
                    return 0.0, delivered
                outcome = await self._send(item, force=force)
                if outcome.kind == "delivered":
                    await asyncio.to_thread(spool.done, item.report_id)
                    self._delivered()
                    delivered += 1
                    continue
                now = self._clock.time()
                pause = await asyncio.to_thread(self._after_round, outcome, item, now)
                if outcome.kind != "rejected":
                    rest = items[i + 1 :] if outcome.kind == "failed" else items[i:]
                    await asyncio.to_thread(spool.release, [x.report_id for x in rest], now + pause)
                    return pause, delivered
            return (None if len(items) == self._batch else math.inf), delivered

    async def deliver_due(self) -> int:
        """Run one round of the deliverer now; return how many reports it delivered.

        See [`ErrorSink.deliver_due`][failsafe.errors.client.ErrorSink.deliver_due].
        """
        if self._closed:
            raise SinkClosed("this error sink is closed")
        if self._desk is not None:
            return 0
        return (await self._round(force=False, deadline=None))[1]

    # the same signature as ErrorSink.flush; the deadline is checked between deliveries
    async def flush(self, timeout: float = 10.0) -> int:  # noqa: ASYNC109
        """Deliver every spooled report now; return how many are left.

        See [`ErrorSink.flush`][failsafe.errors.client.ErrorSink.flush].
        """
        if self._closed:
            raise SinkClosed("this error sink is closed")
        if self._desk is not None:
            return 0
        deadline = self._clock.monotonic() + timeout
        while True:
            pause, _ = await self._round(force=True, deadline=deadline)
            if pause is not None or self._clock.monotonic() >= deadline:
                return await asyncio.to_thread(len, self.spool)

    def start(self) -> None:
        """Start the deliverer task on the running loop (idempotent).

        Raises:
            RuntimeError: If no event loop is running.
        """
        if self._desk is not None or (self._task is not None and not self._task.done()):
            return
        if self._closed:
            raise SinkClosed("this error sink is closed")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="failsafe-errors-deliverer"
        )

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                pause, _ = await self._round(force=False, deadline=None)
                if pause is None:
                    continue
                if math.isinf(pause):
                    upcoming = await asyncio.to_thread(self.spool.next_due)
                    if upcoming is not None:
                        pause = upcoming - self._clock.time()
            except Exception:
                _log.exception("the error-report deliverer failed; it goes on")
                pause = self._poll_interval
            wait = min(max(pause, 0.0), self._poll_interval)
            try:
                async with self._clock.timeout_async(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def aclose(self) -> None:
        """Stop the deliverer and release the spool and the HTTP client.

        A delivery in flight is cancelled; its report stays spooled and is sent again
        by the next sink (the service counts it once).
        """
        if self._closed:
            return
        self._closed = True
        if self._desk is not None:
            return
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        async with self._round_lock:
            if self._owns_spool:
                self.spool.close()
            if self._owns_http:
                await self._http.aclose()

    async def __aenter__(self) -> AsyncErrorSink:
        if self._background:
            self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = "local" if self._desk is not None else self._shown_url
        return f"AsyncErrorSink({where!r}, source={self.source!r})"
