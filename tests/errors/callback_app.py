"""A retry callback target for the worker's tests, served by a real uvicorn on loopback.

``POST /retry/{name}?fail=N`` answers 503 to its first N calls (per name), then 200; every
call's ``Idempotency-Key`` header and JSON body are kept, and ``GET /calls/{name}`` returns
them in order. ``GET /ok`` answers when the server is up.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

_calls: dict[str, list[dict[str, Any]]] = {}


async def retry(request: Request) -> PlainTextResponse | JSONResponse:
    """Keep the call; fail it with 503 while it is one of the first ``fail`` calls."""
    name = request.path_params["name"]
    calls = _calls.setdefault(name, [])
    calls.append({"key": request.headers.get("idempotency-key"), "body": await request.json()})
    if len(calls) <= int(request.query_params.get("fail", "0")):
        return PlainTextResponse("stock database unavailable", status_code=503)
    return JSONResponse({"applied": True})


async def calls(request: Request) -> JSONResponse:
    """The calls received on one name, oldest first."""
    return JSONResponse(_calls.get(request.path_params["name"], []))


async def ok(request: Request) -> PlainTextResponse:
    """Readiness probe."""
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/retry/{name}", retry, methods=["POST"]),
        Route("/calls/{name}", calls),
        Route("/ok", ok),
    ]
)
