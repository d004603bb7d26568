"""The Error-handling service: failsafe's own service, embedded with the run's settings.

This is what ``failsafe errors serve --callback stock.decrement=URL`` runs (the JSON API,
the review pages at ``/review/``, the retry worker), built with
`failsafe.errors.service.create_app` (in `examples._support.errors_service.errors_app`,
shared with payment_flow) so that two settings can be given that the command does not take
yet:

- the retry schedule of ``stock.decrement`` (`wiring.errors_desk`): the demo and the tests
  retry within a second, not after the library's default 30 s;
- the callback's HTTP client (`wiring.callback_client`): a failover transport over both
  Warehouse instances, so that a retry reaches instance 2 while instance 1 is down (the
  command's ``--callback`` takes one URL), with the ``callback`` pipeline of
  ``failsafe.toml``; the service watches that file (a daemon thread, for the process's life).
"""

from __future__ import annotations

from functools import partial

from starlette.applications import Starlette

from examples._support.errors_service import errors_app
from examples.warehouse_flow.settings import Settings
from examples.warehouse_flow.wiring import (
    callback_client,
    errors_desk,
    policies,
    retry_handlers,
)

__all__ = ["create_app"]


def create_app(settings: Settings) -> Starlette:
    """The Error-handling service's app: API, review pages, and its retry worker."""
    config = policies(settings)
    config.watch(settings.watch_interval)  # a daemon thread: it ends with the process
    return errors_app(
        settings,
        desk=partial(errors_desk, settings),
        handlers=retry_handlers(),
        http=partial(callback_client, settings, config),
    )
