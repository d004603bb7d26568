"""Fault injection: the switches the demo and the tests flip on a running service.

Each service that serves ``/_faults`` (off by default, and refused with 403 unless the
caller is on loopback) offers:

- ``GET /_faults``: the switches and how many faults were injected so far;
- ``POST /_faults`` with any of ``{"fail_writes": N, "unavailable": N, "latency": S}``:
  fail the next ``N`` writes (the service calls `Faults.before_write` just before its
  write, which raises, as if the database had refused it), answer ``503`` to the next
  ``N`` requests (``-1``: until cleared), add ``S`` seconds to every request;
- ``DELETE /_faults``: every switch off.

The switches live in the process: a restarted service starts with every switch off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FaultMiddleware", "Faults", "InjectedWriteFailure", "fault_routes", "is_loopback"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class InjectedWriteFailure(RuntimeError):
    """A write failed because the ``fail_writes`` switch said so."""


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a client's address) is on this machine."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Faults:
    """The switches of one service process. Thread-safe.

    Args:
        write_failure: The message of the `InjectedWriteFailure` that `before_write` raises.
    """

    def __init__(self, write_failure: str = "write failed (injected fault)") -> None:
        self.write_failure = write_failure
        self._lock = threading.Lock()
        self.fail_writes = 0
        self.unavailable = 0
        self.latency = 0.0
        self.writes_failed = 0
        self.answered_503 = 0

    def snapshot(self) -> dict[str, Any]:
        """The switches and counters, as JSON."""
        with self._lock:
            return {
                "fail_writes": self.fail_writes,
                "unavailable": self.unavailable,
                "latency": self.latency,
                "writes_failed": self.writes_failed,
                "answered_503": self.answered_503,
            }

    def set(self, changes: dict[str, Any]) -> None:
        """Flip the switches named in ``changes``.

        Raises:
            ValueError: On an unknown switch or a bad value.
        """
        with self._lock:
            for name, value in changes.items():
                if name in ("fail_writes", "unavailable"):
                    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
                        raise ValueError(f"{name}: must be an integer >= -1")
                    setattr(self, name, value)
                elif name == "latency":
                    if not isinstance(value, int | float) or not 0 <= value <= 30:
                        raise ValueError("latency: must be 0 to 30 seconds")
                    self.latency = float(value)
                else:
                    raise ValueError(f"{name}: no such switch")

    def clear(self) -> None:
        """Every switch off (the counters stay)."""
        with self._lock:
            self.fail_writes = self.unavailable = 0
            self.latency = 0.0

    def before_write(self) -> None:
        """Called just before a write: fail it if the switch says so.

        Raises:
            InjectedWriteFailure: While ``fail_writes`` is not zero (it counts down).
        """
        with self._lock:
            if self.fail_writes == 0:
                return
            if self.fail_writes > 0:
                self.fail_writes -= 1
            self.writes_failed += 1
        raise InjectedWriteFailure(self.write_failure)

    def take_unavailable(self) -> bool:
        """Whether this request is to be answered 503 (counts the switch down)."""
        with self._lock:
            if self.unavailable == 0:
                return False
            if self.unavailable > 0:
                self.unavailable -= 1
            self.answered_503 += 1
            return True


class FaultMiddleware:
    """ASGI middleware: the ``unavailable`` and ``latency`` switches, for every route but
    ``/_faults`` and ``/healthz``."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call."""
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(("/_faults", "/healthz")):
            await self.app(scope, receive, send)
            return
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if self.faults.take_unavailable():
            body = json.dumps({"error": "unavailable (injected fault)"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def fault_routes(faults: Faults) -> list[Route]:
    """The ``/_faults`` routes (loopback callers only)."""

    async def endpoint(request: Request) -> Response:
        if not is_loopback(request.client.host if request.client else None):
            return JSONResponse({"error": "fault injection is loopback only"}, status_code=403)
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise ValueError("body: must be a JSON object")
                faults.set(changes)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
        elif request.method == "DELETE":
            faults.clear()
        return JSONResponse(faults.snapshot())

    return [Route("/_faults", endpoint, methods=["GET", "POST", "DELETE"])]
