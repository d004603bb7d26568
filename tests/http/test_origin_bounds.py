"""The transports' per-origin breakers are bounded (issue 15): many hosts, bounded memory.

Without ``endpoints`` each origin a client calls gets a breaker; a crawler's client calls
thousands. These tests send requests to many distinct hosts through an in-process
`httpx.MockTransport` and check that the map of breakers stays within its bounds.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from failsafe import CircuitOpenError, CircuitState
from failsafe.circuit_breaker import _Kept
from failsafe.http import (
    AllEndpointsFailed,
    AsyncResilientTransport,
    ResilientTransport,
    endpoint_breakers,
)
from failsafe.testing import FakeClock


def _answer(request: httpx.Request) -> httpx.Response:
    """200, except 503 from hosts whose number is a multiple of 7."""
    number = int(request.url.host.split(".")[0].removeprefix("h"))
    return httpx.Response(503 if number % 7 == 0 else 200)


def _urls(n: int) -> list[str]:
    return [f"http://h{i}.test:8080/x" for i in range(n)]


def test_the_default_breakers_are_bounded() -> None:
    """A transport's own breakers hold at most 10,000 origins, each dropped after an hour idle."""
    transport = ResilientTransport(httpx.MockTransport(_answer))
    assert transport.breakers is not None
    assert (transport.breakers.max_keys, transport.breakers.idle_ttl) == (10_000, 3600.0)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_many_origins_hold_at_most_max_keys_breakers(kind: str) -> None:
    """300 hosts through max_keys=16: at most 16 held, failing hosts' breakers kept first."""
    clock = FakeClock()
    breakers = endpoint_breakers(threshold=1, max_keys=16, clock=clock)
    options = {"breakers": breakers, "attempts": 1, "clock": clock}
    statuses: list[int] = []
    if kind == "sync":
        with httpx.Client(
            transport=ResilientTransport(httpx.MockTransport(_answer), **options)  # type: ignore[arg-type]
        ) as client:
            statuses = [client.get(url).status_code for url in _urls(300)]
    else:

        async def main() -> list[int]:
            transport = AsyncResilientTransport(httpx.MockTransport(_answer), **options)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport) as client:
                return [(await client.get(url)).status_code for url in _urls(300)]

        statuses = asyncio.run(main())
    assert statuses.count(503) == 43  # 0, 7, ..., 294
    assert len(breakers.breakers) == 16
    assert breakers.evicted == 300 - 16
    # the hosts whose circuit opened are kept (the last 15 of them), and the newest host
    opened = {f"http://h{i}.test:8080" for i in range(196, 300, 7)}
    assert set(breakers.breakers) == opened | {"http://h299.test:8080"}
    assert all(breakers.breakers[key].state is CircuitState.OPEN for key in opened)


def test_an_open_origin_is_still_skipped_after_many_other_hosts() -> None:
    """A host whose circuit opened stays protected while hundreds of healthy hosts pass."""
    clock = FakeClock()
    breakers = endpoint_breakers(threshold=1, max_keys=8, clock=clock)
    transport = ResilientTransport(
        httpx.MockTransport(_answer), breakers=breakers, attempts=1, clock=clock
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://h7.test:8080/").status_code == 503  # opens h7's circuit
        for i in range(1, 400):
            if i % 7:
                assert client.get(f"http://h{i}.test:8080/").status_code == 200
        with pytest.raises(AllEndpointsFailed) as info:
            client.get("http://h7.test:8080/")
    assert isinstance(info.value.failures[0].error, CircuitOpenError)


def test_healthy_origins_build_no_breaker_object() -> None:
    """Origins whose requests all succeed are entries in the map, not breakers."""
    clock = FakeClock()
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)), attempts=1, clock=clock
    )
    with httpx.Client(transport=transport) as client:
        for url in _urls(50):
            client.get(url)
    assert transport.breakers is not None
    table = transport.breakers._table
    assert len(table) == 50
    assert not any(isinstance(entry, _Kept) for entry in table.values())


def test_idle_origins_are_dropped() -> None:
    """An origin not called for idle_ttl goes as other requests come."""
    clock = FakeClock()
    breakers = endpoint_breakers(idle_ttl=60, clock=clock)
    transport = ResilientTransport(
        httpx.MockTransport(_answer), breakers=breakers, attempts=1, clock=clock
    )
    with httpx.Client(transport=transport) as client:
        for url in _urls(20):
            client.get(url)
        clock.advance(62)
        client.get("http://h1000.test/")
    assert list(breakers.breakers) == ["http://h1000.test"]
