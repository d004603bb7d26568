"""Alerts: new groups, groups past a size and escalations reach a webhook, once, in the end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe import Backoff
from failsafe.errors.alerts import Alerts
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk, RetrySchedule
from failsafe.errors.record import Action, Report
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.worker import Handlers, RetryWorker
from failsafe.exceptions import ConfigurationError
from failsafe.testing import FakeClock
from tests.errors.test_worker import CallbackServer

URL = "http://hooks.internal/alerts"


class Hook:
    """A webhook behind httpx.MockTransport: keeps every alert, fails while told to."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failing = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.failing:
            return httpx.Response(500, text="down")
        self.received.append(json.loads(request.content))
        return httpx.Response(204)

    def events(self) -> list[str]:
        return [alert["event"] for alert in self.received]


def desk_at(path: Path) -> ErrorDesk:
    return ErrorDesk(
        SQLiteStore(path / "errors.db"),
        clock=FakeClock(wall_start=1.7e9),
        default_schedule=RetrySchedule(attempts=1, backoff=Backoff.constant(1.0)),
    )


def report(desk: ErrorDesk, n: int, kind: str = "stock.decrement") -> None:
    desk.report(
        Report(
            kind=kind,
            action=Action.REVIEW,
            source="warehouse",
            payload={"n": n},
            error_type="OperationalError",
            error_message=f"row {n} locked",
        ),
        actor="warehouse",
    )


@pytest.fixture
def hook() -> Hook:
    return Hook()


def alerts_of(desk: ErrorDesk, hook: Hook, **options: Any) -> Alerts:
    client = httpx.Client(transport=httpx.MockTransport(hook))
    return Alerts(desk, URL, http=client, **options)


def test_a_new_group_is_told_once_and_not_again_after_a_restart(tmp_path: Path, hook: Hook) -> None:
    desk = desk_at(tmp_path)
    report(desk, 1, kind="old.failure")  # before the alerts: not news
    desk.clock.advance(1)  # type: ignore[attr-defined]
    alerts = alerts_of(desk, hook)
    alerts.run_once()
    assert hook.received == []
    desk.clock.advance(1)  # type: ignore[attr-defined]
    report(desk, 2)
    report(desk, 3)  # the same group: one alert
    assert alerts.run_once() == 1
    (alert,) = hook.received
    assert alert["event"] == "group_new"
    assert alert["text"] == "new failure: stock.decrement · OperationalError: row 2 locked"
    assert alert["group"]["records"] == 2
    again = alerts_of(desk, hook)  # a restart: the outbox remembers what was said
    assert again.run_once() == 0
    assert len(hook.received) == 1


def test_a_group_crossing_each_threshold_is_told_once_each(tmp_path: Path, hook: Hook) -> None:
    desk = desk_at(tmp_path)
    alerts = alerts_of(desk, hook, thresholds=(3, 5))
    for n in range(4):
        report(desk, n)
    alerts.run_once()
    assert hook.events() == ["group_new", "group_grew"]
    assert hook.received[1]["threshold"] == 3
    assert hook.received[1]["text"] == "stock.decrement · OperationalError: 3 open records"
    alerts.run_once()
    assert len(hook.received) == 2
    report(desk, 4)
    alerts.run_once()
    assert hook.events() == ["group_new", "group_grew", "group_grew"]
    assert hook.received[2]["threshold"] == 5


def test_a_record_escalated_by_the_worker_is_told(tmp_path: Path, hook: Hook) -> None:
    desk = desk_at(tmp_path)
    alerts = alerts_of(desk, hook)
    handlers = Handlers()

    def broken(record: Any) -> None:
        raise RuntimeError("the stock database is down")

    handlers.register("price.lookup", broken)
    worker = RetryWorker(desk, handlers, alerts=alerts)
    record, _ = desk.report(
        Report(kind="price.lookup", action=Action.RETRY, source="shop"), actor="shop"
    )
    desk.clock.advance(5)  # type: ignore[attr-defined]
    assert worker.run_once() == 1  # one attempt allowed: it fails, the record goes to review
    alerts.deliver()
    escalations = [a for a in hook.received if a["event"] == "needs_review"]
    assert len(escalations) == 1
    assert escalations[0]["record"]["id"] == record.id
    assert "needs review after 1 automatic attempt" in escalations[0]["text"]


def test_a_failing_webhook_is_retried_with_backoff_and_shown_in_the_pages(
    tmp_path: Path, hook: Hook
) -> None:
    desk = desk_at(tmp_path)
    alerts = alerts_of(desk, hook)
    hook.failing = True
    desk.clock.advance(1)  # type: ignore[attr-defined]
    report(desk, 1)
    assert alerts.run_once() == 0
    state = alerts.status()
    assert (state.waiting, state.failing, state.last_error) == (1, 1, "HTTP 500")
    app = create_app(
        desk,
        tokens=Tokens(report="r", review="v"),
        handlers=Handlers(),
        alerts=alerts,
    )

    def page() -> str:
        async def go() -> str:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://e", headers={"authorization": "Bearer v"}
            ) as client:
                return (await client.get("/review/")).text

        return asyncio.run(go())

    assert "Alerts are not getting through to the webhook: 1 failed" in page()
    assert alerts.run_once() == 0  # not due yet: the backoff holds it
    hook.failing = False
    desk.clock.advance(3600)  # type: ignore[attr-defined]
    assert alerts.run_once() == 1
    assert alerts.status().waiting == 0
    assert "Alerts are not getting through" not in page()


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"url": "ftp://hooks/alerts"}, "alert_url"),
        ({"url": URL, "thresholds": (0,)}, "thresholds"),
        ({"url": URL, "thresholds": ()}, "thresholds"),
    ],
)
def test_bad_alert_options_are_refused(tmp_path: Path, options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Alerts(desk_at(tmp_path), **options)


@pytest.fixture(scope="module")
def webhook() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.stop()


@pytest.mark.real_time
def test_alerts_reach_a_real_webhook_after_it_fails_once(
    tmp_path: Path, webhook: CallbackServer
) -> None:
    desk = desk_at(tmp_path)
    alerts = Alerts(desk, f"{webhook.url}/retry/alerts?fail=1")
    try:
        desk.clock.advance(1)  # type: ignore[attr-defined]
        report(desk, 1)
        assert alerts.run_once() == 0  # 503 the first time
        desk.clock.advance(3600)  # type: ignore[attr-defined]
        assert alerts.run_once() == 1
    finally:
        alerts.close()
    calls = webhook.calls("alerts")
    assert len(calls) == 2
    assert calls[1]["body"]["event"] == "group_new"
