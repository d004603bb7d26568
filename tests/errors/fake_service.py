"""A fake Error-handling service for the client tests: in memory, counting Idempotency-Keys.

Two faces of one behaviour:

- `FakeService`: an ``httpx.MockTransport`` handler (sync and async clients), with modes
  the tests switch: ``up``, ``down`` (connection refused), ``lost_answer`` (stores the
  report, then drops the connection), or a fixed ``status`` answer.
- `app`: the same service as an ASGI app for a real uvicorn process. ``GET /_state`` returns
  what it received; ``POST /_config`` sets ``{"delay": seconds}`` (answer that late, after
  storing the report) for the kill tests; ``in_flight`` counts answers being delayed.

A report is *stored* once per Idempotency-Key (like the real service): ``stored`` maps each
key to its body, ``requests`` lists every key received, redeliveries included. A batch
(``POST /v1/reports/batch``) stores each report under its ``id`` and lists each id in
``requests``; ``batches`` keeps the ids of each batch request.
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
        self.batches: list[list[str]] = []  # the ids of each batch request, in order
        self.refuse: set[str] = set()  # report ids answered 422, alone or in a batch
        self.received = threading.Event()
        self.expect = 1
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        key = request.headers.get("idempotency-key")
        batch = request.url.path == "/v1/reports/batch"
        with self._lock:
            if not batch:
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
        if batch:
            # all or none, like the real service: each report stored under its own id
            items = json.loads(request.content)["reports"]
            bad = [i for i, item in enumerate(items) if item["id"] in self.refuse]
            if bad:
                with self._lock:
                    self.batches.append([item["id"] for item in items])
                field = f"reports[{bad[0]}].report.kind"
                return httpx.Response(422, json={"error": f"{field}: bad", "field": field})
            with self._lock:
                self.batches.append([item["id"] for item in items])
                self.requests.extend(item["id"] for item in items)
            results = [
                {"record_id": item["id"], "created": self._store(item["id"], item["report"])}
                for item in items
            ]
            if self.mode == "lost_answer":
                raise httpx.RemoteProtocolError("server disconnected", request=request)
            return httpx.Response(200, json={"results": results})
        if key in self.refuse:
            return httpx.Response(422, json={"error": "kind: bad", "field": "kind"})
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


async def _delay() -> None:
    """Answer late (after storing), if the test asked for it, counting the answers held."""
    if _state["delay"]:
        _state["in_flight"] += 1
        try:
            await asyncio.sleep(_state["delay"])
        finally:
            _state["in_flight"] -= 1


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
    elif path == "/v1/reports/batch" and method == "POST":
        results = []
        for item in json.loads(body)["reports"]:
            _state["requests"].append(item["id"])
            created = item["id"] not in _state["stored"]
            _state["stored"].setdefault(item["id"], item["report"])
            results.append({"record_id": item["id"], "created": created})
        await _delay()
        await _reply(send, 200, {"results": results})
    elif path == "/v1/reports" and method == "POST":
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key", b"").decode() or None
        _state["requests"].append(key)
        created = key not in _state["stored"]
        _state["stored"].setdefault(key, json.loads(body))
        await _delay()
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
