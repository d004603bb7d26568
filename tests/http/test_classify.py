"""The HTTP predicates and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from failsafe.http import (
    GATEWAY_STATUSES,
    RETRYABLE,
    THROTTLED,
    TRANSPORT_ERRORS,
    retry_after,
    status,
)

NOW = 1_700_000_000.0


def resp(code: int, **headers: str) -> httpx.Response:
    # as bytes: header values outside ASCII arrive from servers, if not from httpx's callers
    return httpx.Response(code, headers=[(k.encode(), v.encode()) for k, v in headers.items()])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        (format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), 30.0),
        (format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("+3", None),
        ("\u00b2", None),  # superscript two: str.isdigit() says yes, float() raises
        ("\u0661", None),  # Arabic-Indic one: float() reads 1.0
        ("\u0663\u0660", None),
        ("\uff11\uff12", None),  # fullwidth 12
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str, expected: float | None) -> None:
    """Both RFC 9110 forms are read; a past date is 0; garbage is ignored."""
    assert retry_after(resp(503, **{"Retry-After": value}), NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 15 Nov 2023 00:00:00 GMT", 1_700_006_400.0),  # IMF-fixdate
        ("Wednesday, 15-Nov-23 00:00:00 GMT", 1_700_006_400.0),  # RFC 850, two-digit year
        ("Wed Nov 15 00:00:00 2023", 1_700_006_400.0),  # asctime
        ("Fri Dec  1 00:00:00 2023", 1_701_388_800.0),  # asctime, a one-digit day
        ("Wed, 15 Nov 2023 00:00:60 GMT", 1_700_006_459.0),  # a leap second, read as :59
        ("Wed, 15 Nov 2023 00:00:00 +0000", None),  # HTTP dates are in GMT
        ("Wed, 15 Nov 2023 00:00:00 UTC", None),
        ("Wed, 30 Feb 2023 00:00:00 GMT", None),  # no such day
        ("Wed, 15 Nov 2023 25:00:00 GMT", None),
        ("Wed, \u0661\u0665 Nov 2023 00:00:00 GMT", None),  # digits of another script
        ("Wed, 15 Nov 2023 00:00:00 GMT trailing", None),
        ("15 Nov 2023", None),
    ],
)
def test_retry_after_dates_are_the_three_http_date_forms(
    value: str, expected: float | None
) -> None:
    """IMF-fixdate, RFC 850 and asctime dates are read, in ASCII and GMT only."""
    wait = retry_after(resp(503, **{"Retry-After": value}), NOW - 600)
    assert wait == (None if expected is None else expected - (NOW - 600))


def test_a_two_digit_year_is_the_latest_not_over_50_years_ahead() -> None:
    """RFC 9110: an RFC 850 year more than 50 years ahead means the century before."""
    in_2073 = datetime(2073, 1, 1, tzinfo=UTC).timestamp()
    ahead = retry_after(resp(503, **{"Retry-After": "Sunday, 01-Jan-73 00:00:00 GMT"}), NOW)
    assert ahead == in_2073 - NOW  # 2073: 50 years ahead, not more
    past = retry_after(resp(503, **{"Retry-After": "Tuesday, 01-Jan-74 00:00:00 GMT"}), NOW)
    assert past == 0  # 1974, not 2074


def test_no_header_means_no_hint() -> None:
    """Without Retry-After there is no hint."""
    assert retry_after(resp(503), NOW) is None


def test_default_classification() -> None:
    """Gateway errors and throttling with a hint are retryable; other statuses are answers."""
    assert RETRYABLE.matches_result(resp(503))
    assert GATEWAY_STATUSES.matches_result(resp(502))
    assert THROTTLED.matches_result(resp(429, **{"Retry-After": "1"}))
    assert not RETRYABLE.matches_result(resp(429))
    for code in (200, 201, 202, 400, 404, 409, 500):
        assert not RETRYABLE.matches_result(resp(code)), code
    assert RETRYABLE.matches_exception(httpx.ConnectError("refused"))
    assert RETRYABLE.matches_exception(httpx.ReadTimeout("slow"))
    assert not RETRYABLE.matches_exception(httpx.UnsupportedProtocol("ftp"))
    assert (RETRYABLE | status(500)).matches_result(resp(500))


def test_retryable_is_the_three_predicates_joined() -> None:
    """RETRYABLE (one test a side) answers as TRANSPORT_ERRORS | GATEWAY_STATUSES | THROTTLED."""
    joined = TRANSPORT_ERRORS | GATEWAY_STATUSES | THROTTLED
    assert str(RETRYABLE) == str(joined)
    values: list[object] = [None, 503, "503", object()]
    for code in (200, 204, 301, 404, 409, 429, 500, 502, 503, 504, 599):
        values += [resp(code), resp(code, **{"Retry-After": "1"})]
    for value in values:
        assert RETRYABLE.matches_result(value) == joined.matches_result(value), value
    request = httpx.Request("GET", "http://x")
    errors: list[BaseException] = [
        httpx.ConnectError("x"),
        httpx.PoolTimeout("x"),
        httpx.ReadError("x"),
        httpx.RemoteProtocolError("x"),
        httpx.UnsupportedProtocol("x"),
        httpx.HTTPStatusError("x", request=request, response=resp(503)),
        ConnectionError("x"),
        ValueError("x"),
    ]
    for error in errors:
        assert RETRYABLE.matches_exception(error) == joined.matches_exception(error), error
