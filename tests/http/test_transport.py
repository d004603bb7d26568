"""ResilientTransport and AsyncResilientTransport against real uvicorn servers on loopback.

Every client here has a connection pool of one connection with a short pool timeout: a
response that a retry discarded without closing would block the next attempt (PoolTimeout).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from failsafe import (
    Backoff,
    CircuitState,
    ConfigurationError,
    ConsecutiveFailures,
    KeyedCircuitBreaker,
    TimeoutExceeded,
)
from failsafe.events import CircuitOpened, FailedOver, RetryScheduled
from failsafe.http import (
    AllEndpointsFailed,
    AsyncResilientTransport,
    DeadlineExceeded,
    HttpAttempt,
    ResilientTransport,
)
from failsafe.testing import FakeClock, RecordingListener
from tests.http.conftest import Server

Step = tuple[str, str, dict[str, Any]]  # method, path, httpx request options


class Http:
    """Sends requests through one client (sync or async) built on a resilient transport."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind

    def run(
        self,
        steps: Sequence[Step],
        *,
        between: Callable[[int], None] | None = None,
        timeout: float = 5.0,
        **options: Any,
    ) -> list[httpx.Response | Exception]:
        """Send each step in order; return each response (body read) or exception."""
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client_timeout = httpx.Timeout(timeout, pool=2.0)
        results: list[httpx.Response | Exception] = []
        if self.kind == "sync":
            transport = ResilientTransport(httpx.HTTPTransport(limits=limits), **options)
            with httpx.Client(
                transport=transport, base_url="http://svc", timeout=client_timeout
            ) as c:
                for index, (method, path, kw) in enumerate(steps):
                    try:
                        results.append(c.request(method, path, **kw))
                    except Exception as exc:
                        results.append(exc)
                    if between is not None:
                        between(index)
            return results

        async def main() -> None:
            transport = AsyncResilientTransport(httpx.AsyncHTTPTransport(limits=limits), **options)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://svc", timeout=client_timeout
            ) as c:
                for index, (method, path, kw) in enumerate(steps):
                    try:
                        results.append(await c.request(method, path, **kw))
                    except Exception as exc:
                        results.append(exc)
                    if between is not None:
                        between(index)

        asyncio.run(main())
        return results


@pytest.fixture(params=["sync", "async"])
def http(request: pytest.FixtureRequest) -> Http:
    """The same scenario through httpx.Client and httpx.AsyncClient."""
    return Http(request.param)


def tried(events: RecordingListener) -> list[str]:
    return [e.endpoint for e in events.of_type(HttpAttempt)]


def GET(path: str, **kw: Any) -> Step:
    return ("GET", path, kw)


def POST(path: str, **kw: Any) -> Step:
    return ("POST", path, kw)


def response(result: httpx.Response | Exception) -> httpx.Response:
    assert isinstance(result, httpx.Response), repr(result)
    return result


def test_closed_port_four_attempts_then_the_second_endpoint(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """The seed: the first try plus three retries on instance 1, then instance 2 answers."""
    w1, _ = servers
    clock, events = FakeClock(), RecordingListener()
    [result] = http.run(
        [GET("/ok?x=1")], endpoints=[closed_port, w1.url], clock=clock, listeners=[events]
    )
    r = response(result)
    assert r.status_code == 200
    assert r.json()["server"] == "w1"
    assert r.json()["path"] == "/ok"
    assert r.json()["query"] == "x=1"
    assert tried(events) == [closed_port] * 4 + [w1.url]
    assert len(clock.sleeps) == 3
    assert all(0 <= d <= 1 for d in clock.sleeps)
    assert r.extensions["failsafe.endpoint"] == w1.url
    assert r.extensions["failsafe.attempts"] == 5
    moved = events.of_type(FailedOver)
    assert [(e.from_target, e.to_target) for e in moved] == [(closed_port, w1.url)]


def test_open_circuit_is_skipped_without_a_network_attempt(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """After five refusals the closed endpoint's circuit opens; later requests skip it."""
    w1, _ = servers
    events = RecordingListener()
    results = http.run(
        [GET("/ok"), GET("/ok")],
        endpoints=[closed_port, w1.url],
        clock=FakeClock(),
        backoff=Backoff.none(),
        attempts=5,
        listeners=[events],
    )
    assert [response(r).json()["server"] for r in results] == ["w1", "w1"]
    assert tried(events) == [closed_port] * 5 + [w1.url, w1.url]
    assert len(events.of_type(CircuitOpened)) == 1


def test_breakers_are_shared_by_clients(servers: tuple[Server, Server], closed_port: str) -> None:
    """Two clients given one KeyedCircuitBreaker share each endpoint's circuit."""
    w1, _ = servers
    shared = KeyedCircuitBreaker(trip=ConsecutiveFailures(threshold=2), reset_timeout=60)
    events = RecordingListener()
    common: dict[str, Any] = {
        "endpoints": [closed_port, w1.url],
        "breakers": shared,
        "backoff": Backoff.none(),
        "listeners": [events],
    }
    first = Http("sync").run([GET("/ok")], **common)
    assert shared.get(closed_port).state is CircuitState.OPEN
    events.clear()
    second = Http("async").run([GET("/ok")], **common)
    assert response(first[0]).status_code == response(second[0]).status_code == 200
    assert tried(events) == [w1.url]  # the second client never called the closed port


@pytest.mark.real_time
def test_server_killed_in_the_middle_of_a_run(
    http: Http, servers: tuple[Server, Server], fresh_server: Server
) -> None:
    """A server killed (kill -9) while a request is in flight: the request fails over."""
    _, w2 = servers
    events = RecordingListener()
    killer = threading.Timer(0.3, fresh_server.kill)

    def start_killer(index: int) -> None:
        if index == 0:
            killer.start()

    results = http.run(
        [GET("/ok"), GET("/slow/3000"), GET("/ok")],
        between=start_killer,
        endpoints=[fresh_server.url, w2.url],
        clock=FakeClock(),
        listeners=[events],
    )
    killer.join()
    servers_seen = [response(r).json()["server"] for r in results]
    assert servers_seen == ["w3", "w2", "w2"]
    attempts = events.of_type(HttpAttempt)
    assert attempts[1].endpoint == fresh_server.url
    assert isinstance(attempts[1].error, httpx.TransportError)  # cut mid-request
    assert {a.endpoint for a in attempts[2:-1]} == {fresh_server.url, w2.url}


def test_connection_reset_mid_response_is_retried_then_reported(
    http: Http, servers: tuple[Server, Server]
) -> None:
    """A body cut mid-response is a transport error: retried, failed over, then reported."""
    w1, w2 = servers
    [result] = http.run([GET("/reset")], endpoints=[w1.url, w2.url], clock=FakeClock())
    assert isinstance(result, AllEndpointsFailed)
    assert isinstance(result, httpx.TransportError)
    assert [(f.endpoint, f.attempts) for f in result.failures] == [(w1.url, 4), (w2.url, 4)]
    assert all(isinstance(f.error, httpx.RemoteProtocolError) for f in result.failures)
    assert isinstance(result.__cause__, httpx.RemoteProtocolError)


@pytest.mark.real_time
def test_server_slower_than_the_timeout(http: Http, servers: tuple[Server, Server]) -> None:
    """A server slower than the read timeout: each attempt times out, both endpoints fail."""
    w1, w2 = servers
    [result] = http.run(
        [GET("/slow/1000")], timeout=0.05, attempts=2, endpoints=[w1.url, w2.url], clock=FakeClock()
    )
    assert isinstance(result, AllEndpointsFailed)
    assert [f.attempts for f in result.failures] == [2, 2]
    assert all(isinstance(f.error, httpx.ReadTimeout) for f in result.failures)


def test_503_is_retried_and_the_last_response_returned(
    http: Http, servers: tuple[Server, Server]
) -> None:
    """503 everywhere: four attempts per endpoint, then the last 503 response is returned."""
    w1, w2 = servers
    clock, events = FakeClock(), RecordingListener()
    [result] = http.run(
        [GET("/status/503")], endpoints=[w1.url, w2.url], clock=clock, listeners=[events]
    )
    r = response(result)
    assert r.status_code == 503
    assert r.json()["server"] == "w2"
    assert r.extensions["failsafe.attempts"] == 8
    assert tried(events) == [w1.url] * 4 + [w2.url] * 4
    assert len(clock.sleeps) == 6


def test_429_retry_after_sets_the_delay_capped(http: Http, servers: tuple[Server, Server]) -> None:
    """A 429 with Retry-After: 7 waits 7 s (fake), capped by max_retry_after."""
    w1, _ = servers
    clock = FakeClock()
    [result] = http.run([GET("/throttle/7")], endpoints=[w1.url], clock=clock, attempts=3)
    assert response(result).status_code == 429
    assert clock.sleeps == [7.0, 7.0]
    capped = FakeClock()
    http.run(
        [GET("/throttle/7")], endpoints=[w1.url], clock=capped, attempts=3, max_retry_after=2.5
    )
    assert capped.sleeps == [2.5, 2.5]


def test_404_is_an_answer(http: Http, servers: tuple[Server, Server]) -> None:
    """A 404 is returned at once: one attempt, no delay, no failover."""
    w1, w2 = servers
    clock, events = FakeClock(), RecordingListener()
    [result] = http.run(
        [GET("/status/404")], endpoints=[w1.url, w2.url], clock=clock, listeners=[events]
    )
    assert response(result).status_code == 404
    assert tried(events) == [w1.url]
    assert clock.sleeps == []


def test_post_with_generated_key_sends_the_same_key_everywhere(
    http: Http, servers: tuple[Server, Server]
) -> None:
    """A POST gets one Idempotency-Key, sent unchanged on every retry and every endpoint."""
    w1, w2 = servers
    name = uuid.uuid4().hex
    [result] = http.run(
        [POST(f"/flaky/{name}/99", json={"orderId": "o-1"})],
        endpoints=[w1.url, w2.url],
        idempotency_key=True,
        clock=FakeClock(),
    )
    assert response(result).status_code == 503
    seen = []
    for server in (w1, w2):
        seen += httpx.get(f"{server.url}/seen/{name}").json()["seen"]
    assert len(seen) == 8
    keys = {key for method, key in seen}
    assert len(keys) == 1
    assert None not in keys
    assert {method for method, key in seen} == {"POST"}


def test_post_with_callers_key_is_retried_until_success(
    http: Http, servers: tuple[Server, Server]
) -> None:
    """A POST carrying its own Idempotency-Key is retried: 503, 503, then 200."""
    w1, _ = servers
    name = uuid.uuid4().hex
    [result] = http.run(
        [POST(f"/flaky/{name}/2", json={}, headers={"Idempotency-Key": "k-42"})],
        endpoints=[w1.url],
        clock=FakeClock(),
    )
    assert response(result).status_code == 200
    assert httpx.get(f"{w1.url}/seen/{name}").json()["seen"] == [["POST", "k-42"]] * 3


def test_post_without_key_is_not_resent_after_reaching_the_server(
    http: Http, servers: tuple[Server, Server]
) -> None:
    """A POST with no Idempotency-Key that got a 503 is returned as is: it may have applied."""
    w1, w2 = servers
    name = uuid.uuid4().hex
    events = RecordingListener()
    [result] = http.run(
        [POST(f"/flaky/{name}/9", json={})],
        endpoints=[w1.url, w2.url],
        clock=FakeClock(),
        listeners=[events],
    )
    assert response(result).status_code == 503
    assert tried(events) == [w1.url]


def test_post_without_key_is_resent_after_a_refused_connection(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """A refused connection never reached the server, so even a keyless POST fails over."""
    w1, _ = servers
    [result] = http.run(
        [POST("/ok", json={"a": 1})], endpoints=[closed_port, w1.url], clock=FakeClock()
    )
    assert response(result).json()["server"] == "w1"
    assert response(result).json()["body"] == '{"a":1}'


def test_streamed_body_is_never_resent(http: Http, servers: tuple[Server, Server]) -> None:
    """A body given as a stream is sent once; the error says it cannot be replayed."""
    w1, w2 = servers
    events = RecordingListener()
    stream: Any
    if http.kind == "sync":
        stream = iter([b"chunk-1", b"chunk-2"])
    else:

        async def chunks() -> Any:
            yield b"chunk-1"
            yield b"chunk-2"

        stream = chunks()
    [result] = http.run(
        [("PUT", "/reset", {"content": stream})],
        endpoints=[w1.url, w2.url],
        clock=FakeClock(),
        listeners=[events],
    )
    assert isinstance(result, httpx.RemoteProtocolError)
    assert tried(events) == [w1.url]
    assert any("cannot be replayed" in note for note in result.__notes__)


def test_endpoint_base_path_and_host_replace_the_requests(
    http: Http, servers: tuple[Server, Server]
) -> None:
    """The endpoint's scheme, host, port and base path replace the request's; the rest stays."""
    w1, _ = servers
    [result] = http.run([GET("/ok?a=1&b=2")], endpoints=[f"{w1.url}/api"])
    body = response(result).json()
    assert body["path"] == "/api/ok"
    assert body["query"] == "a=1&b=2"
    assert body["host"] == w1.url.removeprefix("http://")
    assert str(response(result).request.url) == f"{w1.url}/api/ok?a=1&b=2"


def test_no_endpoints_means_the_request_url(http: Http, servers: tuple[Server, Server]) -> None:
    """Without endpoints the request's own URL is used, retried under its own breaker."""
    w1, _ = servers
    clock, events = FakeClock(), RecordingListener()
    [result] = http.run([GET(f"{w1.url}/status/503")], clock=clock, listeners=[events])
    assert response(result).status_code == 503
    assert tried(events) == [w1.url] * 4
    assert len(events.of_type(RetryScheduled)) == 3


class _SlowNetwork(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Spends fake time before each request, as a slow network would."""

    def __init__(self, clock: FakeClock, seconds: float, inner: Any) -> None:
        self.clock, self.seconds, self.inner = clock, seconds, inner
        self.read_timeouts: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.read_timeouts.append(request.extensions["timeout"]["read"])
        self.clock.advance(self.seconds)
        return self.inner.handle_request(request)  # type: ignore[no-any-return]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.read_timeouts.append(request.extensions["timeout"]["read"])
        self.clock.advance(self.seconds)
        return await self.inner.handle_async_request(request)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_total_deadline_shrinks_timeouts_and_stops(
    kind: str, servers: tuple[Server, Server]
) -> None:
    """Each attempt's timeout shrinks to the time left; past the deadline, DeadlineExceeded."""
    w1, w2 = servers
    clock = FakeClock()
    options: dict[str, Any] = {
        "endpoints": [w1.url, w2.url],
        "deadline": 2.5,
        "backoff": Backoff.none(),
        "clock": clock,
    }
    network = _SlowNetwork(
        clock, 1.0, httpx.HTTPTransport() if kind == "sync" else httpx.AsyncHTTPTransport()
    )
    if kind == "sync":
        transport: Any = ResilientTransport(network, **options)
        with (
            httpx.Client(transport=transport, timeout=5.0) as client,
            pytest.raises(DeadlineExceeded) as info,
        ):
            client.get("http://svc/status/503")
    else:

        async def main() -> None:
            transport = AsyncResilientTransport(network, **options)
            async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
                await client.get("http://svc/status/503")

        with pytest.raises(DeadlineExceeded) as info:
            asyncio.run(main())
    assert isinstance(info.value, httpx.TimeoutException)
    assert isinstance(info.value, TimeoutExceeded)
    assert network.read_timeouts == [2.5, 1.5, 0.5]  # 5 s shrunk to the time left
    assert clock.monotonic() == 3.0  # three attempts of 1 s; none started past the deadline


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"endpoints": []}, "endpoints"),
        ({"endpoints": "http://a"}, "endpoints"),
        ({"endpoints": ["ftp://a"]}, "endpoints"),
        ({"endpoints": ["http://a", "http://a"]}, "endpoints"),
        ({"attempts": 0}, "attempts"),
        ({"deadline": -1}, "deadline"),
        ({"max_retry_after": -1}, "max_retry_after"),
        ({"breakers": "yes"}, "breakers"),
    ],
)
def test_bad_configuration_names_the_option(options: dict[str, Any], option: str) -> None:
    """Bad transport options fail at construction, naming the option."""
    for cls in (ResilientTransport, AsyncResilientTransport):
        with pytest.raises(ConfigurationError) as info:
            cls(**options)
        assert info.value.option == option


def test_no_wasted_delay_once_the_circuit_opens(
    http: Http, servers: tuple[Server, Server], closed_port: str
) -> None:
    """When a failure opens the endpoint's circuit, the next endpoint is tried at once."""
    w1, _ = servers
    clock, events = FakeClock(), RecordingListener()
    breakers = KeyedCircuitBreaker(trip=ConsecutiveFailures(threshold=2), clock=clock)
    [result] = http.run(
        [GET("/ok")],
        endpoints=[closed_port, w1.url],
        breakers=breakers,
        backoff=Backoff.constant(1.0),
        clock=clock,
        listeners=[events],
    )
    assert response(result).json()["server"] == "w1"
    assert tried(events) == [closed_port, closed_port, w1.url]
    assert clock.sleeps == [1.0]  # after the first refusal only: the second opened the circuit


def test_open_circuit_without_endpoints_is_an_httpx_error(http: Http, closed_port: str) -> None:
    """With no endpoint list, an open circuit still raises an httpx.HTTPError subclass."""
    results = http.run(
        [GET(f"{closed_port}/ok"), GET(f"{closed_port}/ok")],
        attempts=5,
        backoff=Backoff.none(),
        clock=FakeClock(),
    )
    assert isinstance(results[0], httpx.ConnectError)
    assert isinstance(results[1], AllEndpointsFailed)
    assert isinstance(results[1], httpx.HTTPError)
    assert results[1].failures[0].attempts == 0


def test_an_outer_default_retry_does_not_resend_what_the_transport_declined_to(
    servers: tuple[Server, Server],
) -> None:
    """A keyless POST dropped mid-response is not resent by the transport, nor by Retry()."""
    from failsafe import Retry

    w1, _ = servers
    sent = []
    with httpx.Client(transport=ResilientTransport(clock=FakeClock())) as client:

        def post() -> httpx.Response:
            sent.append(1)
            return client.post(f"{w1.url}/reset", json={"order": "o-1"})

        with pytest.raises(httpx.RemoteProtocolError) as info:
            Retry(clock=FakeClock()).call(post)
    assert sent == [1]
    assert any("not resent" in note for note in info.value.__notes__)
    # the same error, not marked by the transport, is transient for an outer retry
    from failsafe.predicates import TRANSIENT

    assert TRANSIENT.matches_exception(httpx.RemoteProtocolError("dropped"))
