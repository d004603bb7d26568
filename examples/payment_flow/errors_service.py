"""The Error-handling service: failsafe's own service, embedded with the run's settings.

This is what ``failsafe errors serve --callback order.status=URL --callback
order.not_found=URL`` runs (the JSON API, the review pages at ``/review/``, the retry
worker), built with `failsafe.errors.service.create_app` because one setting is needed that
the command does not take: the retry schedule of ``order.status`` (`wiring.errors_desk`),
so that the demo and the tests retry within a second instead of after the library's
default 30 s.
"""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import errors_desk, errors_store, retry_handlers
from failsafe.errors import RetryWorker
from failsafe.errors.auth import Tokens
from failsafe.errors.service import create_app as create_errors_app

__all__ = ["create_app"]


def create_app(settings: Settings) -> Starlette:
    """The Error-handling service's app: API, review pages, and its retry worker."""
    tokens = Tokens.from_env()  # FAILSAFE_ERRORS_REPORT_TOKEN / _REVIEW_TOKEN, if set
    tokens.check_listen(settings.host)
    store = errors_store(settings)
    desk = errors_desk(settings, store)
    handlers = retry_handlers(settings)
    http = httpx.Client(timeout=10.0)  # one attempt per round: the schedule is the retry
    worker = RetryWorker(desk, handlers, poll_interval=settings.poll_interval, http=http)
    app = create_errors_app(desk, tokens=tokens, handlers=handlers, worker=worker)
    app.state.closers = [worker.close, http.close, store.close]
    return app
