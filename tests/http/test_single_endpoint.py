"""The transport's short paths, against an in-process mock transport.

With one endpoint (or none: the request's own origin) the transport runs the request without
a failover layer and binds each endpoint's breaker in directly. These tests pin that what the
caller sees is what the full path gives: attempts counted, the endpoint named, errors wrapped
in AllEndpointsFailed, circuits opened and skipped, events emitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from failsafe import Backoff, CircuitOpenError, CircuitState, KeyedCircuitBreaker
from failsafe.exceptions import ConfigurationError
from failsafe.http import (
    AllEndpointsFailed,
    AsyncResilientTransport,
    HttpAttempt,
    ResilientTransport,
    endpoint_breakers,
)
from failsafe.testing import FakeClock, RecordingListener

A = "http://a.test:8001"
B = "http://b.test:8002"

Action = int | type[Exception]  # a status to answer, or an exception to raise


class Script:
    """A mock server: answers each request with the next action and records what it saw."""

    def __init__(self, actions: Sequence[Action], then: Action = 200) -> None:
        self.actions = list(actions)
        self.then = then
        self.seen: list[tuple[str, str]] = []  # (url, Host header)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((str(request.url), request.headers["host"]))
        action = self.actions.pop(0) if self.actions else self.then
        if isinstance(action, int):
            return httpx.Response(action, content=b"body")
        raise action("scripted", request=request)  # type: ignore[call-arg]


def send(
    kind: str, script: Script, urls: Sequence[str], **options: Any
) -> list[httpx.Response | Exception]:
    """GET each URL in order through a resilient transport; return responses or exceptions."""
    options = {"clock": FakeClock(), "backoff": Backoff.none(), **options}
    results: list[httpx.Response | Exception] = []
    if kind == "sync":
        sync = ResilientTransport(httpx.MockTransport(script), **options)
        with httpx.Client(transport=sync) as client:
            for url in urls:
                try:
                    results.append(client.get(url))
                except Exception as exc:
                    results.append(exc)
        return results

    async def main() -> None:
        transport = AsyncResilientTransport(httpx.MockTransport(script), **options)
        async with httpx.AsyncClient(transport=transport) as client:
            for url in urls:
                try:
                    results.append(await client.get(url))
                except Exception as exc:
                    results.append(exc)

    asyncio.run(main())
    return results


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def response(result: httpx.Response | Exception) -> httpx.Response:
    assert isinstance(result, httpx.Response), result
    return result


def failed(result: httpx.Response | Exception) -> AllEndpointsFailed:
    assert isinstance(result, AllEndpointsFailed), result
    return result


def test_one_endpoint_aims_counts_and_names_it(kind: str) -> None:
    """Retries on 503 count as attempts; the response names the endpoint that answered."""
    script = Script([503, 502])
    [result] = send(kind, script, ["http://elsewhere:9/v1/x?q=1"], endpoints=[A])
    r = response(result)
    assert r.status_code == 200
    assert r.extensions["failsafe.endpoint"] == A
    assert r.extensions["failsafe.attempts"] == 3
    assert script.seen == [(f"{A}/v1/x?q=1", "a.test:8001")] * 3


def test_one_endpoint_errors_are_all_endpoints_failed(kind: str) -> None:
    """Connection errors on the one endpoint end as AllEndpointsFailed, as with a list."""
    script = Script([], then=httpx.ConnectError)
    [result] = send(kind, script, ["http://elsewhere/x"], endpoints=[A], attempts=3)
    error = failed(result)
    assert [(f.endpoint, f.attempts, f.status_code) for f in error.failures] == [(A, 3, None)]
    assert isinstance(error.failures[0].error, httpx.ConnectError)
    assert error.__cause__ is error.failures[0].error
    assert len(script.seen) == 3


def test_one_endpoint_returns_the_last_retryable_response(kind: str) -> None:
    """Every attempt answered 503: the last response is returned, not an error."""
    script = Script([], then=503)
    [result] = send(kind, script, ["http://elsewhere/x"], endpoints=[A], attempts=2)
    r = response(result)
    assert r.status_code == 503
    assert r.extensions["failsafe.attempts"] == 2
    assert r.extensions["failsafe.endpoint"] == A


def test_one_endpoint_passes_other_errors_through(kind: str) -> None:
    """An error that is not retryable reaches the caller unchanged, after one attempt."""
    script = Script([httpx.UnsupportedProtocol])
    [result] = send(kind, script, ["http://elsewhere/x"], endpoints=[A])
    assert type(result) is httpx.UnsupportedProtocol
    assert len(script.seen) == 1


def test_one_endpoint_circuit_opens_then_is_skipped(kind: str) -> None:
    """Five failed requests open the endpoint's circuit; the next is refused unsent."""
    breakers = KeyedCircuitBreaker(reset_timeout=30.0, clock=FakeClock())
    script = Script([], then=httpx.ConnectError)
    results = send(kind, script, ["http://x/1"] * 6, endpoints=[A], attempts=1, breakers=breakers)
    assert all(isinstance(failed(r).failures[0].error, httpx.ConnectError) for r in results[:5])
    refused = failed(results[5])
    assert isinstance(refused.failures[0].error, CircuitOpenError)
    assert (refused.failures[0].endpoint, refused.failures[0].attempts) == (A, 0)
    assert len(script.seen) == 5
    assert breakers.get(A).state is CircuitState.OPEN
    assert list(breakers.breakers) == [A]


def test_one_endpoint_emits_an_event_per_attempt(kind: str) -> None:
    events = RecordingListener()
    script = Script([503])
    send(kind, script, ["http://x/1"], endpoints=[A], listeners=[events])
    attempts = events.of_type(HttpAttempt)
    assert [(e.endpoint, e.attempt, e.status_code) for e in attempts] == [(A, 1, 503), (A, 2, 200)]


def test_no_endpoints_keeps_a_breaker_per_origin(kind: str) -> None:
    """Each origin has its own circuit: one opening leaves the other origin's closed."""
    transport_breakers = KeyedCircuitBreaker(clock=FakeClock())

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    results = send(
        kind,
        _Handler(handler),
        [f"{A}/x"] * 6 + [f"{B}/y"],
        attempts=1,
        breakers=transport_breakers,
    )
    assert isinstance(results[4], httpx.ConnectError)
    assert isinstance(failed(results[5]).failures[0].error, CircuitOpenError)
    assert response(results[6]).extensions["failsafe.endpoint"] == B
    assert transport_breakers.get(A).state is CircuitState.OPEN
    assert transport_breakers.get(B).state is CircuitState.CLOSED


def test_a_key_function_still_keys_the_breakers(kind: str) -> None:
    """A shared KeyedCircuitBreaker with its own key function is consulted on every attempt."""
    breakers = KeyedCircuitBreaker(key=lambda: "one-for-all", clock=FakeClock())
    send(kind, Script([]), [f"{A}/x", f"{B}/y"], breakers=breakers)
    send(kind, Script([]), [f"{A}/x"], endpoints=[B], breakers=breakers)
    assert list(breakers.breakers) == ["one-for-all"]


class _Handler(Script):
    """A script whose answers come from a function."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        super().__init__([])
        self.handler = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((str(request.url), request.headers["host"]))
        return self.handler(request)


def test_endpoint_breakers_tune_the_transports_rule() -> None:
    """endpoint_breakers(threshold=2): the circuit opens after 2 failures, then probes.

    503s and connection errors count, 404s do not; while the circuit is open the transport
    skips the endpoint without a request, and it probes it after ``reset_timeout``.
    """
    clock = FakeClock()
    breakers = endpoint_breakers(threshold=2, reset_timeout=5.0, clock=clock)
    assert isinstance(breakers, KeyedCircuitBreaker)
    script = Script([404, 503, httpx.ConnectError], then=200)
    transport = ResilientTransport(
        httpx.MockTransport(script),
        endpoints=[A],
        breakers=breakers,
        attempts=1,
        clock=clock,
        backoff=Backoff.none(),
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://svc/x").status_code == 404  # not a failure
        assert client.get("http://svc/x").status_code == 503  # failure 1
        with pytest.raises(AllEndpointsFailed):
            client.get("http://svc/x")  # failure 2: the circuit opens
        assert breakers.get(A).state is CircuitState.OPEN
        with pytest.raises(AllEndpointsFailed):
            client.get("http://svc/x")  # skipped without a request
        assert len(script.seen) == 3
        clock.advance(5.0)
        assert client.get("http://svc/x").status_code == 200  # the probe succeeds
    assert breakers.get(A).state is CircuitState.CLOSED


def test_endpoint_breakers_open_longer_after_each_failed_probe() -> None:
    """max_reset_timeout: 2 s, then 4 s after a failed probe, then 8 (the cap); a close resets."""
    clock = FakeClock()
    breakers = endpoint_breakers(threshold=1, reset_timeout=2.0, max_reset_timeout=8.0, clock=clock)
    script = Script([httpx.ConnectError] * 4, then=200)
    transport = ResilientTransport(
        httpx.MockTransport(script), endpoints=[A], breakers=breakers, attempts=1, clock=clock
    )
    with httpx.Client(transport=transport) as client:
        waits = []
        for _ in range(4):
            with pytest.raises(AllEndpointsFailed):
                client.get("http://svc/x")  # opens (or a failed probe opens again)
            waits.append(breakers.get(A).retry_after)
            clock.advance(waits[-1])
        assert waits == [2.0, 4.0, 8.0, 8.0]
        assert client.get("http://svc/x").status_code == 200  # the probe closes it
        assert len(script.seen) == 5
    assert breakers.get(A).state is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("option", "value"),
    [("threshold", 0), ("reset_timeout", -1.0), ("max_reset_timeout", 1.0)],
)
def test_endpoint_breakers_refuse_bad_numbers(option: str, value: float) -> None:
    """Bad numbers are refused at construction, named (a cap below the first period too)."""
    with pytest.raises(ConfigurationError, match=option):
        endpoint_breakers(**{option: value})
