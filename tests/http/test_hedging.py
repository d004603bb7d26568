"""Hedging in ResilientTransport and AsyncResilientTransport, against real servers on loopback.

Three uvicorn processes of tests/http/hedging_app.py: ``slow`` answers ``/item`` after
500 ms, ``fast`` and ``spare`` at once. A hedge waits 50 ms (real time: the servers' latency
is real), so a request to ``slow`` first is hedged, and the hedge, sent to the next
endpoint, wins.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from failsafe import ConfigurationError, Hedging
from failsafe.events import HedgeStarted
from failsafe.http import (
    AsyncResilientTransport,
    HttpAttempt,
    ResilientTransport,
    endpoint_breakers,
)
from failsafe.testing import FakeClock, RecordingListener
from tests.http.conftest import Server

DELAY = 0.05


class LagServer(Server):
    """A uvicorn process of hedging_app whose ``/item`` takes ``lag_ms``."""

    def __init__(self, name: str, lag_ms: int) -> None:
        super().__init__(
            name,
            app="tests.http.hedging_app:app",
            env={"LAG_MS": str(lag_ms)},
            ready_path="/stats",
        )

    def stats(self) -> dict[str, int]:
        """The server's counts so far."""
        return httpx.get(f"{self.url}/stats", timeout=2.0).json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def lag_servers() -> Iterator[tuple[LagServer, LagServer, LagServer]]:
    """``slow`` (500 ms), ``fast`` and ``spare`` (at once), up for the module."""
    started = [LagServer("slow", 500), LagServer("fast", 0), LagServer("spare", 0)]
    yield started[0], started[1], started[2]
    for server in started:
        server.kill()


class Recording(httpx.BaseTransport):
    """Wraps httpx's transport; keeps every response it gave."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.responses: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.responses.append(response)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncRecording(httpx.AsyncBaseTransport):
    """The asyncio twin of `Recording`."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.responses: list[httpx.Response] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def settle(transport: ResilientTransport | AsyncResilientTransport) -> None:
    """Wait (10 s at most) until the transport's hedged attempts have all ended."""
    hedging = transport._resilience.hedging
    assert hedging is not None
    pause = threading.Event()
    for _ in range(1000):
        if hedging.threads == 0:
            return
        pause.wait(0.01)
    raise AssertionError("hedged attempts still running")


def send(
    kind: str, method: str, path: str, *, headers: dict[str, str] | None = None, **options: Any
) -> tuple[httpx.Response, list[httpx.Response]]:
    """One request through a client on a hedging transport; the response and the inner ones."""
    options.setdefault("hedging", Hedging(delay=DELAY))
    if kind == "sync":
        inner = Recording()
        transport = ResilientTransport(inner, **options)
        with httpx.Client(transport=transport, base_url="http://svc", timeout=5.0) as client:
            response = client.request(method, path, headers=headers)
            settle(transport)
        return response, inner.responses

    async def main() -> tuple[httpx.Response, list[httpx.Response]]:
        ainner = AsyncRecording()
        transport = AsyncResilientTransport(ainner, **options)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://svc", timeout=5.0
        ) as client:
            response = await client.request(method, path, headers=headers)
        return response, ainner.responses

    return asyncio.run(main())


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """The same scenario through httpx.Client and httpx.AsyncClient."""
    return str(request.param)


def test_a_slow_first_endpoint_loses_to_the_hedge(
    kind: str, lag_servers: tuple[LagServer, LagServer, LagServer]
) -> None:
    """A GET with no answer after the delay goes to the next endpoint too, which answers."""
    slow, fast, _ = lag_servers
    events = RecordingListener()
    response, _ = send(kind, "GET", "/item", endpoints=[slow.url, fast.url], listeners=[events])
    assert response.json() == {"server": "fast", "method": "GET"}
    assert response.extensions["failsafe.endpoint"] == fast.url
    assert response.extensions["failsafe.attempts"] == 2
    [hedge] = events.of_type(HedgeStarted)
    assert (hedge.policy, hedge.attempt, hedge.delay, hedge.target) == (
        "http-hedging",
        2,
        DELAY,
        fast.url,
    )
    assert str(response.request.url) == f"{fast.url}/item"  # the hedge's own request


def test_a_post_is_never_hedged(
    kind: str, lag_servers: tuple[LagServer, LagServer, LagServer]
) -> None:
    """A POST without an idempotency key waits for its one endpoint: no hedge."""
    slow, fast, _ = lag_servers
    events = RecordingListener()
    response, inner = send(
        kind, "POST", "/item", endpoints=[slow.url, fast.url], listeners=[events]
    )
    assert response.json() == {"server": "slow", "method": "POST"}
    assert events.of_type(HedgeStarted) == []
    assert len(inner) == 1


def test_a_post_with_an_idempotency_key_is_hedged(
    kind: str, lag_servers: tuple[LagServer, LagServer, LagServer]
) -> None:
    """A POST that carries an Idempotency-Key may be sent twice: it is hedged."""
    slow, fast, _ = lag_servers
    response, _ = send(
        kind,
        "POST",
        "/item",
        headers={"Idempotency-Key": "order-1"},
        endpoints=[slow.url, fast.url],
    )
    assert response.json() == {"server": "fast", "method": "POST"}


def test_an_endpoint_whose_circuit_is_open_is_skipped(
    kind: str, lag_servers: tuple[LagServer, LagServer, LagServer]
) -> None:
    """The hedge goes to the next endpoint whose circuit is not open."""
    slow, fast, spare = lag_servers
    events = RecordingListener()
    breakers = endpoint_breakers()
    breakers.get(fast.url).open()
    response, _ = send(
        kind,
        "GET",
        "/item",
        endpoints=[slow.url, fast.url, spare.url],
        breakers=breakers,
        listeners=[events],
    )
    assert response.json()["server"] == "spare"
    assert [e.target for e in events.of_type(HedgeStarted)] == [spare.url]
    assert fast.url not in {e.endpoint for e in events.of_type(HttpAttempt)}


def test_a_losing_response_is_closed(lag_servers: tuple[LagServer, LagServer, LagServer]) -> None:
    """Under a sync client the loser's response arrives later and is closed, unread."""
    slow, fast, _ = lag_servers
    response, inner = send("sync", "GET", "/item", endpoints=[slow.url, fast.url], buffer=False)
    assert response.json()["server"] == "fast"
    [loser] = [r for r in inner if r is not response]
    assert loser.status_code == 200
    assert loser.is_closed


def test_a_losing_request_is_cancelled(lag_servers: tuple[LagServer, LagServer, LagServer]) -> None:
    """Under an async client the loser's request is cancelled: the slow server sees it go."""
    slow, fast, _ = lag_servers
    before = slow.stats()
    response, inner = send("async", "GET", "/item", endpoints=[slow.url, fast.url])
    assert response.json()["server"] == "fast"
    assert inner == [response]  # the loser never got a response to leave open
    pause = threading.Event()
    for _ in range(200):  # the server notices the closed connection within its lag
        if slow.stats()["disconnected"] > before["disconnected"]:
            break
        pause.wait(0.01)
    after = slow.stats()
    assert after["disconnected"] == before["disconnected"] + 1
    assert after["served"] == before["served"]


def test_a_losing_thread_does_not_retry(
    lag_servers: tuple[LagServer, LagServer, LagServer],
) -> None:
    """A sync loser whose answer is a 503 stops there: no retry, no failover, for nothing."""
    slow, fast, _ = lag_servers
    before = slow.stats()["served"]
    events = RecordingListener()
    response, _ = send(
        "sync",
        "GET",
        "/fail-slow",
        endpoints=[slow.url, fast.url],
        clock=FakeClock(),  # the retries' backoff: no real sleep
        listeners=[events],
    )
    assert response.json()["server"] == "fast"
    assert slow.stats()["served"] == before + 1
    assert [e.endpoint for e in events.of_type(HttpAttempt)].count(slow.url) == 1


def test_without_endpoints_the_hedge_goes_to_the_same_origin(
    kind: str, lag_servers: tuple[LagServer, LagServer, LagServer]
) -> None:
    """With no endpoint list every attempt goes to the request's own origin."""
    _, fast, _ = lag_servers
    events = RecordingListener()
    response, _ = send(
        kind, "GET", f"{fast.url}/item", hedging=Hedging(delay=0), listeners=[events]
    )
    assert response.json()["server"] == "fast"
    assert [e.target for e in events.of_type(HedgeStarted)] == [fast.url]


def test_hedging_must_be_a_hedging_policy() -> None:
    """``hedging=`` takes a Hedging policy; anything else is refused, named."""
    with pytest.raises(ConfigurationError) as info:
        ResilientTransport(hedging=0.05)  # type: ignore[arg-type]
    assert info.value.option == "hedging"
    assert "hedging 'http-hedging'" in repr(ResilientTransport(hedging=Hedging()))
