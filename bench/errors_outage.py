"""``python -m bench.errors_outage``: the Error-handling service while PostgreSQL goes away.

Runs ``failsafe errors serve --dsn ...`` as a process, with PostgreSQL reached through a loopback
TCP proxy that is cut (connections dropped, new ones refused) and restored, and prints:

- how long the first request after the cut takes to get its 503, and the ones after it;
- how long after the restore ``/healthz`` answers 200 again;
- the same for a network partition (connections accepted, never answered).

These are wall-clock figures of one run on this machine, not asserted anywhere; the tests
(``tests/errors/test_postgres_outage.py``) check the behaviour.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import sql
from tests.tcp_proxy import Proxy, dsn_through

from bench.errors_bench import _free_port

DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _timed(client: httpx.Client, path: str) -> tuple[int, float]:
    start = time.perf_counter()
    status = client.get(path).status_code
    return status, time.perf_counter() - start


def _outage(client: httpx.Client, proxy: Proxy, *, blackhole: bool) -> dict[str, float]:
    assert client.get("/healthz").status_code == 200
    proxy.cut(blackhole=blackhole)
    status, first = _timed(client, "/v1/records")
    assert status == 503, status
    later = []
    for _ in range(50):
        status, took = _timed(client, "/v1/records")
        assert status == 503, status
        later.append(took)
    proxy.restore()
    restored = time.perf_counter()
    pause = threading.Event()
    while client.get("/healthz").status_code != 200:
        if time.perf_counter() - restored > 60:
            raise RuntimeError("the service did not recover within 60 s")
        pause.wait(0.05)
    return {
        "first": first,
        "later_median": statistics.median(later),
        "later_max": max(later),
        "healthy_after": time.perf_counter() - restored,
    }


def main() -> int:
    schema = f"failsafe_outage_{uuid.uuid4().hex}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    parts = urlsplit(DSN)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    port = _free_port()
    code = (
        "from failsafe.errors.auth import Tokens\n"
        "from failsafe.errors.service import serve\n"
        f"serve(db=None, dsn={dsn_through(DSN, proxy, schema)!r}, host='127.0.0.1', port={port},"
        " tokens=Tokens(report=None, review=None), callbacks={})\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "service.log"
        with log.open("wb") as out:
            service = subprocess.Popen(
                [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                for _ in range(500):
                    try:
                        client.get("/healthz")
                        break
                    except httpx.TransportError:
                        threading.Event().wait(0.02)
                print("Error-handling service on PostgreSQL, the database cut mid-run")
                print("| outage | first 503 | later 503s (median / max) | healthy after restore |")
                print("| --- | --- | --- | --- |")
                for name, blackhole in (("refused", False), ("partition", True)):
                    got = _outage(client, proxy, blackhole=blackhole)
                    print(
                        f"| {name} | {got['first'] * 1000:.0f} ms"
                        f" | {got['later_median'] * 1000:.1f} / {got['later_max'] * 1000:.1f} ms"
                        f" | {got['healthy_after']:.2f} s |"
                    )
        finally:
            service.kill()
            service.wait(10)
            proxy.close()
            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
