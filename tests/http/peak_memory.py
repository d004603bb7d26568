"""One retried GET in a process of its own, reporting how much its peak memory grew.

Run by tests/http/test_bounds.py, since a process's peak RSS (``ru_maxrss``) only grows::

    python -m tests.http.peak_memory URL sync|async buffered|streamed

It sends a warm-up GET to ``URL/warm`` (so that lazy imports and the connection pool are in
the baseline), reads the peak RSS, then GETs ``URL/big`` through a resilient transport (two
attempts, no backoff) and prints one JSON line: the status, the body, the attempts and the
growth of the peak RSS in bytes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys

import httpx

from failsafe import Backoff
from failsafe.http import AsyncResilientTransport, ResilientTransport


def peak() -> int:
    """The process's peak resident set size, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    url, kind, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    options = {"attempts": 2, "backoff": Backoff.none(), "buffer": mode == "buffered"}
    if kind == "sync":
        with httpx.Client(transport=ResilientTransport(**options)) as client:
            client.get(f"{url}/warm")
            before = peak()
            response = client.get(f"{url}/big")
    else:

        async def run() -> tuple[int, httpx.Response]:
            transport = AsyncResilientTransport(**options)
            async with httpx.AsyncClient(transport=transport) as client:
                await client.get(f"{url}/warm")
                before = peak()
                return before, await client.get(f"{url}/big")

        before, response = asyncio.run(run())
    print(
        json.dumps(
            {
                "status": response.status_code,
                "body": response.text,
                "attempts": response.extensions["failsafe.attempts"],
                "grew": peak() - before,
            }
        )
    )


if __name__ == "__main__":
    main()
