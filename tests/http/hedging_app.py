"""The hedging tests' server: every ``/item`` answer takes the server's own lag.

Run under uvicorn, one process per server; ``SERVER_NAME`` names it and ``LAG_MS`` sets how
long each ``/item`` request takes (a slow endpoint and fast ones from one app). Routes:

- ``/item`` (any method): 200 ``{"server": name, "method": ...}`` after ``LAG_MS``; a client
  that disconnects meanwhile is counted (a cancelled hedge's request).
- ``/fail-slow``: as ``/item``, but a server with a lag answers 503 (a loser to retry).
- ``/stats``: ``{"served": n, "disconnected": n}`` since the server started.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tests.http.app import lifespan, send_json

NAME = os.environ.get("SERVER_NAME", "server")
LAG = int(os.environ.get("LAG_MS", "0")) / 1000
_counts = {"served": 0, "disconnected": 0}


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    while (await receive()).get("more_body"):  # the request body
        pass
    route = scope["path"].strip("/")
    if route == "stats":
        await send_json(send, 200, _counts)
        return
    if route not in ("item", "fail-slow"):
        await send_json(send, 404, {"server": NAME})
        return
    if LAG:
        gone = asyncio.ensure_future(_disconnected(receive))
        lag = asyncio.ensure_future(asyncio.sleep(LAG))
        await asyncio.wait([gone, lag], return_when=asyncio.FIRST_COMPLETED)
        if gone.done():
            lag.cancel()
            _counts["disconnected"] += 1
            return
        gone.cancel()
    _counts["served"] += 1
    status = 503 if route == "fail-slow" and LAG else 200
    await send_json(send, status, {"server": NAME, "method": scope["method"]})
