"""examples/payment_flow without processes: domain, Orders database, the consumer's handler."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from examples.payment_flow.db import OrdersDB, Outcome, StatusWriteFailed
from examples.payment_flow.domain import (
    DECLINED_CARD,
    Invalid,
    StatusUpdate,
    charge,
    decide,
    parse_payment,
    parse_status_message,
    parse_status_update,
    status_message,
)
from examples.payment_flow.payment_service import payment_id
from examples.payment_flow.settings import Settings, parse_duration
from examples.payment_flow.status_consumer import (
    OrderServiceUnavailable,
    StatusRefused,
    deliver,
)

from failsafe.queue import Envelope, Unrecoverable


def test_statuses_only_move_forward() -> None:
    """A later status applies; the same or an earlier one is stale."""
    assert decide("reserved", "paid") == "apply"
    assert decide("reserved", "delivered") == "apply"
    assert decide("paid", "paid") == "stale"
    assert decide("shipped", "paid") == "stale"
    with pytest.raises(Invalid) as caught:
        decide("reserved", "lost")
    assert caught.value.field == "status"


def test_payment_is_parsed_and_charged() -> None:
    """A valid payment parses; bad fields are named; the declined card is declined."""
    payment = parse_payment({"orderId": "o-1", "amount": 25})
    assert (payment.order_id, payment.amount) == ("o-1", 25.0)
    assert charge(payment) is None
    assert charge(parse_payment({"orderId": "o-1", "amount": 1, "card": DECLINED_CARD}))
    for body, field in (
        ([], "body"),
        ({"amount": 1}, "orderId"),
        ({"orderId": "a/b", "amount": 1}, "orderId"),
        ({"orderId": "o-1", "amount": 0}, "amount"),
        ({"orderId": "o-1", "amount": True}, "amount"),
        ({"orderId": "o-1", "amount": float("nan")}, "amount"),
        ({"orderId": "o-1", "amount": 1, "card": "12ab"}, "card"),
        ({"orderId": "o-1", "amount": 1, "tip": 2}, "tip"),
    ):
        with pytest.raises(Invalid) as caught:
            parse_payment(body)
        assert caught.value.field == field, body


def test_status_message_round_trip() -> None:
    """The message body is the seed's ``{"orderId", "status"}`` and parses back."""
    body = json.loads(status_message("o-7"))
    assert body == {"orderId": "o-7", "status": "paid"}
    assert parse_status_message(body) == ("o-7", "paid")
    with pytest.raises(Invalid):
        parse_status_message({"orderId": "o-7", "status": "lost"})
    update = parse_status_update("o-7", {"status": "paid"}, "m-1")
    assert update == StatusUpdate(order_id="o-7", status="paid", message_id="m-1")
    with pytest.raises(Invalid) as caught:
        parse_status_update("o-7", {"status": "paid"}, None)
    assert caught.value.field == "Idempotency-Key"


def test_payment_id_follows_the_idempotency_key() -> None:
    """A resent payment with the same key publishes a message with the same id."""
    assert payment_id("k-1") == payment_id("k-1") != payment_id("k-2")
    assert payment_id(None) != payment_id(None)


def test_durations_and_fast_settings() -> None:
    """``--redelivery-delay 2s`` parses; the fast settings shrink the DLQ's 60 s."""
    assert parse_duration("2s") == 2.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m") == 60.0
    assert parse_duration("60") == 60.0
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
    assert Settings().redelivery_delay == 60.0
    assert Settings.fast("x").redelivery_delay == 2.0


def test_orders_db_applies_once_and_never_backwards(tmp_path: Path) -> None:
    """A redelivered message, a stale status and an unknown order change nothing."""
    db = OrdersDB(path=tmp_path / "orders.db")
    try:
        assert db.add_orders(["o-1", "o-2"]) == 2
        assert db.add_orders(["o-1"]) == 0
        paid = StatusUpdate(order_id="o-1", status="paid", message_id="m-1")
        assert db.apply(paid, source="consumer") == (Outcome.APPLIED, "paid")
        assert db.apply(paid, source="errors-retry") == (Outcome.DUPLICATE, "paid")
        shipped = StatusUpdate(order_id="o-1", status="shipped", message_id="m-2")
        assert db.apply(shipped, source="consumer")[0] is Outcome.APPLIED
        late = StatusUpdate(order_id="o-1", status="paid", message_id="m-3")
        assert db.apply(late, source="consumer") == (Outcome.STALE, "shipped")
        lost = StatusUpdate(order_id="o-9", status="paid", message_id="m-4")
        assert db.apply(lost, source="consumer") == (Outcome.NOT_FOUND, None)

        def refuse() -> None:
            raise RuntimeError("disk full")

        other = StatusUpdate(order_id="o-2", status="paid", message_id="m-5")
        with pytest.raises(StatusWriteFailed, match="disk full"):
            db.apply(other, source="consumer", before_write=refuse)
        assert db.statuses() == {"o-1": "shipped", "o-2": "reserved"}
        # the failed write did not claim the message: the retry applies it
        assert db.apply(other, source="errors-retry")[0] is Outcome.APPLIED
        assert db.transitions() == [
            ("o-1", "reserved", "paid"),
            ("o-1", "paid", "shipped"),
            ("o-2", "reserved", "paid"),
        ]
        order = db.get("o-2")
        assert order is not None
        assert order["history"][0]["source"] == "errors-retry"
    finally:
        db.close()


def _client(answer: httpx.Response | Exception) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def order_service(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = httpx.Client(transport=httpx.MockTransport(order_service), base_url="http://order")
    return client, seen


def test_deliver_settles_or_classifies() -> None:
    """2xx and a reported 404 settle; 5xx and refusals are transient; the rest unrecoverable."""
    message = Envelope(body=status_message("o-1"), id="m-1")
    client, seen = _client(httpx.Response(200, json={"outcome": "applied"}))
    deliver(client, message)
    assert (seen[0].method, seen[0].url.path) == ("PUT", "/orders/o-1/status")
    assert seen[0].headers["Idempotency-Key"] == "m-1"
    assert json.loads(seen[0].content) == {"status": "paid"}

    deliver(_client(httpx.Response(404, json={"reported": True}))[0], message)
    with pytest.raises(OrderServiceUnavailable):
        deliver(_client(httpx.Response(503))[0], message)
    with pytest.raises(httpx.ConnectError):
        deliver(_client(httpx.ConnectError("refused"))[0], message)
    with pytest.raises(StatusRefused) as refused:
        deliver(_client(httpx.Response(404, text="no route"))[0], message)
    assert isinstance(refused.value, Unrecoverable)
    with pytest.raises(StatusRefused):
        deliver(_client(httpx.Response(422))[0], message)
    with pytest.raises(StatusRefused):
        deliver(_client(httpx.Response(200))[0], Envelope(body=b'{"orderId": 1}'))
