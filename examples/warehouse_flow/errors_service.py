"""The Error-handling service: failsafe's own service, embedded with the run's settings.

This is what ``failsafe errors serve --callback stock.decrement=URL`` runs (the JSON API,
the review pages at ``/review/``, the retry worker), built with
`failsafe.errors.service.create_app` so that two settings can be given that the command
does not take yet:

- the retry schedule of ``stock.decrement`` (`wiring.errors_desk`): the demo and the tests
  retry within a second, not after the library's default 30 s;
- the callback's HTTP client (`wiring.callback_client`): a failover transport over both
  Warehouse instances, so that a retry reaches instance 2 while instance 1 is down (the
  command's ``--callback`` takes one URL).
"""

from __future__ import annotations

from starlette.applications import Starlette

from examples.warehouse_flow.settings import Settings
from examples.warehouse_flow.wiring import (
    callback_client,
    errors_desk,
    errors_store,
    retry_handlers,
)
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
    handlers = retry_handlers()
    http = callback_client(settings)
    worker = RetryWorker(desk, handlers, poll_interval=settings.poll_interval, http=http)
    app = create_errors_app(desk, tokens=tokens, handlers=handlers, worker=worker)
    app.state.closers = [worker.close, http.close, store.close]
    return app
