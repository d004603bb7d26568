"""Two instances of the service on one PostgreSQL: reporters fail over, kill -9 loses nothing.

This is how a user outgrows one machine: several ``failsafe errors serve --dsn ...`` processes
share one database, and every ``ErrorSink`` is given all their URLs.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from failsafe.errors import ErrorSink, Query
from failsafe.errors.postgres import PostgresStore
from tests.errors.test_service_process import ServiceProcess

DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = [pytest.mark.postgres, pytest.mark.real_time]


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"failsafe_instances_{uuid.uuid4().hex}"
    with psycopg.connect(DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_killing_one_instance_under_load_loses_and_doubles_nothing(
    tmp_path: Path, schema: str
) -> None:
    """Four threads report through both instances; one is killed mid-run: each stored once.

    A report whose answer died with the instance is sent to the other, and its id makes a
    second delivery a no-op.
    """
    dsn = f"{DSN}?options=-csearch_path%3D{schema}"
    first = ServiceProcess(tmp_path / "a.db", dsn=dsn)
    second = ServiceProcess(tmp_path / "b.db", dsn=dsn)
    sink = ErrorSink(
        [first.url, second.url], source="warehouse", spool=tmp_path / "spool.db", timeout=5.0
    )
    per_thread, threads = 60, 4
    made: list[str] = []
    lock = threading.Lock()
    halfway = threading.Event()

    def report(worker: int) -> None:
        for n in range(per_thread):
            report_id = sink.report(
                "stock.decrement",
                "retry",
                payload={"worker": worker, "n": n},
                dedupe_key=f"w{worker}-{n}",
            )
            with lock:
                made.append(report_id)
                if len(made) == per_thread * threads // 2:
                    halfway.set()

    try:
        workers = [threading.Thread(target=report, args=(w,)) for w in range(threads)]
        for t in workers:
            t.start()
        halfway.wait(60)
        first.kill()  # kill -9, with requests in flight
        for t in workers:
            t.join(120)
        assert len(made) == per_thread * threads
        pause = threading.Event()
        for _ in range(100):  # what was spooled meanwhile goes to the living instance
            if sink.flush() == 0 and len(sink.spool) == 0:
                break
            pause.wait(0.1)
        assert len(sink.spool) == 0
        assert sink.url == second.url  # the sink now sends to the instance that answers
        with httpx.Client(base_url=second.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        sink.close()
        first.kill()
        second.kill()
    store = PostgresStore(DSN, schema=schema)
    try:
        page = store.find(Query(limit=500))
        assert page.total == per_thread * threads
        assert all(r.count == 1 for r in page.records)  # none counted twice
        assert {(r.payload["worker"], r.payload["n"]) for r in page.records} == {
            (w, n) for w in range(threads) for n in range(per_thread)
        }
    finally:
        store.close()
