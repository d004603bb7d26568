"""CPU instructions per request, counted by valgrind's cachegrind: failsafe's own cost, exactly.

Timings of a few microseconds drown in a shared machine's noise (the same run moves by 20 µs
per request from one round to the next). Instructions do not: this counts them, with
``valgrind --tool=cachegrind``, for a client sending GETs over ``httpx.MockTransport`` (no
network, no server), once for a few requests and once for many more, so that start-up
cancels out; the difference divided by the extra requests is the cost of one request.

Run it with ``python -m bench.http_instructions`` (valgrind from Debian's ``valgrind``
package; about a minute). It prints, for httpx's Client and AsyncClient, plain and with
failsafe's transport (with its default 30 s deadline and with ``deadline=None``), the
instructions per request and what failsafe adds.

``python -m bench.http_instructions --one KIND CLIENT N`` is the measured program itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import httpx

__all__ = ["instructions_per_request", "main"]

CLIENTS = {
    "plain": {},
    "failsafe": {},
    "failsafe, deadline=None": {"deadline": None},
}
FEW, MANY = 200, 1200


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b'{"ok": true}')


def _transport(kind: str, client: str) -> Any:
    inner = httpx.MockTransport(_answer)
    if client == "plain":
        return inner
    from failsafe.http import AsyncResilientTransport, ResilientTransport

    cls = ResilientTransport if kind == "sync" else AsyncResilientTransport
    return cls(inner, **CLIENTS[client])


def _send(kind: str, client: str, n: int) -> None:
    transport = _transport(kind, client)
    if kind == "sync":
        with httpx.Client(transport=transport) as c:
            for _ in range(n):
                c.get("http://svc/x").raise_for_status()
        return

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as c:
            for _ in range(n):
                (await c.get("http://svc/x")).raise_for_status()

    asyncio.run(main())


def _count(kind: str, client: str, n: int) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.http_instructions",
            "--one",
            kind,
            client,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1).replace(",", ""))


def instructions_per_request(kind: str, client: str) -> int:
    """Instructions one GET costs through ``client`` (``sync`` or ``async``)."""
    return (_count(kind, client, MANY) - _count(kind, client, FEW)) // (MANY - FEW)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (or, with ``--one``, run the measured program)."""
    parser = argparse.ArgumentParser(prog="python -m bench.http_instructions")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "CLIENT", "N"))
    args = parser.parse_args(argv)
    if args.one:
        kind, client, n = args.one
        _send(kind, client, int(n))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt install valgrind)", file=sys.stderr)
        return 2
    print(f"instructions per GET over httpx.MockTransport (httpx {httpx.__version__})")
    over = "+ over plain"
    print(f"{'client':34s} {'sync':>10s} {over:>19s} {'async':>10s} {over:>19s}")
    plain = {kind: instructions_per_request(kind, "plain") for kind in ("sync", "async")}
    for client in CLIENTS:
        row = [f"{client:34s}"]
        for kind in ("sync", "async"):
            count = plain[kind] if client == "plain" else instructions_per_request(kind, client)
            extra = count - plain[kind]
            row.append(f"{count:>10,} {extra:>+9,} ({extra / plain[kind]:+.1%})")
        print(" ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
