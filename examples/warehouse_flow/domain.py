"""The order flow's rules for "add a product to an order", as plain Python over plain data.

Nothing here does I/O: the services (``order_service``, ``warehouse``, ``products``) call
these functions with what they read, and do what the answer says. Tests can check every rule
without a server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

__all__ = [
    "ADDED",
    "CATALOGUE",
    "INFO_LATER",
    "NOT_ENOUGH_STOCK",
    "STATUSES",
    "STOCK",
    "TRY_LATER",
    "Decision",
    "Invalid",
    "OrderLine",
    "needed",
    "order_answer",
    "parse_add_request",
    "parse_order_line",
    "plan",
]

TRY_LATER: Final = "The product could not be added now; please try again later"
"""Step 5: the Order service's 500 when no Warehouse instance answered."""
INFO_LATER: Final = "The product's information will be available later"
"""Step 7: the Order service's 404 when the Products service does not know the product."""
ADDED: Final = "The product was added to your order"
"""Step 11: the Order service's 200 (also when the stock write is left to a retry)."""
NOT_ENOUGH_STOCK: Final = "Accepted, but there is not enough stock for the product yet"
"""Step 9: the custom 202, "accepted, not enough stock"; nothing was decremented."""

STATUSES: Final = ("placed", "approved", "delivered")
"""Step 2: the order statuses the Warehouse accepts."""

CATALOGUE: Final[Mapping[str, Mapping[str, int]]] = {
    # product -> {component: how many of it one product needs}
    "p-desk": {"c-top": 1, "c-leg": 4, "c-screw": 16},
    "p-chair": {"c-seat": 1, "c-leg": 4, "c-screw": 8},
    "p-lamp": {"c-bulb": 1, "c-shade": 1, "c-cable": 1},
    "p-shelf": {"c-board": 4, "c-screw": 12},
}
"""The initial catalogue of the Products service: each product's components."""

STOCK: Final[Mapping[str, int]] = {
    "c-top": 200,
    "c-leg": 2000,
    "c-screw": 10000,
    "c-seat": 200,
    "c-bulb": 500,
    "c-shade": 500,
    "c-cable": 500,
    "c-board": 6,  # enough for one shelf: the demo's "not enough stock" step
}
"""The initial stock of the Warehouse database, by component."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_QUANTITY: Final = 1000


class Invalid(ValueError):
    """Input that breaks a rule; ``field`` names the field (the services answer 422)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def body(self) -> dict[str, str]:
        """The JSON body of the 422 answer."""
        return {"error": f"{self.field}: {self.message}", "field": self.field}

    @classmethod
    def not_json(cls) -> Invalid:
        """The error for a request body that is not JSON."""
        return cls("body", "must be a JSON object")


@dataclass(frozen=True)
class OrderLine:
    """Step 2's body: one product added to one order."""

    order_id: str
    client_id: str
    product_id: str
    order_date: str
    status: str
    quantity: int = 1

    def to_json(self) -> dict[str, Any]:
        """The body the Order service sends to ``POST /warehouse/v1/order/products``."""
        return {
            "orderId": self.order_id,
            "clientId": self.client_id,
            "productId": self.product_id,
            "orderDate": self.order_date,
            "status": self.status,
            "quantity": self.quantity,
        }


def _identifier(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if value is None:
        raise Invalid(field, "is required")
    if not isinstance(value, str) or not _ID.match(value):
        raise Invalid(field, "must be 1-64 letters, digits, '.', '_', ':' or '-'")
    return value


def _quantity(data: Mapping[str, Any]) -> int:
    value = data.get("quantity", 1)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_QUANTITY:
        raise Invalid("quantity", f"must be an integer from 1 to {MAX_QUANTITY}")
    return value


def _object(data: object) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise Invalid("body", "must be a JSON object")
    return data


def parse_order_line(data: object) -> OrderLine:
    """Check the Warehouse's request body (step 2) and return it as an `OrderLine`.

    Raises:
        Invalid: Naming the first field that is missing, unknown or wrong.
    """
    body = _object(data)
    known = {"orderId", "clientId", "productId", "orderDate", "status", "quantity"}
    for field in body:
        if field not in known:
            raise Invalid(str(field), "is not a field of an order line")
    order_date = body.get("orderDate")
    if order_date is None:
        raise Invalid("orderDate", "is required")
    if not isinstance(order_date, str):
        raise Invalid("orderDate", "must be an ISO 8601 date and time with a time zone")
    try:
        parsed = datetime.fromisoformat(order_date)
    except ValueError:
        raise Invalid("orderDate", "must be an ISO 8601 date and time with a time zone") from None
    if parsed.tzinfo is None:
        raise Invalid("orderDate", "must have a time zone (such as Z or +02:00)")
    status = body.get("status")
    if status is None:
        raise Invalid("status", "is required")
    if status not in STATUSES:
        raise Invalid("status", f"must be one of {', '.join(STATUSES)}")
    return OrderLine(
        order_id=_identifier(body, "orderId"),
        client_id=_identifier(body, "clientId"),
        product_id=_identifier(body, "productId"),
        order_date=order_date,
        status=status,
        quantity=_quantity(body),
    )


def parse_add_request(order_id: str, data: object, *, now: datetime) -> OrderLine:
    """Check the site's ``POST /orders/{orderId}/products`` body (step 1).

    The site sends ``clientId``, ``productId`` and optionally ``quantity``; the Order
    service adds the date (``now``, which must carry a time zone) and the status ``placed``.

    Raises:
        Invalid: Naming the first field that is missing, unknown or wrong.
    """
    body = _object(data)
    for field in body:
        if field not in {"clientId", "productId", "quantity"}:
            raise Invalid(str(field), "is not a field of this request")
    if not _ID.match(order_id):
        raise Invalid("orderId", "must be 1-64 letters, digits, '.', '_', ':' or '-'")
    return OrderLine(
        order_id=order_id,
        client_id=_identifier(body, "clientId"),
        product_id=_identifier(body, "productId"),
        order_date=now.isoformat(),
        status="placed",
        quantity=_quantity(body),
    )


def needed(components: Mapping[str, int], quantity: int) -> dict[str, int]:
    """How many of each component ``quantity`` products take."""
    return {component: per * quantity for component, per in sorted(components.items())}


@dataclass(frozen=True)
class Decision:
    """Step 9's answer: decrement every component (``enough``), or none of them."""

    enough: bool
    take: Mapping[str, int]
    short: Mapping[str, int]


def plan(take: Mapping[str, int], stock: Mapping[str, int]) -> Decision:
    """Decide step 9: enough of every component, or a 202 with what is missing.

    Args:
        take: What the order line needs, by component (`needed`).
        stock: What the Warehouse database holds, by component (a missing one is 0).
    """
    short = {c: n - stock.get(c, 0) for c, n in take.items() if stock.get(c, 0) < n}
    return Decision(enough=not short, take=dict(take), short=short)


def order_answer(warehouse_status: int | None) -> tuple[int, str]:
    """What the Order service answers its client for the Warehouse's status (steps 5-11).

    Args:
        warehouse_status: The Warehouse's HTTP status, or ``None`` when no instance
            answered (every endpoint failed, or the deadline passed).

    Returns:
        The status for the client and its message.
    """
    if warehouse_status is None:
        return 500, TRY_LATER
    if warehouse_status == 404:
        return 404, INFO_LATER
    if warehouse_status == 202:
        return 202, NOT_ENOUGH_STOCK
    if 200 <= warehouse_status < 300:
        return 200, ADDED
    # still 503 after every retry, or a Warehouse bug: the client can only try later
    return 500, TRY_LATER
