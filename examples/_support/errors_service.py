"""Failsafe's Error-handling service as both examples embed it, and their reports to it.

- `errors_app`: what ``failsafe errors serve`` runs (the JSON API, the review pages at
  ``/review/``, the retry worker), built with `failsafe.errors.service.create_app` so that an
  example can give what the command does not take yet: a retry schedule per kind (the
  example's desk) and the callbacks' HTTP client; plus ``/health``
  (`failsafe.health.health_route`), as every service of the examples serves;
- `errors_store`: its store, a SQLite file in the run folder or a PostgreSQL schema;
- `error_sink`: a service's `ErrorSink`, with a spool of its own in the run folder.

Each example's ``wiring`` builds the desk, the retry handlers and the callback client.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.applications import Starlette

from examples._support.settings import RunSettings
from failsafe.errors import ErrorDesk, ErrorSink, ErrorStore, Handlers, RetryWorker, SQLiteStore
from failsafe.errors.auth import Tokens
from failsafe.errors.service import create_app
from failsafe.health import health_route

__all__ = ["error_sink", "errors_app", "errors_store"]


def error_sink(settings: RunSettings, source: str) -> ErrorSink:
    """Service ``source``'s client of the Error-handling service.

    Its spool is a file of its own in the run folder: a report the service could not take
    at once is delivered later, by this process or the next one started on the same file,
    and never lost.
    """
    settings.path.mkdir(parents=True, exist_ok=True)
    return ErrorSink(
        settings.url("errors"),
        source=source,
        spool=settings.path / f"{source}.spool.db",
        poll_interval=settings.sink_poll,
    )


def errors_store(settings: RunSettings) -> ErrorStore:
    """The Error-handling service's store: a SQLite file in the run folder, or PostgreSQL."""
    if settings.dsn is not None:
        from failsafe.errors.postgres import PostgresStore

        return PostgresStore(settings.dsn, schema=f"{settings.schema}_errors")
    settings.path.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(str(settings.path / "errors.db"))


def errors_app(
    settings: RunSettings,
    *,
    desk: Callable[[ErrorStore], ErrorDesk],
    handlers: Handlers,
    http: Callable[[], httpx.Client],
) -> Starlette:
    """The Error-handling service's app: API, review pages, and its retry worker.

    Args:
        settings: The run's settings (the store's place, the worker's poll interval).
        desk: Builds the example's desk (its retry schedules) over the store.
        handlers: How the worker retries each kind (the example's callbacks).
        http: Builds the worker's HTTP client for the callbacks.

    Raises:
        failsafe.ConfigurationError: If ``settings.host`` is not loopback and the report
            and review tokens (``FAILSAFE_ERRORS_REPORT_TOKEN`` / ``_REVIEW_TOKEN``) are not
            both set (`Tokens.check_listen`).
    """
    tokens = Tokens.from_env()  # FAILSAFE_ERRORS_REPORT_TOKEN / _REVIEW_TOKEN, if set
    tokens.check_listen(settings.host)
    store = errors_store(settings)
    errors_desk = desk(store)
    client = http()
    worker = RetryWorker(errors_desk, handlers, poll_interval=settings.poll_interval, http=client)
    # the app is wrapped in failsafe.tracing.TracingMiddleware already (its server spans)
    app = create_app(errors_desk, tokens=tokens, handlers=handlers, worker=worker)
    app.routes.append(health_route("/health"))  # the callbacks' circuits, if any
    app.state.closers = [worker.close, client.close, store.close]
    return app
