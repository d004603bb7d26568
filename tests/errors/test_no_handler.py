"""Retry reports for a kind without a handler: marked in the pages, refused when required."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Action, Report
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query
from failsafe.errors.worker import Handlers
from failsafe.testing import FakeClock

REVIEW = {"Authorization": "Bearer review"}


def app_with(tmp_path: Path, *, require: bool) -> tuple[Any, ErrorDesk, Handlers]:
    desk = ErrorDesk(SQLiteStore(tmp_path / "errors.db"), clock=FakeClock(wall_start=1.7e9))
    handlers = Handlers()
    handlers.register("stock.decrement", lambda record: None)
    app = create_app(
        desk,
        tokens=Tokens(report="report", review="review"),
        handlers=handlers,
        require_handlers=require,
    )
    return app, desk, handlers


def call(app: Any, method: str, path: str, body: Any = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://errors") as client:
            return await client.request(method, path, json=body, headers=REVIEW)

    return asyncio.run(go())


def report(kind: str, action: str = "retry") -> dict[str, Any]:
    return {"kind": kind, "action": action, "source": "shop", "payload": {"k": kind}}


def test_by_default_a_retry_report_without_a_handler_is_taken(tmp_path: Path) -> None:
    app, _, _ = app_with(tmp_path, require=False)
    assert call(app, "POST", "/v1/reports", report("price.lookup")).status_code == 201


def test_required_handlers_refuse_a_retry_report_naming_the_kind(tmp_path: Path) -> None:
    app, desk, _ = app_with(tmp_path, require=True)
    refused = call(app, "POST", "/v1/reports", report("price.lookup"))
    assert refused.status_code == 422
    body = refused.json()
    assert body["field"] == "kind"
    assert "no handler retries 'price.lookup'" in body["error"]
    assert "PUT /v1/handlers/price.lookup" in body["error"]
    # a review report, or a kind with a handler, is taken
    assert call(app, "POST", "/v1/reports", report("price.lookup", "review")).status_code == 201
    assert call(app, "POST", "/v1/reports", report("stock.decrement")).status_code == 201
    # a batch with one such report is refused whole, naming its place
    batch = {"reports": [{"report": report("stock.decrement")}, {"report": report("x.y")}]}
    whole = call(app, "POST", "/v1/reports/batch", batch)
    assert whole.status_code == 422
    assert whole.json()["field"] == "reports[1].kind"
    # registering a handler over HTTP makes the kind acceptable
    put = call(app, "PUT", "/v1/handlers/price.lookup", {"url": "http://127.0.0.1:9/retry"})
    assert put.status_code == 200
    later = {**report("price.lookup"), "payload": {"k": "later"}}
    assert call(app, "POST", "/v1/reports", later).status_code == 201
    assert desk.find(Query(statuses=())).total == 3  # the refused ones stored nothing


def test_the_pages_mark_records_whose_kind_has_no_handler(tmp_path: Path) -> None:
    app, desk, _ = app_with(tmp_path, require=False)
    orphan, _ = desk.report(
        Report(kind="price.lookup", action=Action.RETRY, source="shop"), actor="shop"
    )
    handled, _ = desk.report(
        Report(kind="stock.decrement", action=Action.RETRY, source="shop"), actor="shop"
    )
    reviewed, _ = desk.report(
        Report(kind="price.lookup", action=Action.REVIEW, source="shop", payload={"n": 2}),
        actor="shop",
    )
    listing = call(app, "GET", "/review/records").text
    assert listing.count(">no handler</span>") == 1  # the retry record, not the review one
    assert ">no handler</span>" in call(app, "GET", f"/review/records/{orphan.id}").text
    assert ">no handler</span>" not in call(app, "GET", f"/review/records/{handled.id}").text
    assert ">no handler</span>" not in call(app, "GET", f"/review/records/{reviewed.id}").text


@pytest.mark.parametrize("days", ["-1", "inf", "soon"])
def test_bad_retention_days_are_a_usage_error(
    days: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from failsafe.cli import main

    assert main(["errors", "serve", "--db", str(tmp_path / "e.db"), "--retention-days", days]) == 2
    assert "--retention-days" in capsys.readouterr().err
