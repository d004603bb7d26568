"""The transports' ``policies=``: a pipeline, or a configured one they follow across reloads.

Each policy kind's mapping onto the transport's options, the refusals (what a transport
cannot do, an option given twice), and reloads of a TOML file: the next request runs under
the new version (against a real uvicorn server), a request in flight finishes under its
own, and the per-endpoint breakers keep their state.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe import (
    AdaptiveConcurrency,
    Backoff,
    Bulkhead,
    BulkheadFull,
    Chaos,
    CircuitBreaker,
    CircuitState,
    ConcurrencyLimited,
    ConfigurationError,
    ConsecutiveFailures,
    Failover,
    FailureRate,
    Fallback,
    Hedging,
    KeyedCircuitBreaker,
    Pipeline,
    RateLimited,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
)
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe.config import ConfigError, from_dict, load
from failsafe.health import gauges
from failsafe.http import AsyncResilientTransport, ResilientTransport
from failsafe.testing import FakeClock
from tests.http.conftest import Server

ENDPOINTS = ["http://stock-1:8001", "http://stock-2:8002"]


class Client:
    """One resilient transport and its client, sync or async, kept across requests."""

    def __init__(self, kind: str, inner: Any = None, **options: Any) -> None:
        self.kind = kind
        self.runner: asyncio.Runner | None = None
        if kind == "sync":
            self.transport: ResilientTransport | AsyncResilientTransport = ResilientTransport(
                inner, **options
            )
            self.sync = httpx.Client(transport=self.transport, base_url="http://svc")
        else:
            self.runner = asyncio.Runner()
            self.transport = AsyncResilientTransport(inner, **options)
            self.async_ = httpx.AsyncClient(transport=self.transport, base_url="http://svc")

    def get(self, path: str) -> httpx.Response | Exception:
        """GET ``path``; the response (body read), or the exception raised."""
        try:
            if self.runner is None:
                return self.sync.get(path)
            return self.runner.run(self.async_.get(path))
        except Exception as exc:
            return exc

    def close(self) -> None:
        if self.runner is None:
            self.sync.close()
            return
        self.runner.run(self.async_.aclose())
        self.runner.close()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """The same scenario through ResilientTransport and AsyncResilientTransport."""
    return str(request.param)


@pytest.fixture
def clients(kind: str) -> Iterator[list[Client]]:
    """The clients a test builds (``make``), closed at its end."""
    built: list[Client] = []
    yield built
    for client in built:
        client.close()


def make(clients: list[Client], kind: str, inner: Any = None, **options: Any) -> Client:
    client = Client(kind, inner, **options)
    clients.append(client)
    return client


def response(result: httpx.Response | Exception) -> httpx.Response:
    assert isinstance(result, httpx.Response), repr(result)
    return result


class Recorder:
    """An inner MockTransport's handler: records each request's port, answers ``status``."""

    def __init__(self, status: int | None = 503, *, down: set[int] | None = None) -> None:
        self.status = status
        self.down = down or set()
        self.ports: list[int | None] = []
        self.mock = httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.ports.append(request.url.port)
        if request.url.port in self.down or self.status is None:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(self.status)


# -- what each kind sets ----------------------------------------------------------------------
def test_a_retry_sets_attempts_and_backoff(kind: str, clients: list[Client]) -> None:
    """A Retry's attempts and backoff are the transport's on each endpoint."""
    clock, server = FakeClock(), Recorder(503)
    policies = Pipeline(Retry(attempts=2, backoff=Backoff.constant(0.3)))
    client = make(clients, kind, server.mock, policies=policies, clock=clock)
    answer = response(client.get("/items"))
    assert answer.status_code == 503
    assert answer.extensions["failsafe.attempts"] == 2
    assert clock.sleeps == [0.3]


def test_a_retry_deadline_stops_the_retries_on_an_endpoint(
    kind: str, clients: list[Client]
) -> None:
    """A Retry's own deadline holds: no retry whose delay would end past it."""
    clock, server = FakeClock(), Recorder(503)
    policies = Pipeline(Retry(attempts=5, backoff=Backoff.constant(0.6), deadline=1.0))
    client = make(clients, kind, server.mock, policies=policies, clock=clock)
    assert response(client.get("/items")).extensions["failsafe.attempts"] == 2
    assert clock.sleeps == [0.6]


def test_a_retry_budget_that_is_spent_stops_the_retries(kind: str, clients: list[Client]) -> None:
    """A Retry's budget is the transport's: a spent budget means no retry."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=FakeClock())
    policies = Pipeline(Retry(attempts=4, backoff=Backoff.none(), budget=budget))
    client = make(clients, kind, Recorder(503).mock, policies=policies, clock=FakeClock())
    assert response(client.get("/items")).extensions["failsafe.attempts"] == 1


def test_a_circuit_breaker_sets_the_per_endpoint_breakers_with_the_http_rule(
    kind: str, clients: list[Client]
) -> None:
    """A CircuitBreaker's numbers make the per-endpoint breakers; a 503 counts (HTTP's rule)."""
    server = Recorder(503)
    policies = Pipeline(
        Retry(attempts=2, backoff=Backoff.none()),
        CircuitBreaker(threshold=2, reset_timeout=7, max_reset_timeout=20),
    )
    client = make(
        clients, kind, server.mock, endpoints=ENDPOINTS, policies=policies, last_resort=None
    )
    client.get("/items")
    breakers = client.transport.breakers
    assert isinstance(breakers, KeyedCircuitBreaker)
    first = breakers.get(ENDPOINTS[0])
    assert first.state is CircuitState.OPEN  # two 503s: the breaker's own on= counts none
    assert (first.reset_timeout, first.max_reset_timeout) == (7, 20)
    server.ports.clear()
    client.get("/items")
    assert server.ports == []  # both circuits open: nothing sent


def test_a_keyed_circuit_breaker_sets_the_bounds_too(kind: str, clients: list[Client]) -> None:
    """A KeyedCircuitBreaker's max_keys and idle_ttl bound the per-endpoint breakers."""
    policies = Pipeline(KeyedCircuitBreaker(threshold=3, max_keys=50, idle_ttl=120))
    client = make(clients, kind, Recorder(200).mock, policies=policies)
    breakers = client.transport.breakers
    assert breakers is not None
    assert (breakers.max_keys, breakers.idle_ttl) == (50, 120)
    assert breakers.get("http://svc").trip == ConsecutiveFailures(threshold=3)


def test_a_failure_rate_trip_is_honoured(kind: str, clients: list[Client]) -> None:
    """A FailureRate trip opens an endpoint's circuit once its failure rate is reached."""
    trip = FailureRate(threshold=0.5, window=60, minimum_calls=2)
    policies = Pipeline(Retry(attempts=2, backoff=Backoff.none()), CircuitBreaker(trip=trip))
    client = make(clients, kind, Recorder(None).mock, policies=policies, clock=FakeClock())
    client.get("/items")
    breakers = client.transport.breakers
    assert breakers is not None
    assert breakers.get("http://svc").state is CircuitState.OPEN


def test_a_timeout_is_the_whole_requests_deadline(kind: str, clients: list[Client]) -> None:
    """A Timeout before the retry bounds the whole request: the transport's deadline."""
    clock = FakeClock()
    read_timeouts: list[float] = []

    def slow_and_busy(request: httpx.Request) -> httpx.Response:
        read_timeouts.append(request.extensions["timeout"]["read"])
        clock.advance(1.0)
        return httpx.Response(503)

    policies = Pipeline(Timeout(2.5), Retry(backoff=Backoff.none()))
    client = make(clients, kind, httpx.MockTransport(slow_and_busy), policies=policies, clock=clock)
    # no attempt starts past the deadline: the last answer is returned
    assert response(client.get("/items")).extensions["failsafe.attempts"] == 3
    assert read_timeouts == [2.5, 1.5, 0.5]  # each attempt's timeout shrunk to the time left


def test_a_hedging_policy_hedges_idempotent_requests(kind: str, clients: list[Client]) -> None:
    """A Hedging policy is the transport's ``hedging``, named as the transport names it."""
    policies = Pipeline(Hedging(delay=0.05, clock=FakeClock()), Retry(attempts=1))
    client = make(clients, kind, Recorder(200).mock, endpoints=ENDPOINTS, policies=policies)
    assert "hedging 'http-hedging'" in repr(client.transport)
    assert response(client.get("/items")).status_code == 200


def test_a_bulkhead_runs_around_each_request_sync() -> None:
    """A Bulkhead admits one request at a time here: a second one is refused unsent."""
    entered, release = threading.Event(), threading.Event()
    sent: list[str] = []

    def blocking(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        entered.set()
        release.wait(10)
        return httpx.Response(200)

    policies = Pipeline(Bulkhead(max_concurrent=1), Retry(attempts=1))
    transport = ResilientTransport(httpx.MockTransport(blocking), policies=policies)
    with httpx.Client(transport=transport) as client:
        first = threading.Thread(target=client.get, args=("http://svc/first",))
        first.start()
        assert entered.wait(10)
        with pytest.raises(BulkheadFull):
            client.get("http://svc/second")
        release.set()
        first.join(10)
    assert sent == ["/first"]


def test_an_adaptive_limit_runs_around_each_request_async() -> None:
    """An AdaptiveConcurrency limit of one refuses a second request while one runs."""
    sent: list[str] = []

    async def main() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def blocking(request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            entered.set()
            await release.wait()
            return httpx.Response(200)

        limit = AdaptiveConcurrency(initial_limit=1, min_limit=1, max_limit=1)
        transport = AsyncResilientTransport(
            httpx.MockTransport(blocking), policies=Pipeline(limit, Retry(attempts=1))
        )
        async with httpx.AsyncClient(transport=transport) as client:
            first = asyncio.create_task(client.get("http://svc/first"))
            await entered.wait()
            with pytest.raises(ConcurrencyLimited):
                await client.get("http://svc/second")
            release.set()
            assert (await first).status_code == 200

    asyncio.run(main())
    assert sent == ["/first"]


def test_a_rate_limiter_and_chaos_run_around_each_request(kind: str, clients: list[Client]) -> None:
    """A RateLimiter refuses the request over its rate, and a Chaos fault is raised unsent."""
    server = Recorder(200)
    limiter = RateLimiter(rate=1, per=60, burst=1, clock=FakeClock())
    client = make(clients, kind, server.mock, policies=Pipeline(limiter))
    assert response(client.get("/first")).status_code == 200
    assert isinstance(client.get("/second"), RateLimited)
    chaos = Chaos.fault(1.0, ConnectionResetError, enabled=True)
    faulty = make(clients, kind, server.mock, policies=Pipeline(chaos, Retry()))
    assert isinstance(faulty.get("/third"), ConnectionResetError)
    assert len(server.ports) == 1  # only the first request was sent


def test_the_pipelines_breaker_leaves_the_health_snapshot() -> None:
    """The pipeline's breaker is a template: only the per-endpoint breakers are listed."""
    config = from_dict({"pipelines": {"listed": {"circuit_breaker": {"threshold": 3}}}})
    template = config["listed"].policies[0]
    assert any(g.attributes["failsafe.policy"] == "listed.circuit_breaker" for g in gauges())
    transport = ResilientTransport(policies=config["listed"], name="listed-http")
    names = {g.attributes["failsafe.policy"] for g in gauges()}
    assert "listed.circuit_breaker" not in names
    assert "listed-http-breaker" in names
    assert transport.breakers is not template


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policies", "words"),
    [
        (Pipeline(Fallback(value=None), Retry()), "fallback 'fallback': a transport cannot"),
        (Pipeline(Failover(["a", "b"])), "failover 'failover': a transport fails over across"),
        (
            Pipeline(Retry(), Timeout(2.0)),
            "timeout 'timeout' comes after retry 'retry': a timeout inside the retry bounds "
            "each attempt",
        ),
        (Pipeline(CircuitBreaker(), Retry()), "retry 'retry' comes after circuit_breaker"),
        (Pipeline(Retry(), Bulkhead()), "bulkhead 'bulkhead' comes after retry 'retry'"),
        (Pipeline(Retry(), Pipeline(Retry(name="inner"))), "retry 'inner' and retry 'retry'"),
        (
            Pipeline(CircuitBreaker(), KeyedCircuitBreaker()),
            "keyed_circuit_breaker 'circuit-breaker' and circuit_breaker",
        ),
        (Pipeline(CircuitBreaker(metrics_only=True)), "is metrics_only"),
        (Pipeline(KeyedCircuitBreaker(key=lambda: "tenant")), "has a key function"),
        (Pipeline(Chaos.result(1.0, "x")), "returns a value instead of the request's response"),
    ],
)
def test_a_policy_the_transport_cannot_run_is_refused(policies: Pipeline, words: str) -> None:
    """A kind, an order or an option the transport cannot honour: refused, naming the policy."""
    with pytest.raises(ConfigurationError) as caught:
        ResilientTransport(policies=policies)
    assert caught.value.option == "policies"
    assert words in caught.value.problem


@pytest.mark.parametrize(
    ("option", "value", "policy"),
    [
        ("attempts", 3, Retry()),
        ("backoff", Backoff.none(), Retry()),
        ("breakers", False, CircuitBreaker()),
        ("deadline", None, Timeout(5.0)),
        ("hedging", Hedging(), Hedging()),
    ],
)
def test_an_option_given_twice_is_refused(option: str, value: Any, policy: Any) -> None:
    """An option given as an argument and set by the pipeline: refused, not guessed."""
    with pytest.raises(ConfigurationError) as caught:
        AsyncResilientTransport(policies=Pipeline(policy), **{option: value})
    assert caught.value.option == option
    assert "give one or the other" in caught.value.problem


def test_policies_must_be_a_pipeline() -> None:
    """A lone policy, or a configured pipeline nested in a pipeline, is refused with a hint."""
    with pytest.raises(ConfigurationError, match=r"must be a Pipeline or a failsafe\.config"):
        ResilientTransport(policies=Retry())  # type: ignore[arg-type]
    configured = from_dict({"pipelines": {"inner": {"retry": {}}}})["inner"]
    with pytest.raises(ConfigurationError, match="give it as policies= itself"):
        ResilientTransport(policies=Pipeline(configured))
    with pytest.raises(ConfigurationError, match="is not a policy a transport can run"):
        ResilientTransport(policies=Pipeline(_Custom()))


class _Custom(Policy):
    """A policy of the user's own, which runs the call as it is."""

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        return nxt

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        return nxt

    def describe(self) -> str:
        return "custom"


# -- reloads ----------------------------------------------------------------------------------
def write(path: Path, attempts: int, reset_timeout: float = 30.0) -> None:
    """The TOML file of one pipeline, ``orders``: a retry and a circuit breaker."""
    path.write_text(
        "[pipelines.orders]\n"
        f'retry = {{attempts = {attempts}, backoff = {{kind = "none"}}}}\n'
        f"circuit_breaker = {{threshold = 20, reset_timeout = {reset_timeout}}}\n"
    )


def seen(server: Server, name: str) -> int:
    """How many requests named ``name`` the server has had."""
    return len(httpx.get(f"{server.url}/seen/{name}", timeout=5.0).json()["seen"])


def test_a_reload_changes_the_attempts_a_real_server_sees(
    kind: str, clients: list[Client], tmp_path: Path, servers: tuple[Server, Server]
) -> None:
    """Edit the file, reload: the next request runs under the new attempts."""
    w1, _ = servers
    path = tmp_path / "failsafe.toml"
    write(path, attempts=2)
    config = load(path, environ={})
    client = make(clients, kind, endpoints=[w1.url], policies=config["orders"])
    name = uuid.uuid4().hex
    assert response(client.get(f"/flaky/{name}/100")).status_code == 503
    assert seen(w1, name) == 2
    write(path, attempts=3)
    assert config.reload() == ("orders",)
    assert response(client.get(f"/flaky/{name}/100")).extensions["failsafe.attempts"] == 3
    assert seen(w1, name) == 5


def test_an_open_endpoint_stays_skipped_across_a_reload(
    kind: str,
    clients: list[Client],
    tmp_path: Path,
    servers: tuple[Server, Server],
    closed_port: str,
) -> None:
    """A reload that changes the breakers' open period keeps an open circuit open."""
    w1, _ = servers
    path = tmp_path / "failsafe.toml"
    path.write_text(
        "[pipelines.orders]\n"
        'retry = {attempts = 2, backoff = {kind = "none"}}\n'
        "circuit_breaker = {threshold = 2, reset_timeout = 30}\n"
    )
    config = load(path, environ={})
    clock = FakeClock()
    client = make(
        clients, kind, endpoints=[closed_port, w1.url], policies=config["orders"], clock=clock
    )
    assert response(client.get("/ok")).extensions["failsafe.attempts"] == 3
    before = client.transport.breakers
    assert before is not None
    assert before.get(closed_port).state is CircuitState.OPEN
    clock.advance(10)
    path.write_text(path.read_text().replace("reset_timeout = 30", "reset_timeout = 60"))
    config.reload()
    after = client.transport.breakers
    assert after is not None
    assert after is not before
    assert after.get(closed_port).state is CircuitState.OPEN
    assert after.get(closed_port).retry_after == 50  # 60 s from when it opened
    answer = response(client.get("/ok"))
    assert (answer.extensions["failsafe.endpoint"], answer.extensions["failsafe.attempts"]) == (
        w1.url,
        1,
    )


def test_unchanged_breaker_numbers_keep_the_same_breakers(kind: str, clients: list[Client]) -> None:
    """A reload that changes only the retry keeps the per-endpoint breakers as they are."""
    data: dict[str, Any] = {
        "pipelines": {"orders": {"retry": {"attempts": 2}, "circuit_breaker": {"threshold": 4}}}
    }
    config = from_dict(data)
    client = make(clients, kind, Recorder(200).mock, policies=config["orders"])
    before = client.transport.breakers
    data["pipelines"]["orders"]["retry"]["attempts"] = 3
    assert config.reload() == ("orders",)
    assert client.transport.breakers is before
    assert "up to 3 attempts" in repr(client.transport)


def test_a_reload_the_transport_cannot_run_fails_and_changes_nothing(
    kind: str, tmp_path: Path, servers: tuple[Server, Server]
) -> None:
    """A refused reload raises, keeps the old version; once the transport is dropped it succeeds."""
    w1, _ = servers
    path = tmp_path / "failsafe.toml"
    write(path, attempts=2)
    config = load(path, environ={})
    client = Client(kind, endpoints=[w1.url], policies=config["orders"])
    path.write_text(
        "[pipelines.orders]\n"
        "fallback = {value = 1}\n"
        'retry = {attempts = 3, backoff = {kind = "none"}}\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.reload()
    error = caught.value
    assert (error.file, error.line, error.key) == (str(path), 1, "pipelines.orders")
    assert "the HTTP transport 'http' cannot run it: fallback 'orders.fallback'" in str(error)
    assert config["orders"].version == 1
    assert [type(p).__name__ for p in config["orders"].policies] == ["Retry", "CircuitBreaker"]
    name = uuid.uuid4().hex
    answer = response(client.get(f"/flaky/{name}/100"))
    assert (answer.status_code, answer.extensions["failsafe.attempts"]) == (503, 2)
    assert seen(w1, name) == 2
    client.close()
    del client, answer  # a response holds its transport (its body's stream)
    gc.collect()
    assert config.reload() == ("orders",)
    assert config["orders"].version == 2


@pytest.mark.parametrize(
    ("options", "new", "words"),
    [
        (
            {},
            "retry = {attempts = 3}\ntimeout = {seconds = 1}\n",
            "timeout 'orders.timeout' comes after",
        ),
        ({"attempts": 2}, "retry = {attempts = 3}\n", "attempts: the HTTP transport 'http' cannot"),
    ],
    ids=["out-of-order", "given-twice"],
)
def test_any_refusal_of_the_transport_fails_the_reload(
    tmp_path: Path, options: dict[str, Any], new: str, words: str
) -> None:
    """A reload is refused for what construction refuses: the order, an option given twice."""
    path = tmp_path / "failsafe.toml"
    path.write_text("[pipelines.orders]\ntimeout = {seconds = 1}\n")
    config = load(path, environ={})
    transport = ResilientTransport(Recorder(200).mock, policies=config["orders"], **options)
    path.write_text("[pipelines.orders]\n" + new)
    with pytest.raises(ConfigError, match=words):
        config.reload()
    assert config["orders"].version == 1
    assert transport._resilience.deadline == 1.0


def test_a_transport_that_failed_to_build_does_not_check_reloads() -> None:
    """A transport refused at construction leaves no check: reloads of its pipeline go on."""
    data: dict[str, Any] = {"pipelines": {"orders": {"retry": {"attempts": 2}}}}
    config = from_dict(data)
    with pytest.raises(ConfigurationError, match="attempts") as caught:
        ResilientTransport(policies=config["orders"], attempts=2)
    data["pipelines"]["orders"]["fallback"] = {"value": 1}
    assert config.reload() == ("orders",)
    assert caught.value.option == "attempts"  # the error (and its frames) still held


def test_a_version_that_got_past_the_check_is_logged_and_the_old_one_kept(
    kind: str, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    """A version swapped in without the transport's check: logged once; the transport goes on."""
    data: dict[str, Any] = {"pipelines": {"orders": {"retry": {"attempts": 2}}}}
    config = from_dict(data)
    client = make(clients, kind, Recorder(503).mock, policies=config["orders"], clock=FakeClock())
    # what a reload that was already checking as the transport registered could swap
    config["orders"]._swap(Pipeline(Fallback(value=1), Retry(attempts=3), name="orders"))
    with caplog.at_level(logging.ERROR, logger="failsafe.http"):
        first = response(client.get("/items"))
        second = response(client.get("/items"))
    assert first.extensions["failsafe.attempts"] == second.extensions["failsafe.attempts"] == 2
    [record] = [r for r in caplog.records if r.name == "failsafe.http"]
    assert "version 2 of the pipeline 'orders' cannot run in this transport" in record.message
    assert "fallback" in record.message


def test_a_request_in_flight_finishes_under_its_version_sync(tmp_path: Path) -> None:
    """Sync: a request sent before a reload keeps its attempts; the next one has the new."""
    path = tmp_path / "failsafe.toml"
    write(path, attempts=3)
    config = load(path, environ={})
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:  # the first attempt of the first request waits for the reload
            entered.set()
            release.wait(10)
        return httpx.Response(503)

    transport = ResilientTransport(httpx.MockTransport(busy), policies=config["orders"])
    answers: list[httpx.Response] = []
    with httpx.Client(transport=transport) as client:
        first = threading.Thread(target=lambda: answers.append(client.get("http://svc/first")))
        first.start()
        assert entered.wait(10)
        write(path, attempts=1)
        config.reload()
        second = client.get("http://svc/second")
        release.set()
        first.join(10)
    assert second.extensions["failsafe.attempts"] == 1
    assert answers[0].extensions["failsafe.attempts"] == 3
    assert calls == ["/first", "/second", "/first", "/first"]


def test_a_request_in_flight_finishes_under_its_version_async(tmp_path: Path) -> None:
    """Asyncio: a request sent before a reload keeps its attempts; the next one has the new."""
    path = tmp_path / "failsafe.toml"
    write(path, attempts=3)
    config = load(path, environ={})
    calls: list[str] = []

    async def main() -> tuple[httpx.Response, httpx.Response]:
        entered, release = asyncio.Event(), asyncio.Event()

        async def busy(request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            if len(calls) == 1:
                entered.set()
                await release.wait()
            return httpx.Response(503)

        transport = AsyncResilientTransport(httpx.MockTransport(busy), policies=config["orders"])
        async with httpx.AsyncClient(transport=transport) as client:
            first = asyncio.create_task(client.get("http://svc/first"))
            await entered.wait()
            write(path, attempts=1)
            config.reload()
            second = await client.get("http://svc/second")
            release.set()
            return await first, second

    first, second = asyncio.run(main())
    assert second.extensions["failsafe.attempts"] == 1
    assert first.extensions["failsafe.attempts"] == 3
    assert calls == ["/first", "/second", "/first", "/first"]
