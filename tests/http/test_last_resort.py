"""The last resort: every endpoint's circuit open, the request still goes to one endpoint.

Real uvicorn servers and refused ports on loopback; the circuits are opened by hand on a
fake clock, as a server killed earlier would have left them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from failsafe import CircuitOpenError, CircuitState, ConfigurationError, KeyedCircuitBreaker
from failsafe.events import CircuitClosed, CircuitHalfOpened, CircuitRejected
from failsafe.http import AllEndpointsFailed, AsyncResilientTransport, ResilientTransport
from failsafe.testing import FakeClock, RecordingListener
from tests.http.conftest import Server
from tests.http.conftest import closed_port as _closed_port
from tests.http.test_transport import GET, Http, http, response, tried

__all__ = ["http"]  # the fixture: every scenario through httpx.Client and AsyncClient


def _refused() -> str:
    """Another loopback URL where nothing listens."""
    return _closed_port.__wrapped__()  # type: ignore[attr-defined,no-any-return]


def _open(breakers: KeyedCircuitBreaker, clock: FakeClock, *keys: str) -> None:
    """Open each key's circuit in turn, 5 s apart: the first is the nearest to its probe."""
    for key in keys:
        breakers.get(key).open()
        clock.advance(5)


def _failed(result: httpx.Response | Exception) -> AllEndpointsFailed:
    assert isinstance(result, AllEndpointsFailed), repr(result)
    return result


def test_every_circuit_open_sends_to_the_endpoint_nearest_its_probe(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """w1's circuit opened first (it was down, and is back): the request is answered by it."""
    w1, _ = servers
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(reset_timeout=30, clock=clock, listeners=[events])
    _open(breakers, clock, w1.url, closed_port)
    results = http.run(
        [GET("/ok"), GET("/ok")],
        endpoints=[closed_port, w1.url],
        breakers=breakers,
        clock=clock,
        listeners=[events],
    )
    first, second = (response(r) for r in results)
    assert first.json()["server"] == "w1"
    assert first.extensions["failsafe.last_resort"] is True
    assert first.extensions["failsafe.endpoint"] == w1.url
    # the answer closed w1's circuit: the next request goes there the ordinary way
    assert "failsafe.last_resort" not in second.extensions
    assert breakers.get(w1.url).state is CircuitState.CLOSED
    assert breakers.get(closed_port).state is CircuitState.OPEN
    assert tried(events) == [w1.url, w1.url]  # never the refused port: its circuit is open
    assert [e.key for e in events.of_type(CircuitClosed)] == [w1.url]


def test_a_failed_last_resort_reopens_its_circuit_and_the_request_fails_as_before(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """The nearest endpoint is down too: AllEndpointsFailed with a note; its circuit reopens.

    One such request a second (the default): the next at once fails unsent; a second later
    the other endpoint, now the nearest to its probe, is tried and answers.
    """
    w1, _ = servers
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(reset_timeout=30, clock=clock)
    _open(breakers, clock, closed_port, w1.url)

    def between(index: int) -> None:
        if index == 1:
            clock.advance(1)

    results = http.run(
        [GET("/ok"), GET("/ok"), GET("/ok")],
        between=between,
        endpoints=[closed_port, w1.url],
        breakers=breakers,
        clock=clock,
        listeners=[events],
    )
    error = _failed(results[0])
    assert [type(f.error) for f in error.failures] == [CircuitOpenError, CircuitOpenError]
    assert any(
        f"sent anyway to {closed_port} failed too: ConnectError" in note for note in error.__notes__
    )
    assert breakers.get(closed_port).state is CircuitState.OPEN
    assert [f.attempts for f in _failed(results[1]).failures] == [0, 0]  # the rate held
    assert response(results[2]).json()["server"] == "w1"
    assert response(results[2]).extensions["failsafe.last_resort"] is True
    assert tried(events) == [closed_port, w1.url]


def test_last_resort_none_fails_at_once_while_every_circuit_is_open(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    w1, _ = servers
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(reset_timeout=30, clock=clock)
    _open(breakers, clock, w1.url, closed_port)
    [result] = http.run(
        [GET("/ok")],
        endpoints=[closed_port, w1.url],
        breakers=breakers,
        clock=clock,
        last_resort=None,
        listeners=[events],
    )
    assert [f.attempts for f in _failed(result).failures] == [0, 0]
    assert tried(events) == []
    assert breakers.get(w1.url).state is CircuitState.OPEN


def test_a_burst_of_concurrent_requests_sends_one_last_resort(
    servers: tuple[Server, Server], closed_port: str
) -> None:
    """16 requests at once, every circuit open and every endpoint down: one network attempt."""
    other = _refused()
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(reset_timeout=30, clock=clock)
    _open(breakers, clock, other, closed_port)

    async def main() -> list[Any]:
        transport = AsyncResilientTransport(
            endpoints=[closed_port, other],
            breakers=breakers,
            clock=clock,
            listeners=[events],
        )
        async with httpx.AsyncClient(transport=transport) as client:
            return await asyncio.gather(
                *(client.get("http://svc/ok") for _ in range(16)), return_exceptions=True
            )

    results = asyncio.run(main())
    assert all(isinstance(r, AllEndpointsFailed) for r in results)
    assert tried(events) == [other]


def test_a_refusal_is_needed_circuits_the_request_opened_itself_are_not_tried_again(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """Both endpoints refused connections and so opened their circuits: no third attempt.

    The last resort is for a request that an open circuit refused, not one whose own
    attempts just failed on every endpoint.
    """
    other = _refused()
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(threshold=1, reset_timeout=30, clock=clock)
    [result] = http.run(
        [GET("/ok")],
        endpoints=[closed_port, other],
        breakers=breakers,
        clock=clock,
        listeners=[events],
    )
    assert [type(f.error) for f in _failed(result).failures] == [
        httpx.ConnectError,
        httpx.ConnectError,
    ]
    assert tried(events) == [closed_port, other]
    assert breakers.get(closed_port).state is CircuitState.OPEN


def test_a_circuit_this_request_opened_and_one_that_refused_it(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """The refused port opens its circuit, w1's refuses: w1, open longer, is the last resort."""
    w1, _ = servers
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(threshold=1, reset_timeout=30, clock=clock)
    _open(breakers, clock, w1.url)
    [result] = http.run(
        [GET("/ok")],
        endpoints=[closed_port, w1.url],
        breakers=breakers,
        clock=clock,
        listeners=[events],
    )
    assert response(result).json()["server"] == "w1"
    assert response(result).extensions["failsafe.last_resort"] is True
    assert tried(events) == [closed_port, w1.url]


def test_a_breaker_keyed_by_a_function_has_no_last_resort(
    servers: tuple[Server, Server], closed_port: str
) -> None:
    """Its circuits are not the endpoints': it cannot tell which endpoint rested longest."""
    w1, _ = servers
    clock = FakeClock()
    breakers = KeyedCircuitBreaker(key=lambda: "all", reset_timeout=30, clock=clock)
    breakers.get("all").open()
    transport = ResilientTransport(endpoints=[closed_port, w1.url], breakers=breakers, clock=clock)
    with httpx.Client(transport=transport) as client, pytest.raises(AllEndpointsFailed):
        client.get("http://svc/ok")


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "1"])
def test_a_bad_last_resort_rate_is_refused_naming_the_option(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="last_resort"):
        ResilientTransport(endpoints=["http://a:1", "http://b:2"], last_resort=bad)
    with pytest.raises(ConfigurationError, match="last_resort"):
        AsyncResilientTransport(endpoints=["http://a:1", "http://b:2"], last_resort=bad)


def test_sixteen_requests_at_once_all_answered_by_the_endpoint_that_is_back(
    servers: tuple[Server, Server], closed_port: str
) -> None:
    """Every circuit open, w1 back: one request probes it, the other 15 wait and follow."""
    w1, _ = servers
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(reset_timeout=30, clock=clock)
    _open(breakers, clock, w1.url, closed_port)

    async def main() -> list[Any]:
        transport = AsyncResilientTransport(
            endpoints=[closed_port, w1.url], breakers=breakers, clock=clock, listeners=[events]
        )
        async with httpx.AsyncClient(transport=transport) as client:
            return await asyncio.gather(
                *(client.get("http://svc/ok") for _ in range(16)), return_exceptions=True
            )

    results = asyncio.run(main())
    assert [response(r).json()["server"] for r in results] == ["w1"] * 16
    assert all(response(r).extensions["failsafe.last_resort"] for r in results)
    assert tried(events) == [w1.url] * 16
    assert breakers.get(w1.url).state is CircuitState.CLOSED


def test_sixteen_threads_at_once_all_answered_by_the_endpoint_that_is_back(
    servers: tuple[Server, Server], closed_port: str
) -> None:
    """The same with one httpx.Client shared by 16 threads."""
    w1, _ = servers
    clock = FakeClock()
    events = RecordingListener()
    breakers = KeyedCircuitBreaker(reset_timeout=30, clock=clock)
    _open(breakers, clock, w1.url, closed_port)
    transport = ResilientTransport(
        endpoints=[closed_port, w1.url], breakers=breakers, clock=clock, listeners=[events]
    )
    start = threading.Barrier(16)

    def get(client: httpx.Client) -> httpx.Response:
        start.wait(10)
        return client.get("http://svc/ok")

    with httpx.Client(transport=transport) as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(get, [client] * 16))
    assert [r.json()["server"] for r in results] == ["w1"] * 16
    assert tried(events) == [w1.url] * 16
    assert breakers.get(w1.url).state is CircuitState.CLOSED


def test_a_circuit_closed_since_it_refused_the_request_is_followed(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """Refused by w1's open circuit, which another request closed meanwhile: sent to w1.

    Here a listener closes w1's circuit when the second endpoint refuses, as another
    request's last resort would. The request follows it there, without a probe of its own.
    """
    w1, _ = servers
    clock = FakeClock()
    events = RecordingListener()

    def close_w1(event: object) -> None:
        if isinstance(event, CircuitRejected) and event.key == closed_port:
            breakers.get(w1.url).close()

    breakers = KeyedCircuitBreaker(reset_timeout=30, clock=clock, listeners=[close_w1, events])
    _open(breakers, clock, w1.url, closed_port)
    [result] = http.run(
        [GET("/ok")],
        endpoints=[w1.url, closed_port],
        breakers=breakers,
        clock=clock,
        listeners=[events],
    )
    assert response(result).json()["server"] == "w1"
    assert response(result).extensions["failsafe.last_resort"] is True
    assert tried(events) == [w1.url]
    assert events.of_type(CircuitHalfOpened) == []  # no probe: the circuit was closed
