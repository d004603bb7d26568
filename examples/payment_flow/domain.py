"""The payment flow's domain: plain Python over plain data, no I/O.

- the order statuses and their order (`STATUSES`, `decide`): a status only moves forward,
  so a stale status (``paid`` arriving after ``shipped``) never overwrites a newer one, and
  a repeated one changes nothing;
- the simulated card (`charge`);
- the message the Payment service puts on the ``order-status`` queue (`status_message`,
  `parse_status_message`) and the requests the services accept (`parse_payment`,
  `parse_status_update`), each refusing bad input with `Invalid`, which names the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DECLINED_CARD",
    "PAID",
    "RESERVED",
    "STATUSES",
    "Invalid",
    "Payment",
    "StatusUpdate",
    "charge",
    "decide",
    "parse_payment",
    "parse_status_message",
    "parse_status_update",
    "status_message",
]

RESERVED = "reserved"
"""An order's status once its goods are reserved, before it is paid."""
PAID = "paid"
"""The status the Payment service asks for after a successful payment."""
STATUSES = (RESERVED, PAID, "shipped", "delivered")
"""Every status, in the only order an order may go through them."""
DECLINED_CARD = "4000000000000002"
"""The card number the simulated card processor always declines."""
MAX_AMOUNT = 1_000_000.0
"""The largest amount the simulated card processor accepts."""


class Invalid(ValueError):
    """Input that cannot be accepted; ``field`` names the culprit.

    Args:
        field: The offending field (``body`` for the body as a whole).
        problem: What is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def body(self) -> dict[str, str]:
        """The JSON body of the 422 answer."""
        return {"error": f"{self.field}: {self.problem}", "field": self.field}

    @classmethod
    def not_json(cls) -> Invalid:
        """The error for a request body that is not JSON."""
        return cls("body", "must be JSON")


def rank(status: str) -> int:
    """The position of ``status`` in `STATUSES`.

    Raises:
        Invalid: ``status`` when it is not one of them.
    """
    try:
        return STATUSES.index(status)
    except ValueError:
        raise Invalid("status", f"must be one of {', '.join(STATUSES)}") from None


def decide(current: str, new: str) -> Literal["apply", "stale"]:
    """Whether an order in status ``current`` moves to ``new``.

    ``"apply"`` when ``new`` comes later than ``current``; ``"stale"`` when it is the same
    status or an earlier one: a message that arrives late (redelivered from the DLQ after a
    newer status was written) never moves an order back.

    Example:
        ```python
        assert decide("reserved", "paid") == "apply"
        assert decide("shipped", "paid") == "stale"
        ```
    """
    return "apply" if rank(new) > rank(current) else "stale"


def _order_id(value: Any, field: str = "orderId") -> str:
    if not isinstance(value, str) or not value or len(value) > 64 or not value.isprintable():
        raise Invalid(field, "must be a non-empty printable string of at most 64 characters")
    if "/" in value:
        raise Invalid(field, "must not contain '/'")
    return value


@dataclass(frozen=True)
class Payment:
    """A payment the client asks for.

    Attributes:
        order_id: The order being paid.
        amount: How much, in the shop's currency.
        card: The card number (simulated; only `DECLINED_CARD` is refused).
    """

    order_id: str
    amount: float
    card: str = "4242424242424242"


def parse_payment(body: Any) -> Payment:
    """The payment in a ``POST /payments`` body (``orderId``, ``amount``, optional ``card``).

    Raises:
        Invalid: Naming the first bad field.
    """
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    unknown = set(body) - {"orderId", "amount", "card"}
    if unknown:
        raise Invalid(sorted(unknown)[0], "unknown field")
    order_id = _order_id(body.get("orderId"))
    amount = body.get("amount")
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not math.isfinite(amount)
        or not 0 < amount <= MAX_AMOUNT
    ):
        raise Invalid("amount", f"must be a number above 0 and at most {MAX_AMOUNT:g}")
    card = body.get("card", Payment.card)
    if not isinstance(card, str) or not card.isdigit() or not 12 <= len(card) <= 19:
        raise Invalid("card", "must be 12 to 19 digits")
    return Payment(order_id=order_id, amount=float(amount), card=card)


def charge(payment: Payment) -> str | None:
    """Run the simulated card: ``None`` when the payment succeeded, else why it was declined."""
    if payment.card == DECLINED_CARD:
        return "card declined"
    return None


def status_message(order_id: str, status: str = PAID) -> bytes:
    """The body of an ``order-status`` message: ``{"orderId": ..., "status": ...}``."""
    return json.dumps({"orderId": order_id, "status": status}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class StatusUpdate:
    """An order's new status, and the message that asked for it.

    Attributes:
        order_id: The order.
        status: Its new status (one of `STATUSES`).
        message_id: The queue message's id: a status change is applied once per id.
    """

    order_id: str
    status: str
    message_id: str


def parse_status_message(body: Any) -> tuple[str, str]:
    """The order id and status of a decoded ``order-status`` message.

    Raises:
        Invalid: Naming the first bad field.
    """
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    order_id = _order_id(body.get("orderId"))
    status = body.get("status")
    if not isinstance(status, str):
        raise Invalid("status", f"must be one of {', '.join(STATUSES)}")
    rank(status)
    return order_id, status


def parse_status_update(order_id: str, body: Any, message_id: str | None) -> StatusUpdate:
    """The update in ``PUT /orders/{orderId}/status`` (``{"status": ...}``).

    Args:
        order_id: From the path.
        body: The decoded JSON body.
        message_id: The ``Idempotency-Key`` header: the queue message's id.

    Raises:
        Invalid: Naming the first bad field (``Idempotency-Key`` when it is missing).
    """
    _order_id(order_id)
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    status = body.get("status")
    if not isinstance(status, str):
        raise Invalid("status", f"must be one of {', '.join(STATUSES)}")
    rank(status)
    if not message_id or len(message_id) > 128 or not message_id.isprintable():
        raise Invalid("Idempotency-Key", "must be the message id (1-128 printable characters)")
    return StatusUpdate(order_id=order_id, status=status, message_id=message_id)
