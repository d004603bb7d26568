"""Edit and retry: a reviewer corrects a record's payload; off unless the service allows it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe.errors import InvalidMove, InvalidReport
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk, payload_changes
from failsafe.errors.record import Action, ErrorRecord, Report, Status
from failsafe.errors.redact import REDACTED
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.worker import Handlers
from failsafe.testing import FakeClock

REVIEW = {"Authorization": "Bearer review"}


def test_payload_changes_name_each_place() -> None:
    old = {"sku": "A-1", "qty": 2, "items": [{"n": 1}, {"n": 2}], "gone": True}
    new = {"sku": "A-1", "qty": 3, "items": [{"n": 1}, {"n": 5}], "note": "x" * 100}
    assert payload_changes(old, new) == (
        f'gone: removed; items[1].n: 2 -> 5; note: added "{"x" * 56}...; qty: 2 -> 3'
    )
    assert payload_changes(old, old) == ""
    assert payload_changes([1, 2], [1, 2, 3]) == "(payload): [1,2] -> [1,2,3]"
    assert payload_changes({"a": 1}, {"a": 1.0}) == "a: 1 -> 1.0"
    many = payload_changes({str(n): n for n in range(30)}, {str(n): -n for n in range(1, 31)})
    assert many.endswith("; and 11 more")


def seeded(tmp_path: Path) -> tuple[ErrorDesk, ErrorRecord]:
    desk = ErrorDesk(SQLiteStore(tmp_path / "errors.db"), clock=FakeClock(wall_start=1.7e9))
    record, _ = desk.report(
        Report(
            kind="stock.decrement",
            action=Action.REVIEW,
            source="warehouse",
            payload={"sku": "A-1", "qty": -2},
            error_type="ValueError",
            error_message="quantity must be positive",
        ),
        actor="warehouse",
    )
    return desk, record


def test_edit_and_retry_saves_the_payload_with_who_why_and_the_changes(tmp_path: Path) -> None:
    desk, record = seeded(tmp_path)
    edited = desk.edit_and_retry(
        record.id[:12],
        {"sku": "A-1", "qty": 2, "password": "hunter2"},
        actor="maria",
        note="the shop sent a negative quantity",
    )
    assert edited.payload == {"sku": "A-1", "qty": 2, "password": REDACTED}
    assert edited.status is Status.PENDING_RETRY
    assert edited.next_attempt_at == desk.clock.time()  # due now
    entry, moved = edited.history[-2:]
    assert (entry.actor, entry.action) == ("maria", "payload edited")
    assert entry.note == (
        f'the shop sent a negative quantity (changes: password: added "{REDACTED}"; qty: -2 -> 2)'
    )
    assert (moved.action, moved.actor) == ("pending_retry", "maria")
    assert desk.get(record.id).payload == edited.payload  # stored, not only answered


@pytest.mark.parametrize(
    ("payload", "note", "field"),
    [
        ({"qty": float("nan")}, "why", "payload.qty"),
        ("not an object", "why", "payload"),
        ({"qty": 2}, "  ", "note"),
    ],
)
def test_a_bad_edit_changes_nothing(tmp_path: Path, payload: Any, note: str, field: str) -> None:
    desk, record = seeded(tmp_path)
    with pytest.raises(InvalidReport) as caught:
        desk.edit_and_retry(record.id, payload, actor="maria", note=note)
    assert caught.value.field == field
    assert desk.get(record.id) == record


def test_an_unchanged_payload_is_retried_saying_so(tmp_path: Path) -> None:
    desk, record = seeded(tmp_path)
    again = desk.edit_and_retry(record.id, record.payload, actor="maria", note="try once more")
    assert again.status is Status.PENDING_RETRY
    assert again.history[-2].note == "try once more (changes: none)"


def test_a_closed_or_running_record_is_not_edited(tmp_path: Path) -> None:
    desk, record = seeded(tmp_path)
    desk.resolve(record.id, actor="ops")
    with pytest.raises(InvalidMove):
        desk.edit_and_retry(record.id, {"qty": 1}, actor="maria", note="late")
    assert desk.get(record.id).payload == {"sku": "A-1", "qty": -2}


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://errors", headers=REVIEW
        ) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def app_of(desk: ErrorDesk, *, allow: bool) -> Any:
    return create_app(
        desk, tokens=Tokens(report="r", review="review"), handlers=Handlers(), allow_edits=allow
    )


def test_the_api_edits_only_when_allowed(tmp_path: Path) -> None:
    desk, record = seeded(tmp_path)
    body = {"payload": {"sku": "A-1", "qty": 2}, "note": "fixed the sign", "actor": "maria"}
    off = call(app_of(desk, allow=False), "POST", f"/v1/records/{record.id}/edit", json=body)
    assert off.status_code == 403
    assert "--allow-edits" in off.json()["error"]
    app = app_of(desk, allow=True)
    on = call(app, "POST", f"/v1/records/{record.id}/edit", json=body)
    assert on.status_code == 200, on.text
    assert (on.json()["payload"], on.json()["status"]) == (
        {"qty": 2, "sku": "A-1"},
        "pending_retry",
    )
    no_note = call(app, "POST", f"/v1/records/{record.id}/edit", json={"payload": {"qty": 3}})
    assert (no_note.status_code, no_note.json()["field"]) == (422, "note")
    desk.resolve(record.id, actor="ops")
    closed = call(app, "POST", f"/v1/records/{record.id}/edit", json={**body, "payload": {"q": 1}})
    assert (closed.status_code, closed.json()["field"]) == (409, "status")


def test_the_page_offers_the_form_only_when_allowed_and_keeps_a_refused_text(
    tmp_path: Path,
) -> None:
    desk, record = seeded(tmp_path)
    page = f"/review/records/{record.id}"
    assert 'class="edit-payload"' not in call(app_of(desk, allow=False), "GET", page).text
    app = app_of(desk, allow=True)
    shown = call(app, "GET", page).text
    assert 'class="edit-payload"' in shown
    assert "&quot;qty&quot;: -2" in shown  # the payload, pretty, escaped
    csrf = re.search(r'name="csrf" value="(\w+)"', shown)
    assert csrf is not None
    form = {"csrf": csrf.group(1), "actor": "maria", "note": "sign"}
    bad = call(app, "POST", f"{page}/edit", data={**form, "payload": '{"qty": 2'})
    assert bad.status_code == 422
    assert "the payload is not JSON" in bad.text
    assert "{&quot;qty&quot;: 2</textarea>" in bad.text  # kept, to be corrected
    good = call(app, "POST", f"{page}/edit", data={**form, "payload": '{"qty": 2, "sku": "A-1"}'})
    assert good.status_code == 303
    assert good.headers["location"] == f"{page}?done=edit"
    assert desk.get(record.id).payload == {"qty": 2, "sku": "A-1"}
    after = call(app, "GET", good.headers["location"]).text
    assert "Payload saved; queued for a retry now." in after
    assert "sign (changes: qty: -2 -&gt; 2)" in after
    off = call(app_of(desk, allow=False), "POST", f"{page}/edit", data={**form, "payload": "{}"})
    assert off.status_code == 403
