"""PostgreSQL going away and coming back, under the store and under the running service.

The server is reached through a loopback TCP proxy (`Proxy`) that is cut (connections dropped,
new ones refused, or accepted and never answered) and restored on the same port. The store
must fail at once with `StoreUnavailable` instead of waiting out its pool timeout, the service
must answer 503 with ``Retry-After`` (the client's spool keeps the report), and both must work
again within the probe interval of the server's return.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from failsafe.errors import ErrorSink, Query, Report, StoreUnavailable
from failsafe.errors.postgres import PostgresStore
from failsafe.exceptions import ConfigurationError
from failsafe.testing import FakeClock
from tests.errors.test_service_process import ServiceProcess
from tests.tcp_proxy import Proxy, dsn_through

DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = [pytest.mark.postgres, pytest.mark.real_time]


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"failsafe_outage_{uuid.uuid4().hex}"
    with psycopg.connect(DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    parts = urlsplit(DSN)
    p = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    p.start()
    yield p
    p.close()


def through(proxy: Proxy, schema: str) -> str:
    """The test DSN, through the proxy, with ``schema`` first on the search path."""
    return dsn_through(DSN, proxy, schema)


def report(n: int = 0) -> Report:
    return Report(kind="stock.decrement", action="retry", source="warehouse", payload={"n": n})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(proxy: Proxy, schema: str, clock: FakeClock) -> Iterator[PostgresStore]:
    # a long pool timeout: a test that passes cannot have waited it out
    store = PostgresStore(
        through(proxy, schema),
        schema=schema,
        timeout=120,
        connect_timeout=2,
        probe_interval=5,
        clock=clock,
    )
    yield store
    store.close()


def test_a_refused_server_fails_at_once_and_the_store_recovers_after_one_probe(
    store: PostgresStore, proxy: Proxy, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Cut: StoreUnavailable, then no connection tried until the probe is due; back: it works."""
    record, _ = store.add(report(), now=1.0, next_attempt_at=None, actor="w")
    proxy.cut()
    with (
        caplog.at_level(logging.WARNING, "failsafe.errors.postgres"),
        pytest.raises(StoreUnavailable, match="unreachable") as first,
    ):
        store.get(record.id)
    assert first.value.retry_after == 5
    assert "trying again every 5 s" in caplog.text

    proxy.restore()
    accepted = proxy.accepted
    # the server is back, but no probe is due: every call fails at once, touching nothing
    for _ in range(20):
        with pytest.raises(StoreUnavailable, match="next try in") as refused:
            store.counts()
        assert 0 < refused.value.retry_after <= 5
    assert proxy.accepted == accepted

    clock.advance(5)
    with caplog.at_level(logging.WARNING, "failsafe.errors.postgres"):
        assert store.get(record.id).id == record.id
    assert "reachable again" in caplog.text
    again, created = store.add(report(1), now=2.0, next_attempt_at=None, actor="w")
    assert created
    assert store.get(again.id).payload == {"n": 1}


def test_a_failed_probe_keeps_the_store_down_until_the_next_one(
    store: PostgresStore, proxy: Proxy, clock: FakeClock
) -> None:
    """A due probe that finds the server still gone refuses, and pushes the next one out."""
    proxy.cut()
    with pytest.raises(StoreUnavailable):
        store.counts()
    clock.advance(5)
    with pytest.raises(StoreUnavailable, match="unreachable: ") as probed:
        store.counts()  # this call probed, and was refused
    assert "next try" not in str(probed.value)
    with pytest.raises(StoreUnavailable, match=r"next try in 5\.0 s"):
        store.counts()
    proxy.restore()
    clock.advance(5)
    assert sum(store.counts().values()) == 0


def test_a_connection_cut_inside_a_transaction_writes_nothing(
    store: PostgresStore, proxy: Proxy, schema: str
) -> None:
    """The connection breaks between two statements: StoreUnavailable, and no row is kept."""
    from failsafe.errors import _sql as store_sql

    record, _ = store.add(report(), now=1.0, next_attempt_at=None, actor="w")

    def cut_midway() -> None:
        with store._transaction() as run:
            run(store_sql.INSERT_ATTEMPT, (record.id, 8.0, 0, "half done"))
            proxy.cut()
            run(store_sql.INSERT_ATTEMPT, (record.id, 9.0, 0, "never"))

    with pytest.raises(StoreUnavailable, match="the connection broke"):
        cut_midway()
    proxy.restore()
    direct = PostgresStore(DSN, schema=schema)
    try:
        assert direct.get(record.id).attempts == ()
    finally:
        direct.close()


def test_a_server_that_accepts_but_never_answers_is_found_out(
    store: PostgresStore, proxy: Proxy, clock: FakeClock
) -> None:
    """A network partition (connections accepted, never answered): refused, then at once."""
    store.counts()
    proxy.cut(blackhole=True)
    with pytest.raises(StoreUnavailable):
        store.counts()  # the pooled connection hangs until the probe's connect_timeout
    accepted = proxy.accepted
    with pytest.raises(StoreUnavailable, match="next try in"):
        store.counts()
    assert proxy.accepted == accepted  # no connection tried while down
    proxy.restore()
    clock.advance(5)
    assert sum(store.counts().values()) == 0


def test_busy_is_not_down(schema: str) -> None:
    """Every connection busy but the server up: the call waits for one, it is not refused."""
    small = PostgresStore(DSN, schema=schema, min_size=1, max_size=1, timeout=60)
    try:
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with small._transaction() as run:
                run("SELECT 1", ())
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(10)
        # freed after the first wait (1 s) has run out and the probe found the server up
        timer = threading.Timer(1.5, release.set)
        timer.start()
        try:
            assert sum(small.counts().values()) == 0
        finally:
            release.set()
            holder.join(10)
            timer.cancel()
    finally:
        small.close()


def test_a_closed_store_refuses_with_store_unavailable(schema: str) -> None:
    store = PostgresStore(DSN, schema=schema)
    store.close()
    with pytest.raises(StoreUnavailable, match="is closed"):
        store.counts()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", 0),
        ("connect_timeout", -1),
        ("probe_interval", float("inf")),
        ("probe_interval", True),
        ("max_size", 0),
        ("min_size", -1),
    ],
)
def test_bad_options_are_refused_naming_them(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none", **{option: value})


# -- the running service ------------------------------------------------------------------------


def test_the_service_answers_503_while_postgresql_is_down_and_recovers_in_seconds(
    tmp_path: Path, proxy: Proxy, schema: str
) -> None:
    """503 + Retry-After at once (no 30 s pool wait), the spool keeps the report, healthz back."""
    service = ServiceProcess(tmp_path / "errors.db", dsn=through(proxy, schema))
    sink = ErrorSink(service.url, source="warehouse", spool=tmp_path / "spool.db", timeout=5.0)
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            proxy.cut()
            for path in ("/v1/records", "/healthz", "/review/"):
                answer = client.get(path)
                assert answer.status_code == 503, (path, answer.text)
                assert 1 <= int(answer.headers["retry-after"]) <= 5
                # no token is needed for /healthz: it names no host, user or database
                for detail in (schema, "dbname", "127.0.0.1", "postgres"):
                    assert detail not in answer.text, (path, answer.text)
            refused = client.post(
                "/v1/reports", json={"kind": "stock.decrement", "action": "retry", "source": "w"}
            )
            assert refused.status_code == 503
            assert refused.json()["field"] == "store"

            sink.report("stock.decrement", "retry", payload={"n": 7})
            assert len(sink.spool) == 1  # kept for later, not lost

            proxy.restore()
            healthy = threading.Event()
            for _ in range(100):  # the probe interval is 2 s: healthy well within 10 s
                if client.get("/healthz").status_code == 200:
                    break
                healthy.wait(0.1)
            assert client.get("/healthz").status_code == 200
        # the sink's own deliverer may be sending it at this moment: then flush leaves it to
        # that delivery; either way it is delivered within a few rounds
        pause = threading.Event()
        for _ in range(100):
            if sink.flush() == 0 and len(sink.spool) == 0:
                break
            pause.wait(0.1)
        assert len(sink.spool) == 0
        direct = PostgresStore(DSN, schema=schema)
        try:
            records = direct.find(Query(kind="stock.decrement")).records
            assert [r.payload for r in records] == [{"n": 7}]
        finally:
            direct.close()
        log = service.output()
        assert "unreachable" in log
        assert "reachable again" in log
        assert "Traceback" not in log
    finally:
        sink.close()
        service.kill()
