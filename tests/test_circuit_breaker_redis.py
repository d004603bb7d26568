"""One breaker shared by several processes through Redis (the real server), and Redis outages.

The outage tests run against the real Redis at ``FAILSAFE_TEST_REDIS``, against a port where
nothing listens, and through a loopback TCP redis_proxy (`Proxy`) that is cut mid-run and restored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import pytest
import redis
import redis.retry
from redis.backoff import NoBackoff
from redis.retry import Retry

from failsafe import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    ConsecutiveFailures,
    KeyedCircuitBreaker,
)
from failsafe.circuit_breaker import redis_client, redis_storage
from failsafe.events import CircuitStorageRestored, CircuitStorageUnavailable
from failsafe.testing import FakeClock, RecordingListener
from tests.conftest import Driver
from tests.redis_support import REDIS_URL, redis_proxy_url
from tests.tcp_proxy import Proxy

pytestmark = pytest.mark.redis


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh key namespace, deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - the server is part of the setup
        if os.environ.get("CI") == "true":
            raise
        pytest.fail(f"Redis is not running at {REDIS_URL} (make test starts it): {exc}")
    name = f"failsafe-test-{uuid.uuid4().hex}"
    yield name
    for key in client.scan_iter(f"{name}:*"):  # pybreaker's keys: "{namespace}:pybreaker:..."
        client.delete(key)
    client.close()


def breaker(namespace: str) -> CircuitBreaker:
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, redis.Redis.from_url(REDIS_URL), namespace=namespace
    )
    return CircuitBreaker(
        name="warehouse", storage=storage, trip=ConsecutiveFailures(threshold=3), reset_timeout=60
    )


CHILD = """
import sys, pybreaker, redis
from failsafe import CircuitBreaker, ConsecutiveFailures
storage = pybreaker.CircuitRedisStorage(
    pybreaker.STATE_CLOSED, redis.Redis.from_url(sys.argv[1]), namespace=sys.argv[2])
b = CircuitBreaker(name="warehouse", storage=storage, trip=ConsecutiveFailures(threshold=3),
                   reset_timeout=60)
def down():
    raise ConnectionError("warehouse down")
for _ in range(int(sys.argv[3])):
    try:
        b.call(down)
    except ConnectionError:
        pass
print(b.state.value)
"""


def test_failures_in_other_processes_open_this_processs_breaker(namespace: str) -> None:
    """Two processes each record failures; together they reach the threshold and both see it."""
    here = breaker(namespace)
    with pytest.raises(ConnectionError):
        here.call(_down)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, REDIS_URL, namespace, "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "open"  # 1 failure here + 2 there = threshold 3
    assert here.state is CircuitState.OPEN
    ran = []
    with pytest.raises(CircuitOpenError) as info:
        here.call(lambda: ran.append(1))
    assert ran == []
    assert 55 <= info.value.retry_after <= 60


def test_manual_close_is_seen_by_every_process(namespace: str, storages: Storages) -> None:
    """Closing the shared breaker in one process closes it for another."""
    a, b = breaker(namespace), breaker(namespace)
    a.open()
    assert b.state is CircuitState.OPEN
    b.close()
    assert a.state is CircuitState.CLOSED
    assert a.call(lambda: "flows") == "flows"


def _down() -> None:
    raise ConnectionError("warehouse down")


# -- issue 11: a Redis outage must not become an outage of the guarded service ------------------


Storages = Callable[..., pybreaker.CircuitRedisStorage]


@pytest.fixture
def storages() -> Iterator[Storages]:
    """``redis_storage``, with every client it builds closed after the test."""
    built: list[pybreaker.CircuitRedisStorage] = []

    def make(url: str, **options: Any) -> pybreaker.CircuitRedisStorage:
        built.append(redis_storage(url, **options))
        return built[-1]

    yield make
    for storage in built:
        storage._redis.close()


def test_the_factory_storage_shares_the_circuit_with_pybreakers_own(
    namespace: str, storages: Storages
) -> None:
    """The factory's storage keeps pybreaker's keys: pybreaker's own storage sees its opening."""
    here = CircuitBreaker(
        name="warehouse",
        storage=storages(REDIS_URL, namespace=namespace),
        trip=ConsecutiveFailures(threshold=2),
        reset_timeout=60,
    )
    assert isinstance(here.storage, pybreaker.CircuitRedisStorage)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            here.call(_down)
    there = breaker(namespace)  # pybreaker's own storage and client
    assert there.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        there.call(lambda: "never")
    assert 58 <= info.value.retry_after <= 60
    there.close()
    assert here.state is CircuitState.CLOSED


def test_pybreakers_own_breaker_accepts_the_factory_storage(
    namespace: str, storages: Storages
) -> None:
    """The storage ``redis_storage`` builds is a working pybreaker storage."""
    storage = storages(REDIS_URL, namespace=namespace)
    breaker = pybreaker.CircuitBreaker(fail_max=1, state_storage=storage)
    assert breaker.call(lambda: "flows") == "flows"
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(_down)
    assert storage.state == "open"


def test_a_dead_redis_neither_breaks_nor_slows_the_calls(
    dead_url: str, redis_retries: list[float], driver: Driver, storages: Storages
) -> None:
    """With nothing listening, building works, calls return at once, and one event says why."""
    events = RecordingListener()
    started = time.monotonic()
    guarded = CircuitBreaker(
        name="warehouse",
        storage=storages(dead_url, namespace="failsafe-test-dead"),
        listeners=[events],
    )
    assert [driver.call(guarded, lambda: "flows") for _ in range(20)] == ["flows"] * 20
    assert time.monotonic() - started < 2  # redis-py's default retries took ~4.5 s per call
    assert redis_retries == []
    assert events.kinds == ["CircuitStorageUnavailable"]
    lost = events.of_type(CircuitStorageUnavailable)[0]
    assert lost.error == "redis.exceptions.ConnectionError"
    assert guarded.storage_available is False


def test_a_dead_redis_still_leaves_the_breaker_protecting(
    dead_url: str, storages: Storages
) -> None:
    """During the outage the breaker counts failures locally and opens as usual."""
    guarded = CircuitBreaker(
        storage=storages(dead_url, namespace="failsafe-test-dead"),
        trip=ConsecutiveFailures(threshold=2),
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):  # the builtin, raised by _down: not redis's
            guarded.call(_down)
    with pytest.raises(CircuitOpenError):
        guarded.call(lambda: "never")


def test_a_keyed_breaker_on_an_unreachable_redis_lets_calls_flow(
    dead_url: str, redis_retries: list[float], storages: Storages
) -> None:
    """``storage_factory`` with ``redis_storage`` builds each key's breaker even with Redis down."""
    events = RecordingListener()
    keyed = KeyedCircuitBreaker(
        name="warehouse",
        key=lambda: "w1",
        storage_factory=lambda key: storages(dead_url, namespace=f"warehouse:{key}"),
        listeners=[events],
    )
    assert keyed.call(lambda: "reserved") == "reserved"
    assert events.kinds == ["CircuitStorageUnavailable"]
    assert events.of_type(CircuitStorageUnavailable)[0].key == "w1"
    assert redis_retries == []


def test_the_http_transport_keeps_sending_when_its_breakers_redis_is_down(
    dead_url: str, redis_retries: list[float], storages: Storages
) -> None:
    """Per-endpoint breakers in Redis: with Redis down, requests are still sent and answered."""
    import httpx

    from failsafe.http import ResilientTransport, endpoint_breakers

    events = RecordingListener()
    breakers = endpoint_breakers(
        storage_factory=lambda key: storages(dead_url, namespace=f"svc:{key}"),
        listeners=[events],
    )
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True})),
        endpoints=["http://w1"],
        breakers=breakers,
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("http://svc/stock").json() == {"ok": True}
        assert http.get("http://svc/stock").status_code == 200
    assert events.kinds == ["CircuitStorageUnavailable"]
    assert redis_retries == []


def test_calls_flow_through_a_cut_and_the_state_resynchronises(
    redis_proxy: Proxy, namespace: str, redis_retries: list[float], storages: Storages
) -> None:
    """Redis cut mid-run: calls go on under a local state, which is written back on return."""
    clock, events = FakeClock(), RecordingListener()
    here = CircuitBreaker(
        name="warehouse",
        storage=storages(redis_proxy_url(redis_proxy), namespace=namespace),
        trip=ConsecutiveFailures(threshold=3),
        reset_timeout=60,
        storage_retry=5,
        clock=clock,
        listeners=[events],
    )
    there = breaker(namespace)  # another process, straight to Redis
    assert here.call(lambda: "flows") == "flows"
    with pytest.raises(ConnectionError):
        here.call(_down)
    assert there.failure_count == 1  # shared while Redis answers

    redis_proxy.cut()
    assert [here.call(lambda: "flows") for _ in range(5)] == ["flows"] * 5
    assert events.kinds == ["CircuitStorageUnavailable"]
    for _ in range(3):
        with pytest.raises(ConnectionError):
            here.call(_down)
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "never")  # opened on the local state
    assert there.state is CircuitState.CLOSED  # Redis did not learn it yet
    accepted = redis_proxy.accepted

    redis_proxy.restore()
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "never")  # storage_retry has not passed: Redis is left alone
    assert redis_proxy.accepted == accepted
    clock.advance(5)
    with pytest.raises(CircuitOpenError) as info:
        here.call(lambda: "never")
    assert info.value.retry_after == pytest.approx(55)
    assert events.kinds == [
        "CircuitStorageUnavailable",
        "CircuitOpened",
        "CircuitRejected",
        "CircuitRejected",
        "CircuitStorageRestored",
        "CircuitRejected",
    ]
    assert events.of_type(CircuitStorageRestored)[0].wrote_back is True
    assert there.state is CircuitState.OPEN  # the opening was written back for the others
    assert here.storage_available is True
    assert redis_retries == []


def test_after_a_cut_the_shared_state_is_adopted(
    redis_proxy: Proxy, namespace: str, storages: Storages
) -> None:
    """A breaker that stayed closed through the cut takes the state the others left in Redis."""
    clock, events = FakeClock(), RecordingListener()
    here = CircuitBreaker(
        name="warehouse",
        storage=storages(redis_proxy_url(redis_proxy), namespace=namespace),
        storage_retry=5,
        clock=clock,
        listeners=[events],
    )
    assert here.call(lambda: "flows") == "flows"
    redis_proxy.cut()
    assert here.call(lambda: "flows") == "flows"
    breaker(namespace).open()  # meanwhile another process opened it
    redis_proxy.restore()
    clock.advance(5)
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "never")
    assert events.kinds == [
        "CircuitStorageUnavailable",
        "CircuitStorageRestored",
        "CircuitRejected",
    ]
    assert events.of_type(CircuitStorageRestored)[0].wrote_back is False


@pytest.mark.real_time  # waits out the client's socket timeout once, 0.1 s
def test_a_silent_redis_costs_one_socket_timeout_per_retry_interval(
    redis_proxy: Proxy, namespace: str, redis_retries: list[float], storages: Storages
) -> None:
    """A partition (Redis accepts, never answers) costs one short timeout, then calls flow."""
    clock, events = FakeClock(), RecordingListener()
    here = CircuitBreaker(
        storage=storages(redis_proxy_url(redis_proxy), namespace=namespace, timeout=0.1),
        storage_retry=5,
        clock=clock,
        listeners=[events],
    )
    assert here.call(lambda: "flows") == "flows"
    redis_proxy.cut(blackhole=True)
    started = time.monotonic()
    assert [here.call(lambda: "flows") for _ in range(20)] == ["flows"] * 20
    assert time.monotonic() - started < 1.5  # one 0.1 s timeout, not one (or more) per call
    lost = events.of_type(CircuitStorageUnavailable)[0]
    assert lost.error == "redis.exceptions.TimeoutError"
    assert redis_retries == []
    redis_proxy.restore()
    clock.advance(5)
    assert here.call(lambda: "flows") == "flows"
    assert events.kinds == ["CircuitStorageUnavailable", "CircuitStorageRestored"]


def test_a_users_own_pybreaker_storage_gets_the_same_guard(
    redis_proxy: Proxy, namespace: str, redis_retries: list[float]
) -> None:
    """A user's pybreaker ``CircuitRedisStorage`` and client: a cut is absorbed the same way."""
    client = redis.Redis.from_url(
        redis_proxy_url(redis_proxy),
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        retry=Retry(NoBackoff(), 0),
    )
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
    events = RecordingListener()
    here = CircuitBreaker(storage=storage, clock=FakeClock(), listeners=[events])
    assert here.call(lambda: "flows") == "flows"
    redis_proxy.cut()
    assert here.call(lambda: "flows") == "flows"  # pybreaker alone would log and read "closed"
    assert events.kinds == ["CircuitStorageUnavailable"]
    assert events.of_type(CircuitStorageUnavailable)[0].error == "redis.exceptions.ConnectionError"
    client.close()


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: redis_storage(REDIS_URL, namespace=""), "namespace"),
        (lambda: redis_storage(REDIS_URL, namespace="x", timeout=0), "timeout"),
        (lambda: redis_storage(5, namespace="x"), "client"),  # type: ignore[arg-type]
        (lambda: redis_client(REDIS_URL, timeout=-1), "timeout"),
    ],
)
def test_the_factory_checks_its_options(build: Callable[[], object], option: str) -> None:
    """Bad ``redis_storage`` / ``redis_client`` options fail at once, naming the option."""
    with pytest.raises(ConfigurationError) as info:
        build()
    assert info.value.option == option


def test_the_factory_client_fails_fast() -> None:
    """``redis_client`` has short timeouts and no client-side retries."""
    client = redis_client(REDIS_URL, timeout=0.25)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.25)
    assert client.get_retry().get_retries() == 0  # type: ignore[union-attr]
    assert client.ping()
    client.close()
