"""Small pieces the four apps share: reading a JSON body, a lifespan that closes things."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from examples.warehouse_flow.domain import Invalid

__all__ = ["closing", "healthz", "invalid", "read_json"]


async def read_json(request: Request) -> Any:
    """The request's JSON body.

    Raises:
        Invalid: ``body`` when it is not JSON.
    """
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise Invalid("body", "must be a JSON object") from None


def invalid(exc: Invalid) -> Response:
    """The 422 answer naming the field."""
    return JSONResponse(exc.body(), status_code=422)


def closing(*closers: Callable[[], object]) -> Callable[[Starlette], Any]:
    """A lifespan that calls ``closers`` when the app shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for close in closers:
                with contextlib.suppress(Exception):
                    close()

    return lifespan


def healthz(service: str) -> Callable[[Request], Any]:
    """A ``/healthz`` endpoint saying which service answers."""

    async def endpoint(request: Request) -> Response:
        return JSONResponse({"ok": True, "service": service})

    return endpoint
