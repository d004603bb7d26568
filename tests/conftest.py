"""Shared fixtures: the real-sleep guard and the sync/async driver."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

import failsafe
from tests.tcp_proxy import Proxy

_real_sleep = time.sleep
_STDLIB_POLLERS = frozenset({"subprocess"})
_real_async_sleep = asyncio.sleep


@pytest.fixture(autouse=True)
def _no_real_sleep(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail any test that sleeps for real, unless it is marked ``real_time``."""
    if request.node.get_closest_marker("real_time") is not None:
        yield
        return

    def guarded_sleep(seconds: float) -> None:
        # the standard library's own polling (subprocess.run(..., timeout=) waits for its
        # child in a loop of short sleeps) is not the test sleeping: let it through
        if sys._getframe(1).f_globals.get("__name__") in _STDLIB_POLLERS:
            _real_sleep(seconds)
            return
        raise AssertionError(f"test slept for real: time.sleep({seconds!r}); use FakeClock")

    async def guarded_async_sleep(seconds: float, result: Any = None) -> Any:
        if seconds > 0:
            raise AssertionError(f"test slept for real: asyncio.sleep({seconds!r}); use FakeClock")
        return await _real_async_sleep(0, result)

    monkeypatch.setattr(time, "sleep", guarded_sleep)
    monkeypatch.setattr(asyncio, "sleep", guarded_async_sleep)
    yield


class Driver:
    """Runs one test body through ``policy.call`` (sync) or ``policy.call_async`` (async)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind

    @property
    def is_async(self) -> bool:
        return self.kind == "async"

    def call(
        self, policy: failsafe.Policy, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Call a plain function ``fn`` through the driver's entry point.

        Under the async driver ``fn`` is wrapped in a coroutine function, so the policy's
        async driver runs it.
        """
        if self.kind == "sync":
            return policy.call(fn, *args, **kwargs)

        async def afn(*a: Any, **k: Any) -> Any:
            return fn(*a, **k)

        return asyncio.run(policy.call_async(afn, *args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Driver:
    """The same scenario through the plain and the async entry point."""
    return Driver(request.param)


# -- Redis outages (tests/test_circuit_breaker_redis.py, tests/test_rate_limiter_redis.py) -------
@pytest.fixture
def redis_proxy() -> Iterator[Proxy]:
    """A loopback proxy in front of the test Redis (cut it to make an outage), closed after."""
    from tests.redis_support import REDIS_URL

    parsed = urlparse(REDIS_URL)
    proxy = Proxy((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
def dead_url() -> str:
    """A Redis URL on a loopback port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def redis_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every backoff sleep redis-py's client-side retries take (it sleeps between retries)."""
    import redis.retry

    slept: list[float] = []
    monkeypatch.setattr(redis.retry, "sleep", slept.append)
    return slept
