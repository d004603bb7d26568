"""``python -m bench.errors_wrk [--seconds 5] [--postgres]``: report ingest under wrk.

An independent load generator (wrk, from Debian's ``wrk`` package) POSTs reports to the real
Error-handling service (``failsafe errors serve`` in a child process, SQLite file or
PostgreSQL) and, in the same run, to a **floor** app: a Starlette endpoint under the same
uvicorn settings that parses the JSON body and answers 201, with no store. Each request
carries a distinct report (its own dedupe key and ``Idempotency-Key``). Printed: requests per
second for each, at 16 and 64 connections, the service's share of the floor against the
target (issue #15: >= 0.5 on SQLite, >= 0.3 on PostgreSQL), and the service's CPU per report.

Without wrk on the PATH this prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from bench.errors_bench import _cpu_seconds, _free_port

PG_DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TARGETS = {"SQLite": 0.5, "PostgreSQL": 0.3}

_LUA = r"""
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tid
end
request = function()
  counter = counter + 1
  local key = string.format("wrk-%s-%d-%d", RUN, thread_id, counter)
  local body = string.format(
    '{"kind":"stock.decrement","action":"review","source":"warehouse",' ..
    '"payload":{"productId":"p-%d","quantity":2},"error_type":"OperationalError",' ..
    '"error_message":"database is locked","dedupe_key":"%s"}', counter, key)
  return wrk.format("POST", "/v1/reports",
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}, body)
end
"""

_FLOOR = """
import json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def report(request: Request) -> JSONResponse:
    data = json.loads(await request.body())
    return JSONResponse({"record": {"id": "x", "kind": data.get("kind")}, "created": True},
                        status_code=201)

app = Starlette(routes=[Route("/v1/reports", report, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            server_header=False, access_log=False)
"""


def _wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    pause = threading.Event()
    for _ in range(1000):
        try:
            httpx.post(f"{url}/v1/reports", content=b"{}", timeout=1.0)
            return
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError("the server exited") from None
            pause.wait(0.02)
    raise RuntimeError(f"{url} did not start")


def _wrk(url: str, connections: int, seconds: float, script: Path) -> tuple[float, int]:
    threads = min(4, connections)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", done.stdout)
    return rate, int(non2xx.group(1)) if non2xx else 0


def _service(store: str, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    if store == "SQLite":
        where = f"db={str(tmp / 'errors.db')!r}, dsn=None"
    else:
        schema = f"failsafe_wrk_{uuid.uuid4().hex[:10]}"
        where = f"db=None, dsn={PG_DSN + '?options=-csearch_path%3D' + schema!r}"
        import psycopg
        from psycopg import sql

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    code = (
        "import logging\n"
        "from failsafe.errors.auth import Tokens\n"
        "from failsafe.errors.service import serve\n"
        f"serve({where}, host='127.0.0.1', port={port},"
        " tokens=Tokens(report=None, review=None), callbacks={})\n"
    )
    log = (tmp / f"service-{port}.log").open("wb")
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)


def run(seconds: float, postgres: bool) -> list[str]:
    if shutil.which("wrk") is None:
        return ["wrk is not installed (Debian: apt-get install wrk): the wrk figures are skipped"]
    store = "PostgreSQL" if postgres else "SQLite"
    lines = [
        f"Report ingest under wrk ({seconds:g} s per run), {store} store vs a floor app",
        "| connections | floor req/s | service req/s | share of floor | target | service CPU"
        " per report |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "report.lua"
        script.write_text(f'RUN = "{uuid.uuid4().hex[:8]}"\n' + _LUA)
        floor_port, service_port = _free_port(), _free_port()
        floor_code = tmp / "floor.py"
        floor_code.write_text(_FLOOR)
        floor = subprocess.Popen([sys.executable, str(floor_code), str(floor_port)])
        service = _service(store, tmp, service_port)
        try:
            _wait_up(f"http://127.0.0.1:{floor_port}", floor)
            _wait_up(f"http://127.0.0.1:{service_port}", service)
            for connections in (16, 64):
                floor_rate, _ = _wrk(f"http://127.0.0.1:{floor_port}", connections, seconds, script)
                before = _cpu_seconds(service.pid)
                start = time.perf_counter()
                rate, refused = _wrk(
                    f"http://127.0.0.1:{service_port}", connections, seconds, script
                )
                elapsed = time.perf_counter() - start
                cpu_ms = (_cpu_seconds(service.pid) - before) / max(rate * elapsed, 1) * 1000
                share = rate / floor_rate
                verdict = "PASS" if share >= TARGETS[store] else "FAIL"
                note = f" ({refused} not 2xx)" if refused else ""
                lines.append(
                    f"| {connections} | {floor_rate:,.0f} | {rate:,.0f}{note} | {share:.2f}"
                    f" | >= {TARGETS[store]} {verdict} | {cpu_ms:.2f} ms |"
                )
        finally:
            for process in (floor, service):
                process.kill()
                process.wait(10)
    return lines


def run_both(quick: bool) -> list[str]:
    """For ``python -m bench``: SQLite, then PostgreSQL (quick: 3 s runs, else 10 s)."""
    seconds = 3.0 if quick else 10.0
    sqlite = run(seconds, postgres=False)
    if len(sqlite) == 1:  # no wrk: the one line says so
        return sqlite
    return [*sqlite, "", *run(seconds, postgres=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.errors_wrk", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args(argv)
    print("\n".join(run(args.seconds, args.postgres)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
