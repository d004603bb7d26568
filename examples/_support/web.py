"""Small web pieces the services of both examples share: ``/healthz``, reading a JSON body,
the 422 answer naming the field, and a lifespan that closes things."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["FieldError", "closing", "healthz", "invalid", "read_json"]


class FieldError(Protocol):
    """An example's ``Invalid``: input that breaks a rule, as the JSON body of a 422."""

    def body(self) -> dict[str, str]:
        """The JSON body of the 422 answer."""
        ...


async def read_json(request: Request, bad_body: Callable[[], Exception]) -> Any:
    """The request's JSON body.

    Raises:
        Exception: ``bad_body()`` (the example's ``Invalid`` naming ``body``, such as
            ``Invalid.not_json``) when the body is not JSON.
    """
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_body() from None


def invalid(exc: FieldError) -> Response:
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


def healthz(service: str) -> Callable[[Request], Awaitable[Response]]:
    """A ``/healthz`` endpoint saying which service answers."""

    async def endpoint(request: Request) -> Response:
        return JSONResponse({"ok": True, "service": service})

    return endpoint
