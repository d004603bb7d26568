"""Redaction: every secret the issue found stored in clear, and a property over generated ones.

The property runs a report carrying a generated secret in every place a report has text
through a spooling `ErrorSink` (the spool file's bytes, the body sent) and through the
service (the stored record, the API's answer, the review page): the secret appears nowhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failsafe.errors import ErrorDesk, ErrorSink, Handlers, SQLiteStore
from failsafe.errors.auth import Tokens
from failsafe.errors.record import Report, default_dedupe_key
from failsafe.errors.redact import REDACTED, Redactor
from failsafe.errors.service import create_app
from failsafe.testing import FakeClock

CARD = "4111111111111111"  # a Luhn-valid test card number


def test_each_leak_the_issue_found_is_redacted() -> None:
    """Every leak the probe found, in the field it was found in.

    Bearer tokens, card numbers as numbers, key=value in payload strings, header lists,
    URL passwords, a correlation id.
    """
    report = Report(
        kind="stock.decrement",
        action="retry",
        source="warehouse",
        payload={
            "dsn": "host=db password=pg-secret-1 port=5432",
            "headers": [["Authorization", "Bearer hdr-secret-2"], ["Accept", "json"]],
            "card": int(CARD),
            "url": "postgresql://app:url-secret-3@db.internal/shop",
            "note": "called with Authorization: Bearer note-secret-4",
        },
        error_type="OperationalError",
        error_message="401 from stock: Authorization: Bearer msg-secret-5",
        traceback='Traceback...\n  headers={"Authorization": "Bearer tb-secret-6"}\nError',
        correlation_id="password=corr-secret-7",
    )
    clean = Redactor().report(report)
    text = json.dumps([clean.payload, clean.error_message, clean.traceback, clean.correlation_id])
    for n in range(1, 8):
        assert f"secret-{n}" not in text, (n, text)
    assert CARD not in text
    assert clean.payload["headers"] == [["Authorization", REDACTED], ["Accept", "json"]]
    assert clean.payload["card"] == REDACTED
    assert clean.payload["url"] == f"postgresql://app:{REDACTED}@db.internal/shop"
    assert clean.payload["dsn"] == f"host=db password={REDACTED} port=5432"
    assert clean.error_message == f"401 from stock: Authorization: Bearer {REDACTED}"


def test_a_digit_run_inside_an_id_is_not_a_card_number() -> None:
    """A uuid hex holding a Luhn-valid 13-digit run stays whole (it broke the retry key)."""
    key = "5df390bf4738437283204a68e2a8257e"
    assert Redactor().value({"key": key, "note": f"retry of {key}"}) == {
        "key": key,
        "note": f"retry of {key}",
    }
    assert Redactor().text(f"card {CARD}, card:{CARD}.") == f"card {REDACTED}, card:{REDACTED}."


def test_the_default_dedupe_key_is_the_redacted_reports() -> None:
    """A reader of the record cannot recover a 3-digit CVV by hashing 1,000 guesses."""
    reports = [
        Report(kind="pay", action="review", source="shop", payload={"cvv": f"{n:03d}", "o": 1})
        for n in (123, 456)
    ]
    keys = {Redactor().report(r).dedupe_key for r in reports}
    assert len(keys) == 1  # the CVV is not in the key any more
    clean = Redactor().report(reports[0])
    assert clean.dedupe_key == default_dedupe_key(clean)
    given_key = Report(kind="k", action="review", source="s", dedupe_key="order-9 token=abc")
    assert Redactor().report(given_key).dedupe_key == f"order-9 token={REDACTED}"


# -- the property -------------------------------------------------------------------------------

_SECRET = st.text(
    alphabet="abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=24
)
_PLACES: list[Callable[[str], dict[str, Any]]] = [
    lambda s: {"error_message": f"upstream said Authorization: Bearer {s}"},
    lambda s: {"traceback": f"Traceback:\n  connect('postgresql://app:{s}@db/x')\nError"},
    lambda s: {"payload": {"config": f"host=db password={s} port=1"}},
    lambda s: {"payload": {"headers": [["Authorization", f"Bearer {s}"]]}},
    lambda s: {"payload": {"nested": [{"api-key": s}]}},
    lambda s: {"payload": {"text": f"token: {s}"}},
    lambda s: {"correlation_id": f"secret={s}"},
    lambda s: {"error_message": f"X-Api-Key: {s}"},
]


def _report(secret: str, place: int) -> dict[str, Any]:
    fields: dict[str, Any] = _PLACES[place](secret)
    return {"kind": "stock.decrement", "action": "review", **fields}


class _Down(httpx.BaseTransport):
    """The service is down: every report goes to the spool; what was sent is kept."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.read())
        return httpx.Response(503)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secret=_SECRET, place=st.integers(0, len(_PLACES) - 1))
def test_no_secret_reaches_the_spool_file_or_the_network(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, secret: str, place: int
) -> None:
    caplog.set_level(logging.DEBUG)
    spool = tmp_path / f"spool-{uuid.uuid4().hex}.db"  # one per example
    down = _Down()
    sink = ErrorSink(
        "http://errors.test",
        source="warehouse",
        http=httpx.Client(transport=down),
        spool=spool,
        background=False,
        clock=FakeClock(),
    )
    try:
        fields = _report(secret, place)
        sink.report(
            fields["kind"],
            fields["action"],
            payload=fields.get("payload"),
            error=_error(fields),
            correlation_id=fields.get("correlation_id"),
        )
        assert len(sink.spool) == 1
    finally:
        sink.close()
    files = [p for p in tmp_path.iterdir() if p.name.startswith(spool.name)]
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path.name
    assert all(secret.encode() not in body for body in down.sent)
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600
    assert caplog.records  # the sink did log (the spooling), and no secret in it
    assert secret not in caplog.text


def _error(fields: dict[str, Any]) -> BaseException | None:
    message = fields.get("error_message") or fields.get("traceback")
    if message is None:
        return None
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secret=_SECRET, place=st.integers(0, len(_PLACES) - 1))
def test_no_secret_reaches_the_store_the_api_or_the_review_page(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, secret: str, place: int
) -> None:
    caplog.set_level(logging.DEBUG)
    name = f"store-{uuid.uuid4().hex}.db"  # one per example
    store = SQLiteStore(str(tmp_path / name))
    app = create_app(ErrorDesk(store), tokens=Tokens(), handlers=Handlers())

    async def main() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            body = {**_report(secret, place), "source": "warehouse"}
            created = await c.post("/v1/reports", json=body)
            assert created.status_code == 201, created.text
            record_id = created.json()["record"]["id"]
            pages = [created.text]
            pages.append((await c.get(f"/v1/records/{record_id}")).text)
            pages.append((await c.get("/v1/records", params={"status": "open"})).text)
            pages.append((await c.get(f"/review/records/{record_id}")).text)
            pages.append((await c.get("/review/")).text)
            return pages

    try:
        pages = asyncio.run(main())
    finally:
        store.close()
    for page in pages:
        assert secret not in page
    assert secret not in caplog.text
    for path in tmp_path.iterdir():
        if path.name.startswith(name):
            assert secret.encode() not in path.read_bytes()
