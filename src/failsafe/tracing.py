"""Tracing without a tracing library: the ASGI middleware and the current trace's id.

failsafe's HTTP transports, queue consumers and error service take part in a trace once a
tracing system is installed (``failsafe.opentelemetry.instrument()``, the ``otel`` extra).
Until then everything here does nothing: `TracingMiddleware` passes requests through and
`current_trace_id` returns ``None``. This module imports no tracing library, so a service
can add the middleware whether or not OpenTelemetry is installed where it runs.

```python
from starlette.applications import Starlette
from failsafe.tracing import TracingMiddleware

app = TracingMiddleware(Starlette())
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from failsafe import _tracing

__all__ = ["TracingMiddleware", "current_trace_id"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

_CARRIED = (b"traceparent", b"tracestate")


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or ``None`` (no span, or no tracing)."""
    tracing = _tracing.installed()
    if tracing is None:
        return None
    ids = tracing.current_ids()
    return None if ids is None else ids[0]


class TracingMiddleware:
    """An ASGI middleware: one server span per HTTP request, continuing the caller's trace.

    The span is named after the request's method and carries the OpenTelemetry semantic
    convention attributes ``http.request.method``, ``url.path``, ``url.scheme``,
    ``server.address``, ``server.port`` and ``http.response.status_code``; an answer of 500
    or more sets ``error.type`` to its status code. The caller's trace is continued when the
    request has a W3C ``traceparent`` header. Without an installed tracing system, requests
    pass straight through.

    Args:
        app: The ASGI application to wrap.
    """

    def __init__(self, app: _ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Serve one ASGI connection, in a span when it is an HTTP request."""
        tracing = _tracing.installed()
        if tracing is None or scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() in _CARRIED
        }
        method = str(scope.get("method", "GET"))
        attributes: dict[str, _tracing.Value] = {
            "http.request.method": method,
            "url.path": str(scope.get("path", "")),
            "url.scheme": str(scope.get("scheme", "http")),
        }
        server = scope.get("server")
        if server:
            attributes["server.address"] = str(server[0])
            if server[1] is not None:
                attributes["server.port"] = int(server[1])
        with tracing.span(method, kind="server", attributes=attributes, carrier=carrier) as span:

            async def traced_send(message: _Message) -> None:
                if message.get("type") == "http.response.start":
                    status = int(message.get("status", 200))
                    span.set("http.response.status_code", status)
                    if status >= 500:
                        span.failed(str(status))
                await send(message)

            await self.app(scope, receive, traced_send)
