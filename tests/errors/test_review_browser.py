"""The review pages in a real headless Chromium, against a real uvicorn on loopback.

The server is this module's ``review_app`` factory: the review routes mounted at /review over
the SQLite file named by ``REVIEW_TEST_DB``, with the review token from the environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Action, Report, Status
from failsafe.errors.review import review_routes
from failsafe.errors.review_dlq import DeadLetters
from failsafe.errors.sqlite import SQLiteStore

TOKEN = "browser-review-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def review_app() -> Starlette:
    """The app uvicorn serves (``--factory``): review pages over the test's SQLite file."""
    desk = ErrorDesk(SQLiteStore(os.environ["REVIEW_TEST_DB"]))
    edits = os.environ.get("REVIEW_TEST_EDITS") == "1"
    broker = os.environ.get("REVIEW_TEST_DLQ_BROKER")
    letters = None
    if broker:
        letters = DeadLetters(broker, [os.environ["REVIEW_TEST_DLQ_QUEUE"]])
    routes = review_routes(desk, tokens=Tokens.from_env(), allow_edits=edits, dead_letters=letters)
    return Starlette(routes=[Mount("/review", routes=routes)])


class ReviewServer:
    """A uvicorn process serving `review_app` on a loopback socket bound here (``--fd``)."""

    def __init__(
        self, db: Path, *, edits: bool = False, dlq: tuple[str, str] | None = None
    ) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env = {**os.environ, "REVIEW_TEST_DB": str(db), "FAILSAFE_ERRORS_REVIEW_TOKEN": TOKEN}
        env["REVIEW_TEST_EDITS"] = "1" if edits else "0"
        if dlq is not None:
            env["REVIEW_TEST_DLQ_BROKER"], env["REVIEW_TEST_DLQ_QUEUE"] = dlq
        env.pop("FAILSAFE_ERRORS_REVIEW_TOKEN_FILE", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.errors.test_review_browser:review_app",
                "--factory",
                "--fd",
                str(sock.fileno()),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            pass_fds=[sock.fileno()],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        sock.close()  # the child holds the listening socket now
        pause = threading.Event()
        for _ in range(500):
            try:
                httpx.get(f"{self.url}/review/login", timeout=1.0)
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"uvicorn exited with {self.process.returncode}") from None
                pause.wait(0.02)
        raise RuntimeError("the review server did not start")

    def stop(self) -> None:
        """Stop the server and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


def _log_in(browser: Any, server: ReviewServer, path: str) -> Any:
    """A new page of ``browser``, logged in with the review token and loaded at ``path``."""
    page = browser.new_context().new_page()
    page.goto(f"{server.url}/review/login?next={path}")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}{path}")  # the page loaded, not only asked for
    return page


@pytest.fixture
def seeded_db(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A store file with a stock decrement to retry and two lost orders to review."""
    path = tmp_path / "errors.db"
    store = SQLiteStore(path)
    desk = ErrorDesk(store)
    ids: dict[str, str] = {}
    for name, kind, action, payload, error in [
        ("stock", "stock.decrement", Action.RETRY, {"sku": "A-1", "by": 2}, "OperationalError"),
        ("lost", "order.not_found", Action.REVIEW, {"orderId": "o-42"}, "OrderNotFound"),
        ("lost2", "order.not_found", Action.REVIEW, {"orderId": "o-43"}, "OrderNotFound"),
    ]:
        record, _ = desk.report(
            Report(
                kind=kind,
                action=action,
                source="warehouse",
                payload=payload,
                error_type=error,
                error_message=f"{error} while handling {payload}",
            ),
            actor="warehouse",
        )
        ids[name] = record.id
    store.close()
    return path, ids


@pytest.mark.browser
@pytest.mark.real_time
def test_a_reviewer_logs_in_and_resolves_a_record_with_a_note(
    seeded_db: tuple[Path, dict[str, str]],
) -> None:
    """In Chromium: log in, see the groups, open a lost order, resolve it; the store agrees."""
    from playwright.sync_api import sync_playwright

    db, ids = seeded_db
    server = ReviewServer(db)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{server.url}/review/")
                assert page.url.startswith(f"{server.url}/review/login")

                page.fill("input[name=token]", "wrong")
                page.click("button[type=submit]")
                page.locator("main", has_text="not the review token").wait_for()

                page.fill("input[name=token]", TOKEN)
                page.click("button[type=submit]")
                page.wait_for_url(f"{server.url}/review/")  # the groups page loaded, not only asked
                cookie = next(c for c in context.cookies() if c["name"] == "failsafe_review")
                assert cookie["httpOnly"] is True
                assert cookie["sameSite"] == "Strict"

                # the failure groups: the two lost orders differ only in a quoted id
                rows = page.locator("table.groups tbody tr")
                assert rows.count() == 2
                assert page.locator("table.groups svg.chart").count() == 2
                lost_group = rows.filter(has_text="order.not_found")
                assert "OrderNotFound" in lost_group.inner_text()
                lost_group.locator("a").first.click()
                page.wait_for_url("**/review/groups/v1-*")
                assert "2 (2 open)" in page.inner_text("main")
                assert page.locator("svg.chart").count() == 2
                headers = page.locator("h2.group").all_inner_texts()
                assert headers == ["order.not_found · OrderNotFound (2 records, 2 reports)"]

                page.click(f"a[href='/review/records/{ids['lost']}']")
                page.wait_for_url(f"{server.url}/review/records/{ids['lost']}")
                assert '"orderId": "o-42"' in page.inner_text("pre.payload")

                form = page.locator("form.action-resolve")
                form.locator("input[name=actor]").fill("Maria (warehouse)")
                form.locator("textarea[name=note]").fill("Order o-42 found in the old system")
                form.locator("button[type=submit]").click()
                page.wait_for_url(f"{server.url}/review/records/{ids['lost']}?done=resolve")

                assert "Resolved." in page.inner_text("[role=status]")
                last = page.locator("table.history tbody tr").last.inner_text()
                assert "Maria (warehouse)" in last
                assert "resolved" in last
                assert "Order o-42 found in the old system" in last
                assert "it is closed" in page.inner_text("main")

                page.goto(f"{server.url}/review/records")
                assert page.locator("h2.group").all_inner_texts() == [
                    "order.not_found · OrderNotFound (1 record, 1 report)",
                    "stock.decrement · OperationalError (1 record, 1 report)",
                ]
            finally:
                browser.close()
    finally:
        server.stop()

    store = SQLiteStore(db)
    try:
        record = store.get(ids["lost"])
        assert record.status is Status.RESOLVED
        assert record.history[-1].actor == "Maria (warehouse)"
        assert record.history[-1].note == "Order o-42 found in the old system"
        assert store.get(ids["lost2"]).status is Status.NEEDS_REVIEW
    finally:
        store.close()


@pytest.mark.browser
@pytest.mark.real_time
def test_a_reviewer_resolves_a_whole_group_after_seeing_the_count(
    seeded_db: tuple[Path, dict[str, str]],
) -> None:
    """In Chromium: a group action first shows how many records it changes; Confirm does it."""
    from playwright.sync_api import sync_playwright

    db, ids = seeded_db
    server = ReviewServer(db)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = _log_in(browser, server, "/review/")
                page.locator("table.groups tbody tr", has_text="order.not_found").locator(
                    "a"
                ).first.click()
                group_url = page.url
                # these records need review: retry is offered, as are resolve and discard
                assert page.locator("form.group-retry").count() == 1
                form = page.locator("form.group-resolve")
                assert "(2 records)" in form.inner_text()
                form.locator("input[name=actor]").fill("Maria (warehouse)")
                form.locator("textarea[name=note]").fill("both orders were test orders")
                form.locator("button[type=submit]").click()

                assert "This will change 2 records" in page.inner_text("[role=alert]")
                page.locator("form.confirm-resolve button[type=submit]").click()
                page.wait_for_url(f"{group_url}?done=resolve&changed=2")
                assert "Resolved 2 records." in page.inner_text("[role=status]")
                assert "nothing to act on" in page.inner_text("main")
            finally:
                browser.close()
    finally:
        server.stop()

    store = SQLiteStore(db)
    try:
        for name in ("lost", "lost2"):
            record = store.get(ids[name])
            assert record.status is Status.RESOLVED
            assert (record.history[-1].actor, record.history[-1].note) == (
                "Maria (warehouse)",
                "both orders were test orders",
            )
        assert store.get(ids["stock"]).status is Status.PENDING_RETRY
    finally:
        store.close()


@pytest.mark.browser
@pytest.mark.real_time
@pytest.mark.parametrize("edits", [True, False], ids=["allowed", "off"])
def test_a_reviewer_corrects_a_payload_and_retries_only_where_allowed(
    seeded_db: tuple[Path, dict[str, str]], edits: bool
) -> None:
    """In Chromium: with edits allowed, fix the payload and retry; off, no form at all."""
    from playwright.sync_api import sync_playwright

    db, ids = seeded_db
    server = ReviewServer(db, edits=edits)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = _log_in(browser, server, f"/review/records/{ids['lost']}")
                form = page.locator("form.edit-payload")
                if not edits:
                    assert form.count() == 0
                    assert "Edit the payload" not in page.inner_text("main")
                    return
                form.locator("textarea[name=payload]").fill('{"orderId": "o-42-B"}')
                form.locator("textarea[name=note]").fill("the shop sent the old order id")
                form.locator("input[name=actor]").fill("Maria (warehouse)")
                form.locator("button[type=submit]").click()
                page.wait_for_url(f"{server.url}/review/records/{ids['lost']}?done=edit")
                assert "queued for a retry now" in page.inner_text("[role=status]")
                assert '"orderId": "o-42-B"' in page.inner_text("pre.payload")
                history = page.locator("table.history tbody tr").all_inner_texts()
                assert any("payload edited" in row and "o-42-B" in row for row in history)
            finally:
                browser.close()
    finally:
        server.stop()

    store = SQLiteStore(db)
    try:
        record = store.get(ids["lost"])
        if edits:
            assert record.payload == {"orderId": "o-42-B"}
            assert record.status is Status.PENDING_RETRY
        else:
            assert record.payload == {"orderId": "o-42"}
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "rabbitmq"])
def parked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, list[str]]]:
    """A broker URL, a queue and the ids of its two parked messages (SQLite or RabbitMQ)."""
    import asyncio
    import uuid

    from failsafe.queue import Envelope
    from failsafe.queue.connect import open_broker
    from failsafe.queue.envelope import ErrorInfo

    if request.param == "sqlite":
        url, queue = f"sqlite:///{tmp_path / 'queue.db'}", "orders"
    else:
        url, queue = "amqp://guest:guest@127.0.0.1:5672/", f"browser-{uuid.uuid4().hex[:8]}"
    broker = open_broker(url)
    ids = [f"{queue}-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        broker.declare(queue)
        for message_id in ids:
            broker.publish(queue, Envelope(body=b'{"orderId": "o-42"}', id=message_id))
            [delivery] = broker.receive(queue, wait=5.0)
            error = ErrorInfo(type="OrderNotFound", message="no order o-42", at=0.0)
            broker.park(delivery, attrs.evolve(delivery.message, last_error=error))
    finally:
        broker.close()
    yield url, queue, ids
    if request.param == "rabbitmq":
        from tests.queue.test_rabbitmq_broker import _delete_queues

        asyncio.run(_delete_queues([queue, f"{queue}.parked", f"{queue}.delays"]))


@pytest.mark.browser
@pytest.mark.real_time
def test_a_reviewer_replays_and_purges_dead_letters(
    seeded_db: tuple[Path, dict[str, str]], parked: tuple[str, str, list[str]]
) -> None:
    """In Chromium, on SQLite and RabbitMQ: replay a checked one, purge another from its page."""
    from playwright.sync_api import sync_playwright

    from failsafe.queue.connect import open_broker

    db, _ = seeded_db
    url, queue, ids = parked
    server = ReviewServer(db, dlq=(url, queue))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = _log_in(browser, server, "/review/dlq")
                page.click(f"a[href='/review/dlq/{queue}']")
                assert "OrderNotFound: no order o-42" in page.inner_text("table.letters")
                page.check(f"input[value='{ids[0]}']")
                page.click("form.chosen button[value=replay]")
                assert "This will replay 1 checked dead letter." in page.inner_text("[role=alert]")
                page.click("form.confirm-replay button[type=submit]")
                page.wait_for_url(f"{server.url}/review/dlq/{queue}?done=replay&n=1")
                assert "Replayed 1 dead letters." in page.inner_text("[role=status]")
                page.click(f"a[href='/review/dlq/{queue}/messages/{ids[1]}']")
                assert '"orderId": "o-42"' in page.inner_text("pre.body")
                page.click("form.one-purge button")
                assert "deleted for good" in page.inner_text("[role=alert]")
                page.click("form.confirm-purge button[type=submit]")
                page.wait_for_url(f"{server.url}/review/dlq/{queue}?done=purge&n=1")
                assert "No dead letters match." in page.inner_text("main")
            finally:
                browser.close()
    finally:
        server.stop()

    broker = open_broker(url)
    try:
        assert broker.dead_letters(queue) == []
        back = broker.receive(queue, wait=5.0)  # the replayed one is in the work queue again
        assert [d.message.id for d in back] == [ids[0]]
        broker.ack(back[0])
    finally:
        broker.close()


@pytest.mark.browser
@pytest.mark.real_time
def test_a_reviewer_replays_all_that_match_a_filter_and_purges_the_rest(
    seeded_db: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """In Chromium: filter by error type, replay all that match (counted first), then purge all."""
    from playwright.sync_api import sync_playwright

    from failsafe.queue import Envelope
    from failsafe.queue.connect import open_broker
    from failsafe.queue.envelope import ErrorInfo

    url, queue = f"sqlite:///{tmp_path / 'queue.db'}", "orders"
    errors = {"m-lost-1": "OrderNotFound", "m-lost-2": "OrderNotFound", "m-bad": "BadPayload"}
    broker = open_broker(url)
    try:
        broker.declare(queue)
        for message_id, error_type in errors.items():
            broker.publish(queue, Envelope(body=b"{}", id=message_id))
            [delivery] = broker.receive(queue, wait=5.0)
            error = ErrorInfo(type=error_type, message="parked by the test", at=0.0)
            broker.park(delivery, attrs.evolve(delivery.message, last_error=error))
    finally:
        broker.close()

    db, _ = seeded_db
    server = ReviewServer(db, dlq=(url, queue))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = _log_in(browser, server, f"/review/dlq/{queue}")

                page.fill("form.filters input[name=error_type]", "OrderNotFound")
                page.click("form.filters button[type=submit]")
                page.wait_for_url("**error_type=OrderNotFound*")
                assert page.locator("table.letters tbody tr").count() == 2
                page.click("form.matching-replay button[type=submit]")
                alert = page.locator("[role=alert]")
                alert.wait_for()
                assert "This will replay 2 parked dead letters of this queue" in alert.inner_text()
                page.click("form.confirm-replay button[type=submit]")
                page.wait_for_url(f"{server.url}/review/dlq/{queue}?done=replay&n=2")

                # no filter: the purge of everything asks to be told "all" first, then counts
                page.click("form.matching-purge button[type=submit]")
                page.locator("[role=alert]", has_text="No filter narrows this purge").wait_for()
                page.click("form.confirm-purge button[type=submit]")
                page.locator("[role=alert]", has_text="This will purge 1 parked").wait_for()
                page.click("form.confirm-purge button[type=submit]")
                page.wait_for_url(f"{server.url}/review/dlq/{queue}?done=purge&n=1")
                assert "No dead letters match." in page.inner_text("main")
            finally:
                browser.close()
    finally:
        server.stop()

    broker = open_broker(url)
    try:
        assert broker.dead_letters(queue) == []
        back = broker.receive(queue, limit=10, wait=5.0)  # the two replayed, queued again
        assert sorted(d.message.id for d in back) == ["m-lost-1", "m-lost-2"]
        for delivery in back:
            broker.ack(delivery)
    finally:
        broker.close()
