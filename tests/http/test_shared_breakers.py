"""Per-endpoint breakers shared by several processes through pybreaker's Redis storage."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pybreaker
import pytest
import redis

from failsafe import CircuitState, ConsecutiveFailures, KeyedCircuitBreaker
from failsafe.http import HttpAttempt, ResilientTransport
from failsafe.testing import RecordingListener
from tests.http.conftest import Server

REDIS_URL = os.environ.get("FAILSAFE_TEST_REDIS", "redis://127.0.0.1:6379/0")

CHILD = """
import sys, httpx, pybreaker, redis
from failsafe import ConsecutiveFailures, KeyedCircuitBreaker
from failsafe.http import ResilientTransport
url, namespace, closed, up = sys.argv[1:5]
client = redis.Redis.from_url(url)
breakers = KeyedCircuitBreaker(
    trip=ConsecutiveFailures(threshold=3), reset_timeout=60,
    storage_factory=lambda key: pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"{namespace}:{key}"))
transport = ResilientTransport(endpoints=[closed, up], breakers=breakers, attempts=3)
with httpx.Client(transport=transport) as http:
    print(http.get("http://svc/ok").json()["server"], breakers.get(closed).state.value)
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh Redis key namespace, deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    name = f"failsafe-http-test-{uuid.uuid4().hex}"
    yield name
    for key in client.scan_iter(f"pybreaker:{name}:*"):
        client.delete(key)
    client.close()


@pytest.mark.real_time
def test_a_circuit_opened_by_another_process_is_skipped_here(
    namespace: str, servers: tuple[Server, Server], closed_port: str
) -> None:
    """Process A trips the refused endpoint's circuit in Redis; this process never calls it."""
    w1, _ = servers
    child = subprocess.run(
        [sys.executable, "-c", CHILD, REDIS_URL, namespace, closed_port, w1.url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert child.stdout.split() == ["w1", "open"]

    client = redis.Redis.from_url(REDIS_URL)
    breakers = KeyedCircuitBreaker(
        trip=ConsecutiveFailures(threshold=3),
        reset_timeout=60,
        storage_factory=lambda key: pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, client, namespace=f"{namespace}:{key}"
        ),
    )
    events = RecordingListener()
    transport = ResilientTransport(
        endpoints=[closed_port, w1.url], breakers=breakers, listeners=[events]
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("http://svc/ok").json()["server"] == "w1"
    assert [e.endpoint for e in events.of_type(HttpAttempt)] == [w1.url]
    assert breakers.get(closed_port).state is CircuitState.OPEN
    client.close()
