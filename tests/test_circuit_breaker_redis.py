"""One breaker shared by several processes through pybreaker's Redis storage (real Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pybreaker
import pytest
import redis

from failsafe import CircuitBreaker, CircuitOpenError, CircuitState, ConsecutiveFailures

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("FAILSAFE_TEST_REDIS", "redis://127.0.0.1:6379/0")


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
    for key in client.scan_iter(f"pybreaker:{name}:*"):
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


def test_manual_close_is_seen_by_every_process(namespace: str) -> None:
    """Closing the shared breaker in one process closes it for another."""
    a, b = breaker(namespace), breaker(namespace)
    a.open()
    assert b.state is CircuitState.OPEN
    b.close()
    assert a.state is CircuitState.CLOSED
    assert a.call(lambda: "flows") == "flows"


def _down() -> None:
    raise ConnectionError("warehouse down")
