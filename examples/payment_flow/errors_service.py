"""The Error-handling service: failsafe's own service, embedded with the run's settings.

This is what ``failsafe errors serve --callback order.status=URL --callback
order.not_found=URL`` runs (the JSON API, the review pages at ``/review/``, the retry
worker), built with `failsafe.errors.service.create_app` (in
`examples._support.errors_service.errors_app`, shared with warehouse_flow) because one
setting is needed that the command does not take: the retry schedule of ``order.status``
(`wiring.errors_desk`), so that the demo and the tests retry within a second instead of
after the library's default 30 s."""

from __future__ import annotations

from functools import partial

import httpx
from starlette.applications import Starlette

from examples._support.errors_service import errors_app
from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import errors_desk, retry_handlers

__all__ = ["create_app"]


def create_app(settings: Settings) -> Starlette:
    """The Error-handling service's app: API, review pages, and its retry worker."""
    return errors_app(
        settings,
        desk=partial(errors_desk, settings),
        handlers=retry_handlers(settings),
        # one attempt per round: the schedule is the retry
        http=partial(httpx.Client, timeout=10.0),
    )
