"""examples/payment_flow end to end: every service a real process, on SQLite and RabbitMQ."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from examples.payment_flow.demo import Flow
from examples.payment_flow.domain import PAID, RESERVED
from examples.payment_flow.runner import Supervisor, delete_rabbitmq_queues
from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import RETRY_KIND, REVIEW_KIND, queue_review_kind

from failsafe.queue import Envelope, Place

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.real_time


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def flow(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flow]:
    """Every payment_flow service, started once for the module, on one setup.

    The SQLite broker; RabbitMQ; or the SQLite broker with the Orders database and the error
    records in PostgreSQL (``--dsn``, schemas of their own, dropped afterwards).
    """
    settings = Settings.fast(tmp_path_factory.mktemp(f"payment-flow-{request.param}"))
    if request.param == "rabbitmq":
        settings = settings.replace(broker=RABBIT, queue=f"order-status-{uuid.uuid4().hex[:8]}")
    if request.param == "postgres":
        settings = settings.replace(dsn=DSN, schema=f"pf_test_{uuid.uuid4().hex[:8]}")
    try:
        with Supervisor(settings) as supervisor:
            supervisor.start()
            client = Flow(supervisor.settings)
            client.supervisor = supervisor  # type: ignore[attr-defined]
            try:
                yield client
            finally:
                client.close()
    finally:
        if settings.rabbitmq:
            delete_rabbitmq_queues(settings)
        if settings.dsn is not None:
            with psycopg.connect(DSN, autocommit=True) as conn:
                for name in ("orders", "errors"):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{settings.schema}_{name}" CASCADE')


def history(flow: Flow, order_id: str) -> list[tuple[str, str]]:
    """The order's transitions, oldest first."""
    order = flow.order(order_id)
    assert order is not None
    return [(h["from"], h["to"]) for h in order["history"]]


def test_payment_makes_the_order_paid_once(flow: Flow) -> None:
    """A payment makes its order Paid with one transition, even resent and redelivered.

    The client resends it with the same key (a lost answer) and the broker hands the message
    out again: neither changes the history.
    """
    flow.add_orders("n-1")
    handled = flow.stats().get("MessageHandled", 0)
    first = flow.pay("n-1", key="pay-n-1")
    assert first.status_code == 202
    flow.wait_status("n-1", PAID)
    again = flow.pay("n-1", key="pay-n-1")  # the client's answer was lost: it resends
    assert again.json()["messageId"] == first.json()["messageId"]
    flow.publish_copy(first.json()["messageId"], "n-1")  # and the broker redelivers it
    flow.wait_events("MessageHandled", handled + 3)
    assert history(flow, "n-1") == [(RESERVED, PAID)]


def test_stale_status_never_overwrites_a_newer_one(flow: Flow) -> None:
    """A 'paid' message arriving after 'shipped' is handled but changes nothing."""
    flow.add_orders("n-2")
    assert flow.set_status("n-2", "shipped", "ship-n-2").json()["outcome"] == "applied"
    handled = flow.stats()["MessageHandled"]
    assert flow.pay("n-2").status_code == 202
    flow.wait_events("MessageHandled", handled + 1)
    assert history(flow, "n-2") == [(RESERVED, "shipped")]


def test_declined_and_invalid_payments_publish_nothing(flow: Flow) -> None:
    """A declined card is 402 and a bad body 422; neither reaches the queue."""
    flow.add_orders("n-3")
    declined = flow.http.post(
        f"{flow.settings.url('payment')}/payments",
        json={"orderId": "n-3", "amount": 5, "card": "4000000000000002"},
    )
    assert declined.status_code == 402
    bad = flow.http.post(f"{flow.settings.url('payment')}/payments", json={"orderId": "n-3"})
    assert (bad.status_code, bad.json()["field"]) == (422, "amount")
    flow.add_orders("n-3b")
    assert flow.pay("n-3b").status_code == 202  # a marker: the queue is processed in order
    flow.wait_status("n-3b", PAID)
    order = flow.order("n-3")
    assert order is not None
    assert (order["status"], order["history"]) == (RESERVED, [])


def test_order_service_down_messages_wait_in_the_dlq(flow: Flow) -> None:
    """While the Order service is down, messages cycle through the DLQ; then apply once each."""
    supervisor: Supervisor = flow.supervisor  # type: ignore[attr-defined]
    flow.add_orders("d-1", "d-2")
    supervisor.kill("order")
    try:
        deferred = flow.stats().get("RedeliveryScheduled", 0)
        assert [flow.pay(o).status_code for o in ("d-1", "d-2")] == [202, 202]
        flow.wait_events("RedeliveryScheduled", deferred + 4)  # two rounds each
        assert [flow.order(o)["status"] for o in ("d-1", "d-2")] == [RESERVED, RESERVED]  # type: ignore[index]
        if not flow.settings.rabbitmq:
            waiting = flow.dlq(Place.DELAYED)
            assert {d.message.json()["orderId"] for d in waiting} <= {"d-1", "d-2"}
            assert all(d.message.delayed_attempts >= 1 for d in waiting)
    finally:
        supervisor.start(["order"])
    for order_id in ("d-1", "d-2"):
        flow.wait_status(order_id, PAID)
        assert history(flow, order_id) == [(RESERVED, PAID)]
    assert flow.records(kind=queue_review_kind(flow.settings)) == []


def test_failed_write_is_retried_by_the_error_handling_service(flow: Flow) -> None:
    """A failed status write is retried by the Error-handling service until the order is Paid.

    The Order service reports an ``order.status`` record; the service's worker calls the
    Order service's retry endpoint back until the write works.
    """
    flow.add_orders("w-1")
    flow.faults("order", fail_writes=2)
    try:
        assert flow.pay("w-1").status_code == 202
        record = flow.wait_record(RETRY_KIND, "w-1", ("resolved",))
    finally:
        flow.faults("order")
    assert record["payload"]["orderId"] == "w-1"
    assert [a["ok"] for a in record["attempts"]][-1] is True
    assert any(not a["ok"] for a in record["attempts"])  # the second write failed too
    order = flow.wait_status("w-1", PAID)
    assert [(h["from"], h["to"], h["source"]) for h in order["history"]] == [
        (RESERVED, PAID, "errors-retry")
    ]


def test_unknown_order_goes_to_review_and_is_resolved(flow: Flow) -> None:
    """An unknown order is one review record; a person's retry applies and resolves it.

    The message is not also parked: the ``order.not_found`` record is its one place.
    """
    answer = flow.pay("lost-1")
    record = flow.wait_record(REVIEW_KIND, "lost-1", ("needs_review",))
    assert record["payload"] == {
        "orderId": "lost-1",
        "status": "paid",
        "messageId": answer.json()["messageId"],
    }
    assert [d for d in flow.dlq() if d.message.id == answer.json()["messageId"]] == []
    flow.add_orders("lost-1")
    flow.act(record["id"], "retry", actor="alice", note="found it")
    flow.wait_status("lost-1", PAID)
    resolved = flow.wait_record(REVIEW_KIND, "lost-1", ("resolved",))
    assert resolved["history"][-1]["action"] in ("resolved", "retried")
    assert history(flow, "lost-1") == [(RESERVED, PAID)]


def test_malformed_message_is_reviewed_and_parked(flow: Flow) -> None:
    """A message that is not a status message goes to review at once, and is parked."""
    message = Envelope(body=b'{"orderId": "x-1", "status": "lost"}')
    flow.broker.publish(flow.settings.queue, message)
    record = flow.wait_record(queue_review_kind(flow.settings), message.id, ("needs_review",))
    assert "StatusRefused" in record["error_type"]
    parked = flow.wait_for(
        "the parked message",
        lambda: [d for d in flow.dlq(Place.PARKED) if d.message.id == message.id],
    )
    assert parked[0].message.json() == {"orderId": "x-1", "status": "lost"}


def test_orders_live_where_the_settings_say(flow: Flow) -> None:
    """A SQLite file in the run folder by default; with ``--dsn``, a PostgreSQL schema only."""
    flow.add_orders("w-1")
    assert flow.pay("w-1").status_code == 202
    flow.wait_status("w-1", PAID)
    orders_file = flow.settings.path / "orders.db"
    if flow.settings.dsn is None:
        assert orders_file.is_file()
        return
    assert not orders_file.exists()
    with psycopg.connect(DSN) as conn:
        row = conn.execute(
            f'SELECT status FROM "{flow.settings.schema}_orders".orders WHERE id = %s',
            ("w-1",),
        ).fetchone()
    assert row == (PAID,)
