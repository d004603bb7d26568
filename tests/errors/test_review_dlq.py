"""The console's dead-letter pages: list, show, replay and purge, with dry runs and CSRF."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from failsafe.errors import ErrorDesk, Handlers, SQLiteStore
from failsafe.errors.auth import Tokens
from failsafe.errors.review_dlq import DeadLetters
from failsafe.errors.service import create_app
from failsafe.queue import Envelope
from failsafe.queue.connect import open_broker
from failsafe.testing import FakeClock
from tests.queue.test_cli import NOT_FOUND, Seeded
from tests.queue.test_rabbitmq_broker import _delete_queues

REVIEW = {"authorization": "Bearer review"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seeded(tmp_path: Path, clock: FakeClock) -> Seeded:
    return Seeded(tmp_path / "queue.db", clock)


class Console:
    """The service's app with the dead-letter pages of the seeded file's ``orders``."""

    def __init__(self, tmp_path: Path, broker: str, clock: FakeClock, queue: str) -> None:
        self.letters = DeadLetters(broker, [queue], clock=clock)
        self.queue = queue
        desk = ErrorDesk(SQLiteStore(tmp_path / "errors.db"), clock=clock)
        self.app = create_app(
            desk,
            tokens=Tokens(report="r", review="review"),
            handlers=Handlers(),
            dead_letters=self.letters,
        )

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.call("GET", path, params=params) if params else self.call("GET", path)

    def post(self, path: str, data: list[tuple[str, str]]) -> httpx.Response:
        form = {"content-type": "application/x-www-form-urlencoded"}
        return self.call("POST", path, content=urlencode(data), headers=form)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://e", headers=REVIEW
            ) as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(go())

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="(\w+)"', self.get(f"/review/dlq/{self.queue}").text)
        assert found is not None
        return found.group(1)


@pytest.fixture
def console(tmp_path: Path, seeded: Seeded, clock: FakeClock) -> Iterator[Console]:
    made = Console(tmp_path, f"sqlite:///{seeded.path}", clock, "orders")
    yield made
    made.letters.close()


def ids_on(page: str) -> list[str]:
    return re.findall(r'name="id" value="([0-9a-f]+)" form="chosen"', page)


def test_the_index_counts_each_queue_and_the_groups_page_links_it(console: Console) -> None:
    """The DLQ index counts each queue's parked and delayed; the groups page links to it."""
    page = console.get("/review/dlq")
    assert page.status_code == 200
    assert re.search(r'orders</a></td><td class="num">3</td><td>1</td>', page.text)
    assert 'href="/review/dlq">dead letters</a>' in console.get("/review/").text


def test_a_queue_lists_its_dead_letters_with_filters(console: Console, seeded: Seeded) -> None:
    """A queue's page lists its dead letters oldest first, and each filter narrows them."""
    page = console.get("/review/dlq/orders")
    assert ids_on(page.text) == [seeded.old, seeded.mid, seeded.late, seeded.new]
    assert f"{NOT_FOUND}: {NOT_FOUND} for {seeded.old}" in page.text
    parked = console.get("/review/dlq/orders", place="parked", error_type="OrderNotFound")
    assert ids_on(parked.text) == [seeded.old]
    older = console.get("/review/dlq/orders", older_than="90m")
    assert ids_on(older.text) == [seeded.old, seeded.mid]
    by_prefix = console.get("/review/dlq/orders", message=seeded.new[:10])
    assert ids_on(by_prefix.text) == [seeded.new]
    bad = console.get("/review/dlq/orders", older_than="soon")
    assert bad.status_code == 400
    assert "is not an age" in bad.text
    unknown = console.get("/review/dlq/payments")
    assert unknown.status_code == 404
    assert "no queue &#x27;payments&#x27; on this console (its queues: orders)" in unknown.text


def test_one_dead_letter_shows_its_headers_body_and_error(console: Console, seeded: Seeded) -> None:
    """One dead letter's page shows its headers, its body (escaped) and its last error."""
    page = console.get(f"/review/dlq/orders/messages/{seeded.old}")
    assert page.status_code == 200
    assert "<th>tenant</th><td>acme</td>" in page.text
    assert "&quot;orderId&quot;: &quot;o-1&quot;" in page.text  # pretty JSON, escaped
    assert f"{NOT_FOUND} for {seeded.old}" in page.text
    binary = console.get(f"/review/dlq/orders/messages/{seeded.new}")
    assert "\\xff\\x00binary" in binary.text
    short = console.get(f"/review/dlq/orders/messages/{seeded.mid[:12]}")
    assert f"<small>{seeded.mid}</small>" in short.text
    assert console.get("/review/dlq/orders/messages/nope").status_code == 404


def test_a_dead_letters_secrets_never_reach_a_page(tmp_path: Path, clock: FakeClock) -> None:
    """Secret headers, body fields and error text are redacted on the list and the message."""
    import attrs

    from failsafe.queue import ErrorInfo

    url = f"sqlite:///{tmp_path / 'secrets.db'}"
    broker = open_broker(url)
    try:
        broker.declare("payments")
        body = b'{"orderId": "o-9", "password": "hunter2", "card": "4111 1111 1111 1111"}'
        headers = {"Authorization": "Bearer s3cr3t-token", "tenant": "acme"}
        broker.publish("payments", Envelope(body=body, id="m-secret", headers=headers))
        [delivery] = broker.receive("payments")
        error = ErrorInfo(type="LoginFailed", message="login with password=hunter2", at=0.0)
        broker.park(delivery, attrs.evolve(delivery.message, last_error=error))
    finally:
        broker.close()
    console = Console(tmp_path, url, clock, "payments")
    try:
        listed = console.get("/review/dlq/payments").text
        shown = console.get("/review/dlq/payments/messages/m-secret").text
    finally:
        console.letters.close()
    for page in (listed, shown):
        assert "hunter2" not in page
        assert "LoginFailed" in page
    assert "s3cr3t-token" not in shown
    assert "4111 1111 1111 1111" not in shown
    assert "&quot;orderId&quot;: &quot;o-9&quot;" in shown  # what is not secret stays
    assert "<th>tenant</th><td>acme</td>" in shown


def test_replaying_the_checked_ones_asks_first_then_moves_them(
    console: Console, seeded: Seeded
) -> None:
    """Replaying the checked ones shows the count first; Confirm moves them to the queue."""
    csrf = console.csrf()
    chosen = [("csrf", csrf), ("id", seeded.old), ("id", seeded.new)]
    ask = console.post("/review/dlq/orders/replay", chosen)
    assert ask.status_code == 200
    assert "This will replay 2 checked dead letters." in ask.text
    assert seeded.places() == {
        seeded.old: "parked",
        seeded.mid: "parked",
        seeded.late: "delayed",
        seeded.new: "parked",
    }
    done = console.post("/review/dlq/orders/replay", [*chosen, ("confirm", "yes")])
    assert done.status_code == 303
    assert done.headers["location"] == "/review/dlq/orders?done=replay&n=2"
    assert seeded.places() == {seeded.mid: "parked", seeded.late: "delayed"}
    assert "Replayed 2 dead letters." in console.get(done.headers["location"]).text


def test_purging_all_that_match_counts_first_and_needs_a_filter_or_all(
    console: Console, seeded: Seeded
) -> None:
    """Purging all that match needs a filter or a second 'all', and counts before it acts."""
    csrf = console.csrf()
    unfiltered = console.post("/review/dlq/orders/purge", [("csrf", csrf), ("matching", "yes")])
    assert "No filter narrows this purge" in unfiltered.text
    assert 'name="all" value="yes"' in unfiltered.text
    counted = console.post(
        "/review/dlq/orders/purge", [("csrf", csrf), ("matching", "yes"), ("all", "yes")]
    )
    assert "This will purge" in counted.text
    assert 'name="all" value="yes"' in counted.text  # carried to the confirmation
    form = [("csrf", csrf), ("matching", "yes"), ("error_type", "OrderNotFound")]
    ask = console.post("/review/dlq/orders/purge", form)
    assert "This will purge 1 parked dead letter of this queue" in ask.text  # not the delayed
    assert "deleted for good" in ask.text
    done = console.post("/review/dlq/orders/purge", [*form, ("confirm", "yes")])
    assert done.status_code == 303
    assert "n=1" in done.headers["location"]
    assert seeded.old not in seeded.places()
    assert seeded.late in seeded.places()


def test_a_replay_of_all_goes_at_the_asked_rate(
    console: Console, seeded: Seeded, clock: FakeClock
) -> None:
    """A replay of all that match is paced at the rate asked (on the fake clock)."""
    broker = open_broker(f"sqlite:///{seeded.path}", clock=clock)
    try:
        for n in range(300):
            broker.publish("orders", Envelope(body=b"{}", id=f"m-{n}"))
            [delivery] = broker.receive("orders")
            broker.park(delivery, delivery.message)
    finally:
        broker.close()
    form = [("csrf", console.csrf()), ("matching", "yes"), ("all", "yes")]
    ask = console.post("/review/dlq/orders/replay", form)
    assert "This will replay 303 parked dead letters" in ask.text
    before = clock.monotonic()
    done = console.post("/review/dlq/orders/replay", [*form, ("confirm", "yes"), ("rate", "100")])
    assert done.status_code == 303
    assert "n=303" in done.headers["location"]
    # 100 a second, the first batch paid as it starts: about 2 s of (fake) pauses
    assert 1.5 <= clock.monotonic() - before <= 3.5
    bad = console.post("/review/dlq/orders/replay", [*form, ("confirm", "yes"), ("rate", "0")])
    assert bad.status_code == 400
    assert "rate must be" in bad.text


def test_the_pages_need_the_token_and_the_csrf(console: Console, seeded: Seeded) -> None:
    """Without the review token or the CSRF value the pages and actions are refused."""

    async def anonymous() -> int:
        transport = httpx.ASGITransport(app=console.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            return (await client.get("/review/dlq/orders")).status_code

    assert asyncio.run(anonymous()) == 303  # to the login form
    forged = console.post(
        "/review/dlq/orders/purge", [("csrf", "forged"), ("id", seeded.old), ("confirm", "yes")]
    )
    assert forged.status_code == 403
    assert seeded.old in seeded.places()


@pytest.mark.real_time
def test_the_pages_work_on_rabbitmq(tmp_path: Path, clock: FakeClock) -> None:
    """Parked messages on a real RabbitMQ: listed, replayed; the delay queues counted."""
    url = "amqp://guest:guest@127.0.0.1:5672/"
    queue = f"console-{uuid.uuid4().hex[:8]}"
    broker = open_broker(url, clock=clock)
    try:
        broker.declare(queue)
        for n in range(2):
            broker.publish(queue, Envelope(body=b'{"n": %d}' % n, id=f"{queue}-{n}"))
            [delivery] = broker.receive(queue, wait=5.0)
            broker.park(delivery, delivery.message)
        broker.publish(queue, Envelope(body=b"{}", id=f"{queue}-late"))
        [delivery] = broker.receive(queue, wait=5.0)
        broker.defer(delivery, delivery.message, 3600.0)
    finally:
        broker.close()
    console = Console(tmp_path, url, clock, queue)
    try:
        index = console.get("/review/dlq")
        assert "1 (in the delay queues, not listed)" in index.text
        page = console.get(f"/review/dlq/{queue}")
        assert page.text.count(f"/review/dlq/{queue}/messages/{queue}-") == 2
        form = [("csrf", console.csrf()), ("id", f"{queue}-0"), ("confirm", "yes")]
        done = console.post(f"/review/dlq/{queue}/replay", form)
        assert done.status_code == 303
        assert "n=1" in done.headers["location"]
        after = console.get(f"/review/dlq/{queue}")
        assert after.text.count(f"/review/dlq/{queue}/messages/{queue}-") == 1
        assert f"/messages/{queue}-1" in after.text
    finally:
        console.letters.close()
        names = [queue, f"{queue}.parked", f"{queue}.delays", f"{queue}.delay.3600000"]
        asyncio.run(_delete_queues(names))
