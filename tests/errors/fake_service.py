"""A fake Error-handling service for the client tests: in memory, counting Idempotency-Keys.

Two faces of one behaviour:

- `FakeService`: an ``httpx.MockTransport`` handler (sync and async clients), with modes
  the tests switch: ``up``, ``down`` (connection refused), ``lost_answer`` (stores the
  report, then drops the connection), or a fixed ``status`` answer.
- `app`: the same service as an ASGI app for a real uvicorn process. ``GET /_state`` returns
  what it received; ``POST /_config`` sets ``{"delay": seconds}`` (answer that late, after
  storing the report) for the kill tests; ``in_flight`` counts answers being delayed.

A report is *stored* once per Idempotency-Key (like the real service): ``stored`` maps each
key to its body, ``requests`` lists every key received, redeliveries included.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx


class FakeService:
    """An httpx handler that plays the Error-handling service's ``POST /v1/reports``."""

    def __init__(self, *, token: str | None = None) -> None:
        self.mode = "up"
        self.status = 201
        self.answer: dict[str, Any] = {}
        self.token = token
        self.requests: list[str] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self.headers: list[httpx.Headers] = []
        self.received = threading.Event()
        self.expect = 1
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        key = request.headers.get("idempotency-key")
        with self._lock:
            self.requests.append(key or "")
            self.headers.append(request.headers)
        if (
            self.token is not None
            and request.headers.get("authorization") != f"Bearer {self.token}"
        ):
            return httpx.Response(
                401, json={"error": "missing or wrong token", "field": "authorization"}
            )
        if self.mode == "status":
            return httpx.Response(self.status, json=self.answer)
        created = self._store(key, json.loads(request.content))
        if self.mode == "lost_answer":
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return httpx.Response(201 if created else 200, json={"record": {}, "created": created})

    def _store(self, key: str | None, body: dict[str, Any]) -> bool:
        with self._lock:
            fresh = key is None or key not in self.stored
            self.stored[key or f"anonymous-{len(self.stored)}"] = body
            if len(self.stored) >= self.expect:
                self.received.set()
            return fresh

    @property
    def seen(self) -> int:
        """Requests that reached the service."""
        return len(self.requests)

    def client(self) -> httpx.Client:
        """A sync client whose requests this fake answers."""
        return httpx.Client(transport=httpx.MockTransport(self))

    def async_client(self) -> httpx.AsyncClient:
        """An async client whose requests this fake answers."""
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


# -- the ASGI face, for uvicorn ---------------------------------------------------------------
_state: dict[str, Any] = {"delay": 0.0, "requests": [], "stored": {}, "in_flight": 0}


async def _reply(send: Any, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The fake service as a raw ASGI app."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path, method = scope["path"], scope["method"]
    if path == "/_state":
        state = {k: _state[k] for k in ("requests", "in_flight")}
        await _reply(send, 200, {**state, "stored": list(_state["stored"])})
    elif path == "/_config" and method == "POST":
        _state.update(json.loads(body))
        await _reply(send, 200, {"ok": True})
    elif path == "/v1/reports" and method == "POST":
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key", b"").decode() or None
        _state["requests"].append(key)
        created = key not in _state["stored"]
        _state["stored"].setdefault(key, json.loads(body))
        if _state["delay"]:
            _state["in_flight"] += 1
            try:
                await asyncio.sleep(_state["delay"])
            finally:
                _state["in_flight"] -= 1
        await _reply(send, 201 if created else 200, {"record": {}, "created": created})
    else:
        await _reply(send, 404, {"error": "not found"})


def main(fd: int) -> None:
    """Serve `app` with uvicorn on an inherited listening TCP socket.

    Not ``uvicorn --fd``: that wraps the socket as AF_UNIX, so asyncio leaves Nagle's
    algorithm on and every answer (head and body written separately) waits ~40 ms for a
    delayed ACK. A socket object of the right family gets TCP_NODELAY.
    """
    import socket

    import uvicorn

    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    import sys

    main(int(sys.argv[1]))
