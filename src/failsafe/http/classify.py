"""Which HTTP outcomes are worth another attempt, and how long a server asks us to wait.

The defaults of [`ResilientTransport`][failsafe.http.ResilientTransport], as core predicates
that you can combine with ``|``, ``&`` and ``~``:

- [`TRANSPORT_ERRORS`][failsafe.http.classify.TRANSPORT_ERRORS]: connection refused or
  reset, DNS failure, timeouts, a server that closed the connection mid-response.
- [`GATEWAY_STATUSES`][failsafe.http.classify.GATEWAY_STATUSES]: 502, 503, 504.
- [`THROTTLED`][failsafe.http.classify.THROTTLED]: 429 with a ``Retry-After`` header.
- [`RETRYABLE`][failsafe.http.classify.RETRYABLE]: all three. Any other status (a 404, a
  409) is an answer and is returned at once.
"""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from failsafe.predicates import Predicate, exception, result

__all__ = [
    "CONNECT_ERRORS",
    "GATEWAY_STATUSES",
    "RETRYABLE",
    "THROTTLED",
    "TRANSPORT_ERRORS",
    "retry_after",
    "status",
]

_CONNECT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_TRANSPORT = (
    *_CONNECT,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

CONNECT_ERRORS: Final[Predicate] = exception(*_CONNECT)
"""Errors raised before the request was sent (safe to resend any request)."""

TRANSPORT_ERRORS: Final[Predicate] = exception(*_TRANSPORT)
"""Connection refused / reset, DNS failure, timeouts, a connection closed mid-response."""


def status(*codes: int) -> Predicate:
    """Match responses whose status code is one of ``codes``."""
    wanted = frozenset(codes)
    return result(
        lambda r: isinstance(r, httpx.Response) and r.status_code in wanted,
        "HTTP " + "/".join(str(c) for c in sorted(wanted)),
    )


GATEWAY_STATUSES: Final[Predicate] = status(502, 503, 504)
"""502 Bad Gateway, 503 Service Unavailable, 504 Gateway Timeout."""

THROTTLED: Final[Predicate] = result(
    lambda r: isinstance(r, httpx.Response) and r.status_code == 429 and "retry-after" in r.headers,
    "HTTP 429 with Retry-After",
)
"""429 Too Many Requests, when the server says when to come back."""

_GATEWAY: Final = frozenset({502, 503, 504})


def _retryable_exception(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSPORT)


def _gateway_result(response: object) -> bool:
    """`GATEWAY_STATUSES`'s test, bare (what the transport's breakers count as failures)."""
    return isinstance(response, httpx.Response) and response.status_code in _GATEWAY


def _retryable_result(response: object) -> bool:
    """``GATEWAY_STATUSES or THROTTLED`` in one test: every response is judged by it."""
    if not isinstance(response, httpx.Response):
        return False
    code = response.status_code
    return code in _GATEWAY or (code == 429 and "retry-after" in response.headers)


# TRANSPORT_ERRORS | GATEWAY_STATUSES | THROTTLED, each side one function rather than a chain
RETRYABLE: Final[Predicate] = Predicate(
    _retryable_exception,
    _retryable_result,
    str(TRANSPORT_ERRORS | GATEWAY_STATUSES | THROTTLED),
)
"""The transport's default: transport errors, 502/503/504, and 429 with Retry-After."""


def retry_after(response: httpx.Response, now: float) -> float | None:
    """Seconds the response's ``Retry-After`` header asks to wait, or ``None``.

    Accepts both forms of RFC 9110: delay-seconds and an HTTP-date (measured from ``now``,
    wall-clock seconds since the epoch). A date in the past gives 0; an unreadable header
    gives ``None``.
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    delay = when.timestamp() - now
    return max(0.0, delay) if math.isfinite(delay) else None
