"""A small ASGI app the HTTP tests run under uvicorn, one process per server.

Its name comes from the SERVER_NAME environment variable, so tests can tell which server
answered. Routes:

- ``/ok``: 200 with the server's name, the request's method, path, query and
  ``Idempotency-Key``.
- ``/status/{code}``: that status.
- ``/throttle/{seconds}``: 429 with ``Retry-After: seconds``.
- ``/busy/{seconds}``: 503 with ``Retry-After: seconds``.
- ``/slow/{ms}``: 200 after ``ms`` milliseconds.
- ``/reset``: announces 1,000 bytes, sends 10, then drops the connection.
- ``/flaky/{name}/{n}``: 503 for the first ``n`` requests named ``name``, then 200.
- ``/seen/{name}``: the (method, Idempotency-Key) of every request named ``name`` so far.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from typing import Any

NAME = os.environ.get("SERVER_NAME", "server")
_hits: dict[str, int] = defaultdict(int)
_seen: dict[str, list[tuple[str, str | None]]] = defaultdict(list)


async def send_json(
    send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] = []  # noqa: B006
) -> None:
    """Answer ``status`` with ``body`` as JSON (and ``headers``)."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def lifespan(receive: Any, send: Any) -> None:
    """Answer uvicorn's startup and shutdown (the app has nothing to set up)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = b""
    while True:  # read the whole request body
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    key = headers.get("idempotency-key")
    parts = scope["path"].strip("/").split("/")
    if parts[0] == "api":  # endpoints with a base path: http://host:port/api
        parts = parts[1:]
    route = parts[0]
    if route == "ok":
        await send_json(
            send,
            200,
            {
                "server": NAME,
                "method": scope["method"],
                "path": scope["path"],
                "query": scope["query_string"].decode(),
                "idempotency_key": key,
                "host": headers.get("host"),
                "body": body.decode(errors="replace"),
            },
        )
    elif route == "status":
        await send_json(send, int(parts[1]), {"server": NAME, "status": int(parts[1])})
    elif route == "throttle":
        await send_json(send, 429, {"server": NAME}, [(b"retry-after", parts[1].encode())])
    elif route == "busy":
        await send_json(send, 503, {"server": NAME}, [(b"retry-after", parts[1].encode())])
    elif route == "slow":
        await asyncio.sleep(int(parts[1]) / 1000)
        await send_json(send, 200, {"server": NAME, "slow": True})
    elif route == "reset":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        raise RuntimeError("dropping the connection mid-response (on purpose)")
    elif route == "flaky":
        name, failures = parts[1], int(parts[2])
        _seen[name].append((scope["method"], key))
        _hits[name] += 1
        if _hits[name] <= failures:
            await send_json(send, 503, {"server": NAME, "hit": _hits[name]})
        else:
            await send_json(send, 200, {"server": NAME, "hit": _hits[name]})
    elif route == "seen":
        await send_json(send, 200, {"server": NAME, "seen": _seen[parts[1]]})
    else:
        await send_json(send, 404, {"server": NAME, "error": "no such route"})
