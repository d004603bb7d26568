"""The Error-handling service as an ASGI app: the JSON API, the review pages, the retry worker.

[`create_app`][failsafe.errors.service.create_app] builds the Starlette app around a desk
(for tests and for embedding); [`serve`][failsafe.errors.service.serve] is the whole service
on a store file or a PostgreSQL database, run by uvicorn:

```python
from failsafe.errors.auth import Tokens
from failsafe.errors.service import serve

serve(db="errors.db", dsn=None, host="127.0.0.1", port=8700,
      tokens=Tokens.from_env(), callbacks={})
```

Without both tokens the service refuses to listen anywhere but loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from failsafe._extras import missing_extra

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Mount
except ImportError as exc:
    raise missing_extra("errors", "failsafe.errors.service", exc) from exc

from failsafe.errors._intake import MAX_WAITING
from failsafe.errors.alerts import ALERT_THRESHOLDS, Alerts
from failsafe.errors.api import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    HandlerRegistry,
    _api,
    _unavailable,
)
from failsafe.errors.auth import LoopbackOnly, Tokens
from failsafe.errors.desk import ErrorDesk, RetrySchedule
from failsafe.errors.review import review_routes
from failsafe.errors.review_dlq import DeadLetters
from failsafe.errors.store import ErrorStore, StoreUnavailable
from failsafe.errors.worker import RETENTION_DAYS
from failsafe.exceptions import ConfigurationError
from failsafe.tracing import TracingMiddleware

__all__ = ["MAX_WAITING", "BackgroundWorker", "create_app", "serve"]

logger = logging.getLogger("failsafe.errors.service")

_SHUTDOWN_WAIT = 30.0


class BackgroundWorker(Protocol):
    """What the app runs in its lifespan: [`RetryWorker`][failsafe.errors.worker.RetryWorker]."""

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set."""
        ...


class _WorkerTask:
    """The worker's task in the app's lifespan, and why it stopped if it did."""

    def __init__(self, worker: BackgroundWorker) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    def problem(self) -> str | None:
        """Why the worker is not running (``None`` while it runs, or is being stopped)."""
        task = self.task
        if self.stopping:
            return None
        if task is None:
            return "not started (the app's lifespan did not run)"
        if not task.done():
            return None
        if task.cancelled():
            return "cancelled"
        exc = task.exception()
        return f"stopped: {type(exc).__name__}: {exc}" if exc else "stopped"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        stop = asyncio.Event()
        self.stopping = False
        self.task = asyncio.create_task(self.worker.run_forever(stop), name="failsafe-retry-worker")
        self.task.add_done_callback(self._ended)
        try:
            yield
        finally:
            self.stopping = True
            stop.set()
            # the round in progress finishes first (a handler's HTTP call has its own timeout)
            done, _ = await asyncio.wait({self.task}, timeout=_SHUTDOWN_WAIT)
            if not done:
                logger.warning(
                    "the retry worker did not stop in %g s; cancelling it", _SHUTDOWN_WAIT
                )
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not self.stopping and not task.cancelled() and task.exception() is not None:
            logger.error("the retry worker stopped", exc_info=task.exception())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/review"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    return JSONResponse(
        {"error": message, "field": "path"}, status_code=exc.status_code, headers=exc.headers
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    # the database is down or overloaded: nothing was written; the client asks again later
    assert isinstance(exc, StoreUnavailable)
    if request.url.path.startswith("/review"):
        # the details (where the database is) stay in the log
        headers = {"Retry-After": exc.retry_after_header}
        return PlainTextResponse(exc.public, status_code=503, headers=headers)
    return _unavailable(exc)


async def _server_error(request: Request, exc: Exception) -> Response:
    # the store failed (a locked or unreachable database): the client should retry later
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"error": f"internal error: {type(exc).__name__}", "field": "server"}, status_code=500
    )


def create_app(
    desk: ErrorDesk,
    *,
    tokens: Tokens,
    handlers: HandlerRegistry,
    worker: BackgroundWorker | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    require_handlers: bool = False,
    allow_edits: bool = False,
    alerts: Alerts | None = None,
    dead_letters: DeadLetters | None = None,
) -> Starlette:
    """The Error-handling service's ASGI app.

    Args:
        desk: Every route acts through it.
        tokens: The bearer tokens of the report and review doors (``None``: open). With
            a door open, the app answers only requests whose ``Host`` is loopback and
            refuses writes from another origin (403; see
            [`LoopbackOnly`][failsafe.errors.auth.LoopbackOnly]).
        handlers: Where ``PUT /v1/handlers/{kind}`` registers HTTP callbacks (the worker's
            [`Handlers`][failsafe.errors.worker.Handlers]).
        worker: Run with ``run_forever(stop)`` for the app's lifetime (its lifespan), if
            given; ``/healthz`` answers 503 if it stops on its own.
        max_body_bytes: The largest request body read (larger: 413).
        max_payload_bytes: The largest report payload (larger: 422).
        require_handlers: Refuse (422, naming the kind) a ``retry`` report for a kind that
            ``handlers`` has no handler for: without one, its record fails every
            automatic attempt (the review pages mark such records "no handler").
        allow_edits: Let a reviewer correct a record's payload and retry it (the review
            page's form, ``POST /v1/records/{id}/edit``); off, the route answers 403 and
            the pages offer no form.
        alerts: The webhook alerts (run by ``worker``): the review pages say when their
            deliveries fail.
        dead_letters: A broker and queues whose dead letters the review pages show and
            act on (``/review/dlq``); the app does not close it.

    Returns:
        The app: the JSON API (``/v1``, ``/healthz``, ``/openapi.json``) and the review
        pages (``/review``). It does not close the desk's store. Once a tracing system is
        installed (``failsafe.opentelemetry.instrument()``), each request is a server span
        continuing its caller's trace
        ([`TracingMiddleware`][failsafe.tracing.TracingMiddleware]).

    Raises:
        ConfigurationError: If a size limit is not a positive integer.
    """
    return _build_app(
        desk,
        tokens=tokens,
        handlers=handlers,
        worker=worker,
        max_body_bytes=max_body_bytes,
        max_payload_bytes=max_payload_bytes,
        require_handlers=require_handlers,
        allow_edits=allow_edits,
        alerts=alerts,
        dead_letters=dead_letters,
    )


def _build_app(
    desk: ErrorDesk,
    *,
    tokens: Tokens,
    handlers: HandlerRegistry,
    worker: BackgroundWorker | None,
    max_body_bytes: int,
    max_payload_bytes: int,
    closing: Callable[[], None] | None = None,
    require_handlers: bool = False,
    allow_edits: bool = False,
    alerts: Alerts | None = None,
    dead_letters: DeadLetters | None = None,
) -> Starlette:
    for name, value in (
        ("max_body_bytes", max_body_bytes),
        ("max_payload_bytes", max_payload_bytes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(name, f"must be a positive integer, got {value!r}")
    running = _WorkerTask(worker) if worker is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if running is None:
                yield
            else:
                async with running.running():
                    yield
        finally:
            # here, not after uvicorn.run returns: on SIGTERM uvicorn re-raises the signal
            # once the app has shut down, and the process ends without unwinding
            if closing is not None:
                closing()

    api = _api(
        desk,
        tokens=tokens,
        handlers=handlers,
        max_body_bytes=max_body_bytes,
        max_payload_bytes=max_payload_bytes,
        worker_problem=running.problem if running is not None else None,
        require_handlers=require_handlers,
        allow_edits=allow_edits,
    )
    # an open door: only requests addressed to loopback, no cross-origin writes
    guard = [] if tokens.complete else [Middleware(LoopbackOnly)]
    return Starlette(
        routes=[
            *api.routes,
            Mount(
                "/review",
                routes=review_routes(
                    desk,
                    tokens=tokens,
                    handlers=handlers,
                    allow_edits=allow_edits,
                    alerts=alerts,
                    dead_letters=dead_letters,
                ),
            ),
        ],
        exception_handlers={
            HTTPException: _http_error,
            StoreUnavailable: _store_unavailable,
            Exception: _server_error,
        },
        # outermost, a server span per request (continuing the caller's trace) once a tracing
        # system is installed; reports go in at the door, inside the guard, before the
        # router's layers
        middleware=[Middleware(TracingMiddleware), *guard, Middleware(api.report_door)],
        lifespan=lifespan,
    )


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` for uvicorn (`ConfigurationError` if not)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            problem = (
                f"{port} is in use on {host} (another process listens there): stop it, or"
                " give another port"
            )
        else:
            problem = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise ConfigurationError("port", problem) from None
    sock.set_inheritable(True)
    return sock


def _open_store(db: str | None, dsn: str | None) -> ErrorStore:
    if db is None and dsn is None:
        raise ConfigurationError("db", "give either a SQLite file (db) or a PostgreSQL dsn")
    if db is not None and dsn is not None:
        raise ConfigurationError("db", "give a SQLite file (db) or a PostgreSQL dsn, not both")
    if dsn is not None:
        from failsafe.errors.postgres import PostgresStore  # the postgres extra

        return PostgresStore(dsn)
    from failsafe.errors.sqlite import SQLiteStore

    assert db is not None
    return SQLiteStore(db)


def serve(
    *,
    db: str | None,
    dsn: str | None,
    host: str,
    port: int,
    tokens: Tokens,
    callbacks: Mapping[str, str],
    callback_hosts: Iterable[str] | None = None,
    poll_interval: float = 1.0,
    schedules: Mapping[str, RetrySchedule] | None = None,
    retention_days: float | None = RETENTION_DAYS,
    require_handlers: bool = False,
    allow_edits: bool = False,
    alert_url: str | None = None,
    alert_thresholds: Sequence[int] = ALERT_THRESHOLDS,
    dlq_broker: str | None = None,
    dlq_queues: Sequence[str] = (),
) -> None:
    """Run the Error-handling service until it is stopped (SIGINT or SIGTERM).

    Builds the store (a SQLite file, or PostgreSQL), the desk, the retry handlers with
    ``callbacks`` and the retry worker, then serves the app with uvicorn. On shutdown the
    worker finishes its round and the store is closed.

    Args:
        db: The SQLite file (created if missing); exactly one of ``db`` and ``dsn``.
        dsn: A PostgreSQL connection string (needs the ``postgres`` extra).
        host: The address to listen on; one that is not loopback needs both tokens.
        port: The TCP port.
        tokens: The report and review tokens (`Tokens.from_env`).
        callbacks: HTTP callback URLs by kind, for automatic retries (these kinds cannot
            be changed over HTTP).
        callback_hosts: The hosts a callback registered over HTTP may point at (default:
            loopback, `DEFAULT_CALLBACK_HOSTS`).
        poll_interval: Seconds between the worker's rounds.
        schedules: A retry schedule per kind; the key ``"*"`` replaces the default one.
        retention_days: Resolved and discarded records unchanged for this long are
            deleted by the worker (``None``: kept forever); open records never are.
        require_handlers: Refuse ``retry`` reports for kinds without a handler (422).
        allow_edits: Let a reviewer correct a payload and retry (see `create_app`).
        alert_url: A webhook told of new failure groups, groups crossing
            ``alert_thresholds`` open records, and records escalated to review (see
            [`Alerts`][failsafe.errors.alerts.Alerts]).
        alert_thresholds: Open records of a group at which it is said to have grown.
        dlq_broker: A queue broker's URL (``sqlite:///queue.db``, ``amqp://...``) whose
            ``dlq_queues``' dead letters the review pages show and act on.
        dlq_queues: The work queues of ``dlq_broker`` to show.

    Raises:
        ConfigurationError: Before anything listens or opens: if ``host`` is not loopback
            and a token is missing (naming it), if both or neither of ``db`` and ``dsn``
            are given, or a callback's kind or URL is invalid; before the store opens: if
            ``port`` is in use on ``host`` or cannot be listened on; then if ``db`` is not
            a SQLite file or cannot be created (see `SQLiteStore`).
    """
    import uvicorn

    from failsafe.errors.record import InvalidReport
    from failsafe.errors.worker import Handlers, RetryWorker

    tokens.check_listen(host)
    handlers = Handlers() if callback_hosts is None else Handlers(callback_hosts=callback_hosts)
    for kind, url in callbacks.items():
        try:
            handlers.register_url(kind, url)
        except InvalidReport as exc:
            raise ConfigurationError(f"callbacks[{kind!r}]", str(exc)) from None
    # listen first: a port in use is said in one line, before the store is opened
    sock = _listen(host, port)
    try:
        store = _open_store(db, dsn)
    except BaseException:
        sock.close()
        raise
    workers: list[RetryWorker] = []
    closers: list[Callable[[], None]] = []
    closed = threading.Event()

    def close() -> None:
        if not closed.is_set():
            closed.set()
            for worker in workers:
                worker.close()
            for closing in closers:
                closing()
            store.close()
            sock.close()

    try:
        chosen = dict(schedules or {})
        default = chosen.pop("*", None)
        desk = ErrorDesk(store, schedules=chosen, default_schedule=default)
        alerts = None if alert_url is None else Alerts(desk, alert_url, thresholds=alert_thresholds)
        if dlq_broker is not None:
            letters = DeadLetters(dlq_broker, dlq_queues)
            closers.append(letters.close)
        elif dlq_queues:
            raise ConfigurationError("dlq_queues", "need a dlq_broker to read them from")
        else:
            letters = None
        workers.append(
            RetryWorker(
                desk,
                handlers,
                poll_interval=poll_interval,
                retention_days=retention_days,
                alerts=alerts,
            )
        )
        app = _build_app(
            desk,
            tokens=tokens,
            handlers=handlers,
            worker=workers[0],
            max_body_bytes=DEFAULT_MAX_BODY_BYTES,
            max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
            closing=close,
            require_handlers=require_handlers,
            allow_edits=allow_edits,
            alerts=alerts,
            dead_letters=letters,
        )
        shown = f"[{host}]" if ":" in host else host
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
        logger.info(
            "Error-handling service listening on http://%s:%d (store %r; tokens %r)",
            shown,
            port,
            store,
            tokens,
        )
        # no access log: one log line per report cost a quarter of the service's CPU
        config = uvicorn.Config(
            app, host=host, port=port, log_level="info", server_header=False, access_log=False
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        close()
