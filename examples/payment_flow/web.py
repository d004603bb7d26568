"""Small pieces the apps share: reading a JSON body, the 422 answer, ``/healthz``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from examples.payment_flow.domain import Invalid

__all__ = ["healthz", "invalid", "read_json"]


async def read_json(request: Request) -> Any:
    """The request's JSON body.

    Raises:
        Invalid: ``body`` when it is not JSON.
    """
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise Invalid("body", "must be JSON") from None


def invalid(exc: Invalid) -> Response:
    """The 422 answer naming the field."""
    return JSONResponse(exc.body(), status_code=422)


def healthz(service: str) -> Callable[[Request], Awaitable[Response]]:
    """A ``/healthz`` endpoint saying which service answers."""

    async def endpoint(request: Request) -> Response:
        return JSONResponse({"ok": True, "service": service})

    return endpoint
