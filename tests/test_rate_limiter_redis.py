"""RateLimiter shared through Redis (the real server): one limit for many limiters, outages.

Runs against the real Redis at ``FAILSAFE_TEST_REDIS``; outages against a port where nothing
listens and through a loopback TCP redis_proxy (`Proxy`) cut mid-run and restored. Under
``CI=true`` a missing server fails the tests, never skips them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.retry

from failsafe import ConfigurationError, RateLimited, RateLimiter, UsageError
from failsafe.events import RateLimiterStorageRestored, RateLimiterStorageUnavailable
from failsafe.rate_limiter import redis_rate_limit
from failsafe.testing import FakeClock, RecordingListener
from tests.conftest import Driver
from tests.redis_support import REDIS_URL, redis_proxy_url
from tests.tcp_proxy import Proxy

pytestmark = pytest.mark.redis


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh key namespace, its keys deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - the server is part of the setup
        if os.environ.get("CI") == "true":
            raise
        pytest.fail(f"Redis is not running at {REDIS_URL} (make test starts it): {exc}")
    name = f"failsafe-test-{uuid.uuid4().hex}"
    yield name
    for key in client.scan_iter(f"*{name}*"):
        client.delete(key)
    client.close()


Shared = Callable[..., RateLimiter]


@pytest.fixture
def shared() -> Iterator[Shared]:
    """``redis_rate_limit`` from a URL, with every client its limiters build closed afterwards."""
    built: list[RateLimiter] = []

    def make(url: str, limiter: Callable[..., RateLimiter], **options: Any) -> RateLimiter:
        storage = redis_rate_limit(url, namespace=options.pop("namespace"), timeout=0.25)
        built.append(limiter(storage=storage, **options))
        return built[-1]

    yield make
    for limiter in built:
        assert limiter.storage is not None
        limiter.storage.close()


def run(driver: Driver, limiter: RateLimiter, fn: Callable[[], Any]) -> Any:
    """``driver.call``, closing the event loop's Redis client before the loop ends."""
    if not driver.is_async:
        return limiter.call(fn)

    async def afn() -> Any:
        return fn()

    async def main() -> Any:
        try:
            return await limiter.call_async(afn)
        finally:
            assert limiter.storage is not None
            await limiter.storage.aclose()

    return asyncio.run(main())


def _token_bucket(**options: Any) -> RateLimiter:
    return RateLimiter(**options)


def test_two_limiters_on_one_namespace_share_the_limit(
    namespace: str, shared: Shared, driver: Driver
) -> None:
    """Permits taken through one limiter are gone for the other; another namespace is apart."""
    a = shared(REDIS_URL, _token_bucket, namespace=namespace, rate=5, per=60)
    b = shared(REDIS_URL, _token_bucket, namespace=namespace, rate=5, per=60)
    apart = shared(REDIS_URL, _token_bucket, namespace=f"{namespace}-other", rate=5, per=60)
    results = [run(driver, limiter, lambda: 1) for limiter in (a, b, a, b, a)]
    assert results == [1] * 5
    for limiter in (a, b):
        with pytest.raises(RateLimited) as info:
            run(driver, limiter, lambda: "over the shared limit")
        assert 11 < info.value.retry_after <= 12  # one permit every 12 s
    assert run(driver, apart, lambda: "its own limit") == "its own limit"
    assert a.storage_available
    assert b.storage_available


def test_a_shared_sliding_window(namespace: str, shared: Shared, driver: Driver) -> None:
    """The sliding window in Redis admits ``limit`` per window across limiters."""
    a = shared(REDIS_URL, RateLimiter.sliding_window, namespace=namespace, limit=3, window=60)
    b = shared(REDIS_URL, RateLimiter.sliding_window, namespace=namespace, limit=3, window=60)
    assert [run(driver, x, lambda: 1) for x in (a, b, a)] == [1, 1, 1]
    with pytest.raises(RateLimited) as info:
        run(driver, b, lambda: "fourth")
    assert 59 < info.value.retry_after <= 60


CHILD = """
import sys
from failsafe import RateLimiter
from failsafe.rate_limiter import redis_rate_limit
limiter = RateLimiter(rate=10, per=60, storage=redis_rate_limit(sys.argv[1], namespace=sys.argv[2]))
print(sum(limiter.try_acquire() for _ in range(int(sys.argv[3]))))
"""


@pytest.mark.real_time  # a child interpreter (subprocess waits with a real sleep loop)
def test_processes_share_one_limit(namespace: str, shared: Shared) -> None:
    """Another process takes 7 of 10 permits; this one gets the remaining 3."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, REDIS_URL, namespace, "7"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert child.stdout.strip() == "7"
    here = shared(REDIS_URL, _token_bucket, namespace=namespace, rate=10, per=60)
    assert sum(here.try_acquire() for _ in range(10)) == 3


def test_keys_are_limited_apart_in_redis(namespace: str, shared: Shared) -> None:
    """A keyed limiter on Redis keeps one limit per key."""
    tenant = ["acme"]
    limiter = shared(
        REDIS_URL,
        _token_bucket,
        namespace=namespace,
        rate=1,
        per=60,
        burst=2,
        key=lambda: tenant[0],
    )
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    tenant[0] = "globex"
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire("initech") is True
    assert limiter.keys_held == 0  # nothing counted in process memory


@pytest.mark.parametrize("algorithm", [_token_bucket, RateLimiter.sliding_window])
def test_one_round_trip_per_permit(
    namespace: str, algorithm: Callable[..., RateLimiter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each permit is one command to Redis (EVALSHA), the script loaded once."""
    client = redis.Redis.from_url(REDIS_URL)
    commands: list[str] = []
    execute = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    size = {"rate": 1000} if algorithm is _token_bucket else {"limit": 1000}
    limiter = algorithm(storage=redis_rate_limit(client, namespace=namespace), **size)
    client.script_flush()  # the first permit finds no script: NOSCRIPT, load, run again
    for _ in range(50):
        assert limiter.try_acquire()
    assert commands.count("EVALSHA") == 51
    assert commands.count("SCRIPT LOAD") == 1
    assert len(commands) == 53  # FLUSH, LOAD, and one EVALSHA per permit (one failed first)
    client.close()


def test_waiting_for_a_permit_reserved_in_redis(namespace: str, shared: Shared) -> None:
    """With ``max_wait`` a caller reserves the next permit in Redis and sleeps on the clock."""

    class Frozen(FakeClock):
        def sleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)

    clock = Frozen()
    limiter = shared(
        REDIS_URL,
        _token_bucket,
        namespace=namespace,
        rate=1,
        per=100,
        burst=1,
        max_wait=250,
        clock=clock,
    )
    assert limiter.acquire() == 0.0
    second, third = limiter.acquire(), limiter.acquire()
    assert 99 < second <= 100
    assert 199 < third <= 200
    with pytest.raises(RateLimited) as info:
        limiter.acquire()  # due in ~300 s: beyond max_wait, nothing taken
    assert 299 < info.value.retry_after <= 300
    assert clock.sleeps == [second, third]


@pytest.mark.parametrize("algorithm", [_token_bucket, RateLimiter.sliding_window])
def test_a_misuse_gives_its_permit_back_in_redis(
    namespace: str, shared: Shared, algorithm: Callable[..., RateLimiter]
) -> None:
    """A coroutine function given to ``call`` spends no permit of the shared limit."""
    size = {"rate": 1, "per": 60, "burst": 1} if algorithm is _token_bucket else {"limit": 1}
    limiter = shared(REDIS_URL, algorithm, namespace=namespace, **size)

    async def fetch() -> str:
        return "never"

    with pytest.raises(UsageError):
        limiter.call(fetch)  # type: ignore[unused-coroutine]
    assert limiter.try_acquire() is True
    assert limiter.try_acquire() is False


def test_the_async_path_uses_an_async_client(namespace: str, shared: Shared) -> None:
    """``call_async`` talks to Redis with redis.asyncio, one client per event loop."""
    limiter = shared(REDIS_URL, _token_bucket, namespace=namespace, rate=3, per=60)

    async def main() -> int:
        admitted = 0
        for _ in range(2):
            try:
                await limiter.call_async(asyncio.sleep, 0)
                admitted += 1
            except RateLimited:
                pass
        clients: Any = limiter.storage._clients  # type: ignore[union-attr]
        assert isinstance(clients.for_loop(), redis.asyncio.Redis)
        await limiter.storage.aclose()  # type: ignore[union-attr]
        return admitted

    assert asyncio.run(main()) == 2
    assert limiter.try_acquire() is True  # the sync side sees the same limit
    assert limiter.try_acquire() is False


def test_given_clients_are_used_as_they_are(namespace: str) -> None:
    """A pair of sync and async clients serves each side; the limit is the same."""
    sync_client = redis.Redis.from_url(REDIS_URL)

    async def main() -> list[bool]:
        async_client = redis.asyncio.Redis.from_url(REDIS_URL)
        limiter = RateLimiter(
            rate=2,
            per=60,
            storage=redis_rate_limit((sync_client, async_client), namespace=namespace),
        )
        took = [await _try(limiter), limiter.try_acquire(), await _try(limiter)]
        await async_client.aclose()
        return took

    assert asyncio.run(main()) == [True, True, False]
    sync_client.close()


async def _try(limiter: RateLimiter) -> bool:
    try:
        await limiter.acquire_async()
    except RateLimited:
        return False
    return True


# -- outages -----------------------------------------------------------------------------------
def test_a_dead_redis_degrades_to_a_local_limit(
    dead_url: str, shared: Shared, redis_retries: list[float], driver: Driver
) -> None:
    """Nothing listening: calls are limited in process memory at once, and one event says why."""
    events = RecordingListener()
    limiter = shared(
        dead_url,
        _token_bucket,
        namespace="failsafe-test-dead",
        rate=5,
        per=60,
        listeners=[events],
        clock=FakeClock(),
    )
    results = []
    for _ in range(8):
        try:
            results.append(run(driver, limiter, lambda: "ok"))
        except RateLimited:
            results.append("limited")
    assert results == ["ok"] * 5 + ["limited"] * 3  # the same limit, counted locally
    assert events.kinds == ["RateLimiterStorageUnavailable"] + ["RateLimitRejected"] * 3
    lost = events.of_type(RateLimiterStorageUnavailable)[0]
    assert lost.error == "redis.exceptions.ConnectionError"
    assert limiter.storage_available is False
    assert redis_retries == []


def test_a_cut_degrades_and_recovers(
    redis_proxy: Proxy, namespace: str, shared: Shared, redis_retries: list[float], driver: Driver
) -> None:
    """Redis cut mid-run: a local limit meanwhile, Redis left alone, then shared again."""
    clock, events = FakeClock(), RecordingListener()
    here = shared(
        redis_proxy_url(redis_proxy),
        _token_bucket,
        namespace=namespace,
        rate=4,
        per=60,
        storage_retry=5,
        clock=clock,
        listeners=[events],
    )
    there = shared(REDIS_URL, _token_bucket, namespace=namespace, rate=4, per=60)
    assert run(driver, here, lambda: 1) == 1
    assert [there.try_acquire(), there.try_acquire()] == [True, True]  # 3 of 4 shared taken

    redis_proxy.cut()
    local = []
    for _ in range(6):
        try:
            local.append(run(driver, here, lambda: 1))
        except RateLimited:
            local.append(0)
    assert local == [1, 1, 1, 1, 0, 0]  # a full local bucket of 4: this process alone
    assert events.kinds[0] == "RateLimiterStorageUnavailable"
    accepted = redis_proxy.accepted

    redis_proxy.restore()
    with pytest.raises(RateLimited):
        run(driver, here, lambda: 1)  # storage_retry has not passed: Redis is left alone
    assert redis_proxy.accepted == accepted
    clock.advance(5)
    assert run(driver, here, lambda: "shared again") == "shared again"  # the 4th shared permit
    with pytest.raises(RateLimited):
        run(driver, here, lambda: "the shared limit is spent")
    assert there.try_acquire() is False
    kinds = [k for k in events.kinds if k != "RateLimitRejected"]
    assert kinds == ["RateLimiterStorageUnavailable", "RateLimiterStorageRestored"]
    assert events.of_type(RateLimiterStorageRestored)[0].outage == pytest.approx(5)
    assert here.storage_available is True
    assert redis_retries == []


@pytest.mark.real_time  # waits out the client's socket timeout once, 0.1 s
def test_a_silent_redis_costs_one_timeout_per_retry_interval(
    redis_proxy: Proxy, namespace: str, redis_retries: list[float]
) -> None:
    """A partition (Redis accepts, never answers) costs one short timeout, then calls flow."""
    clock, events = FakeClock(), RecordingListener()
    limiter = RateLimiter(
        rate=1000,
        storage=redis_rate_limit(redis_proxy_url(redis_proxy), namespace=namespace, timeout=0.1),
        storage_retry=5,
        clock=clock,
        listeners=[events],
    )
    assert limiter.try_acquire()
    redis_proxy.cut(blackhole=True)
    started = time.monotonic()
    assert all(limiter.try_acquire() for _ in range(20))
    assert time.monotonic() - started < 1.5  # one 0.1 s timeout, not one per call
    assert events.of_type(RateLimiterStorageUnavailable)[0].error == (
        "redis.exceptions.TimeoutError"
    )
    redis_proxy.restore()
    clock.advance(5)
    assert limiter.try_acquire()
    assert events.kinds == ["RateLimiterStorageUnavailable", "RateLimiterStorageRestored"]
    assert redis_retries == []


def test_a_dead_redis_on_the_async_path(dead_url: str, shared: Shared) -> None:
    """``call_async`` degrades the same way: limited locally, one event."""
    events = RecordingListener()
    limiter = shared(
        dead_url,
        _token_bucket,
        namespace="failsafe-test-dead",
        rate=2,
        per=60,
        listeners=[events],
        clock=FakeClock(),
    )

    async def main() -> list[bool]:
        took = [await _try(limiter) for _ in range(3)]
        await limiter.storage.aclose()  # type: ignore[union-attr]
        return took

    assert asyncio.run(main()) == [True, True, False]
    assert events.kinds == ["RateLimiterStorageUnavailable", "RateLimitRejected"]


# -- the factory -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: redis_rate_limit(REDIS_URL, namespace=""), "namespace"),
        (lambda: redis_rate_limit(REDIS_URL, namespace="x", timeout=0), "timeout"),
        (lambda: redis_rate_limit(5, namespace="x"), "client"),  # type: ignore[arg-type]
    ],
)
def test_the_factory_checks_its_options(build: Callable[[], object], option: str) -> None:
    """Bad ``redis_rate_limit`` options fail at once, naming the option."""
    with pytest.raises(ConfigurationError) as info:
        build()
    assert info.value.option == option


def test_building_talks_to_no_redis(dead_url: str) -> None:
    """Building a shared limiter while Redis is down neither raises nor waits."""
    limiter = RateLimiter(rate=1, storage=redis_rate_limit(dead_url, namespace="x"))
    assert "shared in Redis ('x')" in repr(limiter)


@pytest.mark.real_time  # a child interpreter
def test_without_redis_the_factory_names_the_extra() -> None:
    """With redis-py missing, ``redis_rate_limit`` says which extra to install."""
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from failsafe.rate_limiter import redis_rate_limit\n"
        "try:\n    redis_rate_limit('redis://127.0.0.1:6379/0', namespace='t')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'failsafe-kit[redis]'" in done.stdout
