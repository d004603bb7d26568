"""The HTTP benchmark's server app: every request gets ``200 {"ok": true}``.

A raw ASGI app, so that the server spends as little as it can per request and the client's
cost (httpx's and the transports') weighs as much as it can in the figures.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"ok": true}'
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):  # drain the request body, if any
        pass
    await send(_START)
    await send(_BODY)
