"""A short tour of failsafe's policies on the order flow's HTTP calls, in one process.

Run it with ``python -m failsafe.demo``. It plays the Order service calling two Warehouse
instances, simulated as functions, prints every decision the policies take and checks each
step against what it announces; it exits with status 1 if any step does not behave as
described.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import failsafe
from failsafe import (
    AllTargetsFailed,
    Backoff,
    Bulkhead,
    BulkheadFull,
    CircuitOpenError,
    ConsecutiveFailures,
    Failover,
    Fallback,
    KeyedCircuitBreaker,
    Pipeline,
    Retry,
    RetryBudget,
    Timeout,
    TimeoutExceeded,
)
from failsafe.events import Event

__all__ = ["main"]


class Warehouse:
    """Two simulated Warehouse instances; each can be taken down."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.calls: list[str] = []

    def add_product(self, order_id: str, product_id: str) -> dict[str, Any]:
        target = str(failsafe.current_context().target)
        self.calls.append(target)
        if target in self.down:
            raise ConnectionError(f"{target} refused the connection")
        return {"orderId": order_id, "productId": product_id, "servedBy": target}


def _fields(event: Event) -> dict[str, Any]:
    import attrs

    return {
        a.name: getattr(event, a.name)
        for a in attrs.fields(type(event))
        if a.name not in ("policy", "outcome")
    }


_quiet = False


def _print_event(event: Event) -> None:
    if _quiet or type(event).__name__ == "AttemptFailed":  # a decision always follows it
        return
    detail = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in _fields(event).items()
    )
    outcome = getattr(event, "outcome", None)
    why = f"  <- {outcome.describe()}" if outcome is not None else ""
    print(f"      [{event.policy}] {type(event).__name__}({detail}){why}")


def _check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"   => {'ok' if ok else 'NOT AS EXPECTED'}: {what}")
    if not ok:
        failures.append(what)


def main() -> int:
    """Play the tour; return 0 when every step behaved as described."""
    failures: list[str] = []
    failsafe.add_listener(_print_event)
    warehouse = Warehouse()
    breakers = KeyedCircuitBreaker(
        name="warehouse", trip=ConsecutiveFailures(threshold=8), reset_timeout=30
    )
    order_to_warehouse = Pipeline(
        Failover(
            ["http://127.0.0.1:8001", "http://127.0.0.1:8002"],
            # the order flow: the first try plus three retries on each instance, then the next one
            policy=Pipeline(
                Retry(attempts=4, backoff=Backoff.exponential(0.001, maximum=0.004)), breakers
            ),
        ),
        name="order->warehouse",
    )
    print(f"Pipeline: {order_to_warehouse!r}\n")

    print("1. Both Warehouse instances are up: the first one answers.")
    answer = order_to_warehouse.call(warehouse.add_product, "o-1", "p-7")
    _check(answer["servedBy"].endswith(":8001"), "served by Warehouse 1 at the first try", failures)

    print("\n2. Warehouse 1 is down: four attempts on it, then Warehouse 2 answers.")
    warehouse.down = {"http://127.0.0.1:8001"}
    warehouse.calls.clear()
    answer = order_to_warehouse.call(warehouse.add_product, "o-2", "p-7")
    _check(
        warehouse.calls == ["http://127.0.0.1:8001"] * 4 + ["http://127.0.0.1:8002"]
        and answer["servedBy"].endswith(":8002"),
        "4 attempts on Warehouse 1, then served by Warehouse 2",
        failures,
    )

    print("\n3. Both are down: the Order service answers 500 'try again later'.")
    warehouse.down = {"http://127.0.0.1:8001", "http://127.0.0.1:8002"}
    try_later = Pipeline(
        Fallback(
            handler=lambda outcome: {
                "status": 500,
                "message": "The product could not be added now; please try again later.",
            },
            on=AllTargetsFailed,
        ),
        order_to_warehouse,
    )
    answer = try_later.call(warehouse.add_product, "o-3", "p-7")
    _check(answer["status"] == 500, "HTTP 500 with a 'try again later' message", failures)

    print("\n4. Warehouse 1 failed 8 times in a row: its circuit is open and it is skipped.")
    warehouse.down = {"http://127.0.0.1:8001"}
    warehouse.calls.clear()
    answer = order_to_warehouse.call(warehouse.add_product, "o-4", "p-7")
    w1 = breakers.get("http://127.0.0.1:8001")
    _check(
        w1.state.value == "open" and warehouse.calls == ["http://127.0.0.1:8002"],
        f"Warehouse 1 not called (circuit {w1.state.value}, retry after {w1.retry_after:.0f}s)",
        failures,
    )

    print("\n5. A coroutine that hangs is cancelled by its timeout.")

    async def hangs() -> None:
        await asyncio.Event().wait()

    try:
        asyncio.run(Timeout(0.01, name="products-lookup").call_async(hangs))
        _check(False, "timeout raised", failures)
    except TimeoutExceeded as exc:
        _check(isinstance(exc, TimeoutError), f"TimeoutExceeded ({exc})", failures)

    print("\n6. A bulkhead of 1 rejects a second concurrent call at once.")
    bulkhead = Bulkhead(max_concurrent=1, name="stock-db")

    def nested() -> str:
        try:
            bulkhead.call(lambda: None)
        except BulkheadFull as exc:
            return str(exc)
        return "admitted"

    _check(bulkhead.call(nested).startswith("bulkhead"), "second call rejected", failures)

    print("\n7. A retry budget stops retries from multiplying an outage's load (events muted).")
    global _quiet
    _quiet = True
    budget = RetryBudget(ratio=0.1, min_per_second=0.2, window=10)
    budgeted = Retry(attempts=4, backoff=Backoff.none(), budget=budget, name="budgeted")
    attempts = 0

    def always_down() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    for _ in range(10):
        with contextlib.suppress(ConnectionError):
            budgeted.call(always_down)
    _check(attempts < 10 * 4, f"{attempts} attempts for 10 calls instead of 40", failures)

    _quiet = False
    print("\n8. The user's own exception reaches the caller unchanged.")

    class ProductNotFound(Exception):
        pass

    mine = ProductNotFound("p-404")

    def not_found() -> None:
        raise mine

    try:
        Pipeline(Retry(), breakers.get("products")).call(not_found)
    except ProductNotFound as exc:
        _check(exc is mine, "the very same ProductNotFound object", failures)
    except CircuitOpenError:
        _check(False, "the very same ProductNotFound object", failures)

    failsafe.remove_listener(_print_event)
    print()
    if failures:
        print(f"{len(failures)} step(s) did not behave as expected: {failures}")
        return 1
    print("Every step of the tour behaved as described.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
