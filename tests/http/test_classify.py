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
    return httpx.Response(code, headers=headers)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        (format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), 30.0),
        (format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str, expected: float | None) -> None:
    """Both RFC 9110 forms are read; a past date is 0; garbage is ignored."""
    assert retry_after(resp(503, **{"Retry-After": value}), NOW) == expected


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
