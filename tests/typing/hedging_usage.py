"""Type-checked, never run: how Hedging reads to a type checker (mypy --strict)."""

from __future__ import annotations

from typing import assert_type

import httpx

from failsafe import Hedging, Pipeline, RetryBudget, Timeout
from failsafe.hedging import Percentile, abandoned
from failsafe.http import AsyncResilientTransport, ResilientTransport

hedging = Hedging(delay=Hedging.percentile(95, window=500), max_hedges=2, budget=RetryBudget())
fixed = Hedging(delay=0.05, targets=["http://a", "http://b"], on_discard=print)
assert_type(Hedging.percentile(90), Percentile)
assert_type(abandoned(), bool)


def price(sku: str) -> float:
    return 12.5 if not abandoned() else 0.0


async def price_async(sku: str) -> float:
    return 12.5


assert_type(hedging.call(price, "sku-1"), float)


async def use() -> None:
    assert_type(await fixed.call_async(price_async, "sku-1"), float)
    assert_type(await Pipeline(Timeout(2), hedging).call_async(price_async, "x"), float)


@hedging
def decorated(sku: str) -> int:
    return len(sku)


assert_type(decorated("x"), int)
client = httpx.Client(transport=ResilientTransport(hedging=Hedging()))
aclient = httpx.AsyncClient(transport=AsyncResilientTransport(hedging=hedging))
