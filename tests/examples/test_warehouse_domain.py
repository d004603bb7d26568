"""examples/warehouse_flow's pure rules (no server): validation, the stock decision, answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from examples.warehouse_flow.domain import (
    ADDED,
    INFO_LATER,
    NOT_ENOUGH_STOCK,
    TRY_LATER,
    Invalid,
    needed,
    order_answer,
    parse_add_request,
    parse_order_line,
    plan,
)

LINE = {
    "orderId": "o-1",
    "clientId": "c-1",
    "productId": "p-desk",
    "orderDate": "2026-11-14T10:00:00Z",
    "status": "placed",
}


def test_a_valid_line_defaults_the_quantity_to_1() -> None:
    """Step 2's decision: ``quantity`` is optional and defaults to 1."""
    assert parse_order_line(LINE).quantity == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"orderId": None}, "orderId"),
        ({"status": "paid"}, "status"),
        ({"orderDate": "2026-11-14T10:00:00"}, "orderDate"),
        ({"quantity": True}, "quantity"),
        ({"quantity": 0}, "quantity"),
        ({"extra": 1}, "extra"),
    ],
)
def test_each_rule_names_its_field(change: dict[str, Any], field: str) -> None:
    """Every refusal names the field it is about."""
    line = {k: v for k, v in {**LINE, **change}.items() if v is not None}
    with pytest.raises(Invalid) as caught:
        parse_order_line(line)
    assert caught.value.field == field


def test_the_order_service_dates_and_places_the_line() -> None:
    """Step 1: the Order service adds the date (with its zone) and the status ``placed``."""
    now = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
    line = parse_add_request("o-9", {"clientId": "c-1", "productId": "p-lamp"}, now=now)
    assert parse_order_line(line.to_json()) == line
    assert (line.status, line.order_date) == ("placed", "2026-11-14T10:00:00+00:00")


def test_enough_of_every_component_or_nothing() -> None:
    """Step 9: one short component makes the whole line a 202."""
    take = needed({"c-a": 2, "c-b": 1}, 3)
    assert take == {"c-a": 6, "c-b": 3}
    assert plan(take, {"c-a": 6, "c-b": 3}).enough
    short = plan(take, {"c-a": 10, "c-b": 2})
    assert (short.enough, dict(short.short)) == (False, {"c-b": 1})


@pytest.mark.parametrize(
    ("warehouse", "answer"),
    [
        (None, (500, TRY_LATER)),
        (200, (200, ADDED)),
        (201, (200, ADDED)),
        (202, (202, NOT_ENOUGH_STOCK)),
        (404, (404, INFO_LATER)),
        (503, (500, TRY_LATER)),
        (422, (500, TRY_LATER)),
    ],
)
def test_what_the_client_is_told(warehouse: int | None, answer: tuple[int, str]) -> None:
    """Steps 5, 7, 9 and 11: the Order service's answer for each Warehouse outcome."""
    assert order_answer(warehouse) == answer
