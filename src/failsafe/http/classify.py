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

import re
from datetime import UTC, datetime
from typing import Final

from failsafe._extras import missing_extra

try:
    import httpx
except ImportError as exc:
    raise missing_extra("http", "failsafe.http", exc) from exc

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


# RFC 9110 section 5.6.7: the three forms of HTTP-date, with ASCII digits only ([0-9], never
# \d, which matches any Unicode digit: "Retry-After: \xb2" and "\u0661" were read as numbers)
_MONTHS: Final = (
    *("Jan", "Feb", "Mar", "Apr", "May", "Jun"),
    *("Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
)
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_TIME = "(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_DAY_NAME = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_HTTP_DATES: Final = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(f"{_DAY_NAME}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT"),
    # rfc850-date (obsolete): Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(
        "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
        f"(?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_TIME} GMT"
    ),
    # asctime-date (obsolete): Sun Nov  6 08:49:37 1994
    re.compile(f"{_DAY_NAME} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})"),
)


def _http_date(value: str, now: float) -> float | None:
    """The instant (seconds since the epoch) an RFC 9110 HTTP-date names, or ``None``."""
    for form in _HTTP_DATES:
        match = form.fullmatch(value)
        if match is not None:
            break
    else:
        return None
    year = int(match["year"])
    if year < 100:  # rfc850's two digits: the latest such year not over 50 years ahead
        this_year = datetime.fromtimestamp(now, UTC).year
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    try:
        when = datetime(
            year,
            _MONTHS.index(match["month"]) + 1,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            min(int(match["second"]), 59),  # 60: a leap second
            tzinfo=UTC,
        )
    except ValueError:  # 30 Feb, 25:00:00
        return None
    return when.timestamp()


def retry_after(response: httpx.Response, now: float) -> float | None:
    """Seconds the response's ``Retry-After`` header asks to wait, or ``None``.

    Accepts both forms of RFC 9110: delay-seconds (ASCII digits only) and an HTTP-date in
    any of its three formats (IMF-fixdate such as ``Sun, 06 Nov 1994 08:49:37 GMT``, and the
    obsolete RFC 850 and asctime ones), measured from ``now``, wall-clock seconds since the
    epoch. A date in the past gives 0. Anything else gives ``None``, so that the transport
    falls back to its backoff: a negative or fractional number, a date in another time
    zone, and digits outside ASCII (``"\u00b2"`` and ``"\u0661"``, "²" and Arabic-Indic
    one, pass `str.isdigit`, yet are not delay-seconds).
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if not value.isascii():
        return None
    if value.isdigit():
        return float(value)
    when = _http_date(value, now)
    return None if when is None else max(0.0, when - now)
